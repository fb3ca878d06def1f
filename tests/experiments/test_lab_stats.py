"""lab.stats: intervals, paired tests, Holm's adjustment and top groups, on synthetic scores
whose answer is known."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats as sps

from lab import stats


def test_holm_by_hand():
    # sorted: 0.005*4 = 0.02, 0.01*3 = 0.03, 0.03*2 = 0.06, 0.04*1 = 0.04 -> made monotone 0.06
    adjusted = stats.holm([0.01, 0.04, 0.03, 0.005])
    np.testing.assert_allclose(adjusted, [0.03, 0.06, 0.06, 0.02])
    np.testing.assert_allclose(stats.holm([0.5, 0.9]), [1.0, 1.0])
    assert stats.holm([0.2]).tolist() == [0.2]
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        stats.holm([0.1, 1.5])


def test_one_seed_is_the_paired_t_test_over_images():
    rng = np.random.default_rng(1)
    a, b = rng.exponential(size=300), rng.exponential(size=300) + 0.1
    got = stats.compare(a, b)
    ref = sps.ttest_rel(a, b)
    assert got.p_value == pytest.approx(ref.pvalue, rel=1e-9)
    assert got.difference.mean == pytest.approx(np.mean(a - b)) and got.difference.df == 299
    low, high = sps.t.interval(0.95, 299, loc=np.mean(a - b), scale=sps.sem(a - b))
    np.testing.assert_allclose(got.difference.ci95, (low, high))


def test_balanced_crossed_design_by_hand():
    """Mean squares of a 2 x 3 table computed by hand."""
    a = np.array([[1.0, 2.0, 6.0], [3.0, 4.0, 2.0]])
    # grand 3; rows 3, 3 -> MS_seed 0; cols 2, 3, 4 -> MS_image = 2*2/2 = 2;
    # residuals [[-1, -1, 2], [1, 1, -2]] -> MS_error = 12/2 = 6 -> floor: var = 6/6 = 1
    got = stats.interval(a)
    assert got.mean == 3.0 and got.se == pytest.approx(1.0)
    df = 6.0**2 / (0.0 + 2.0**2 / 2 + 6.0**2 / 2)
    assert got.df == pytest.approx(df)
    half = sps.t.ppf(0.975, df)
    np.testing.assert_allclose(got.ci95, (3.0 - half, 3.0 + half))


def test_images_undefined_in_any_seed_are_left_out_and_counted():
    a = np.array([[1.0, np.nan, 3.0, 5.0], [2.0, 2.0, np.nan, 1.0]])
    b = np.array([[0.0, 1.0, 1.0, 1.0], [1.0, 1.0, 1.0, np.nan]])
    assert stats.complete_images(a).tolist() == [True, False, False, True]
    assert stats.interval(a).n_images == 2
    assert stats.complete_images(a, b).tolist() == [True, False, False, False]
    with pytest.raises(ValueError, match="at least 2 images"):
        stats.compare(a, b)
    with pytest.raises(ValueError, match="different shapes"):
        stats.complete_images(a, b[:, :3])


def _pair(rng, shift, *, seed_sd, s=5, n=200):
    """Two methods on s seeds x n images (the same images for every seed): shared image and
    network effects, an image effect and a per-seed effect on their difference, and a true
    mean difference `shift`."""
    base = rng.normal(size=(s, n)) + rng.normal(size=(s, 1))
    on_diff = rng.normal(scale=0.5, size=(1, n)) + rng.normal(scale=seed_sd, size=(s, 1))
    return base + shift + on_diff + rng.normal(size=(s, n)), base


@pytest.mark.parametrize("seed_sd", [0.0, 0.3, 1.0])
def test_equal_methods_are_separated_at_the_stated_rate(seed_sd):
    rng = np.random.default_rng(0)
    p = np.array([stats.compare(*_pair(rng, 0.0, seed_sd=seed_sd)).p_value for _ in range(400)])
    # nominal 5%; 400 replications give a standard error of about 1.1 points
    assert 0.02 < np.mean(p < 0.05) < 0.085


def test_a_shift_is_found_when_seeds_agree_and_not_claimed_when_they_do_not():
    rng = np.random.default_rng(1)
    found = [stats.compare(*_pair(rng, 0.5, seed_sd=0.0)).p_value < 0.05 for _ in range(100)]
    assert np.mean(found) > 0.95
    # The same shift when the difference changes sign from one network to the next: the seeds,
    # not the images, limit what can be said.
    a = rng.normal(size=(6, 2000))
    b = a - 0.2 - np.array([1.0, -1.0, 0.8, -0.9, 1.1, -1.0])[:, None]
    b = b + rng.normal(scale=0.1, size=b.shape)
    assert stats.compare(a, b).p_value > 0.05 and stats.compare(a[:1], b[:1]).p_value < 1e-6


def test_top_group_keeps_what_cannot_be_separated():
    rng = np.random.default_rng(5)
    shared = rng.normal(size=(5, 400))
    scores = {
        name: shared + mean + rng.normal(size=(5, 400))
        for name, mean in (("best", 1.0), ("tied", 0.98), ("worse", 0.0), ("worst", -1.0))
    }
    g = stats.top_group(scores, higher_is_better=True)
    assert g.best in ("best", "tied") and set(g.members) == {"best", "tied"}
    assert g.adjusted["worst"] < 0.05 and g.n_images == 400
    assert g.means["worst"] < g.means["worse"] < g.means["tied"]
    low = stats.top_group({k: -v for k, v in scores.items()}, higher_is_better=False)
    assert set(low.members) == {"best", "tied"}
    with pytest.raises(ValueError, match="at least two"):
        stats.top_group({"a": scores["best"]}, higher_is_better=True)
