"""Tests of experiments/pong_lattice.py: the periodic share against Fourier, a smoke run."""

from __future__ import annotations

import json

import numpy as np
import pytest
from experiment_helpers import load_script

script = load_script("pong_lattice.py")


def fourier_share(m: np.ndarray, p: int) -> float:
    """Share of the power spectrum (without DC) at frequencies that are multiples of 1/p."""
    n0, n1 = m.shape
    assert n0 % p == 0 and n1 % p == 0
    power = np.abs(np.fft.fft2(m)) ** 2
    power[0, 0] = 0.0
    lattice = np.zeros_like(power, bool)
    lattice[:: n0 // p, :: n1 // p] = True
    return float(power[lattice].sum() / power.sum())


@pytest.mark.parametrize("p", [2, 3, 4, 6, 7, 12])
def test_periodic_share_is_the_fourier_share_at_multiples_of_one_over_p(p):
    rng = np.random.default_rng(p)
    tile = rng.normal(size=(4, 4))
    m = np.tile(tile, (21, 21)) + rng.normal(size=(84, 84))
    np.testing.assert_allclose(script.periodic_share(m, p), fourier_share(m, p), rtol=1e-10)


def test_periodic_share_of_a_lattice_and_of_noise():
    rng = np.random.default_rng(0)
    lattice = np.tile(rng.normal(size=(4, 4)), (21, 21))
    assert script.periodic_share(lattice, 4) == pytest.approx(1.0)
    assert script.periodic_share(lattice, 8) == pytest.approx(1.0)
    assert script.periodic_share(lattice, 3) < 0.01  # 4-periodic has no 3-periodic part
    # Unstructured: about (p^2 - 1) / (N - 1) on average over draws.
    draws = [script.periodic_share(rng.normal(size=(84, 84)), 4) for _ in range(200)]
    assert np.mean(draws) == pytest.approx(15 / 7055, rel=0.15)
    assert script.periodic_share(np.ones((8, 8)), 4) == 0.0


def test_lattice_period_is_the_smallest_period_reaching_half_the_top():
    shares = {
        str(p): {"mean": v} for p, v in [(2, 0.1), (3, 0.01), (4, 0.47), (8, 0.57), (12, 0.49)]
    }
    assert script.lattice_period(shares) == 4
    shares["3"]["mean"] = 0.3
    assert script.lattice_period(shares) == 3


def test_first_stride_network_at_stride_4_is_the_q_network():
    import jax
    import jax.numpy as jnp

    from slp.models import QNetwork

    x = jax.random.uniform(jax.random.key(1), (1, 84, 84, 4))
    params = QNetwork().init(jax.random.key(0), x)
    np.testing.assert_allclose(
        script.FirstStrideQNetwork(stride=4).apply(params, x),
        QNetwork().apply(params, x),
        rtol=1e-6,
    )
    # Stride 3: 26x26, 12x12, 10x10 positions after the convolutions: a wider dense layer.
    net3 = script.FirstStrideQNetwork(stride=3)
    params3 = net3.init(jax.random.key(0), x)
    assert params3["params"]["Dense_0"]["kernel"].shape == (10 * 10 * 64, 512)
    assert net3.apply(params3, jnp.zeros((1, 84, 84, 4))).shape == (1, 6)


@pytest.mark.slow
def test_smoke_run(tmp_path):
    pytest.importorskip("ale_py")
    result = script.main(["--out", str(tmp_path), "--seeds", "1", "--steps", "5"])
    saved = json.loads((tmp_path / "pong_lattice.json").read_text())
    assert saved["networks"].keys() == {"stride4", "stride3", "stride5"}
    assert set(saved["networks"]["stride4"]["layers"]) == set(script.LAYERS)
    shares = saved["networks"]["stride4"]["layers"]
    assert sum(v["inactive_share"]["mean"] for v in shares.values()) == pytest.approx(1.0)
    assert result["config"]["seeds"] == 1
    assert "| 4 |" in (tmp_path / "pong_lattice.md").read_text()
