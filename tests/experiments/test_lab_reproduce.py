"""lab.reproduce: a run's numbers against the committed results, within the spread over seeds."""

from __future__ import annotations

import copy

import numpy as np
import pytest
from scipy import stats

from lab import reproduce


def test_spread_matches_numpy_and_scipy():
    values = [0.8989, 0.8911, 0.9052, 0.8874, 0.8968]
    s = reproduce.spread(values)
    assert s["n"] == 5 and s["values"] == values
    assert s["mean"] == pytest.approx(np.mean(values))
    assert s["std"] == pytest.approx(np.std(values, ddof=1))
    assert (s["min"], s["max"]) == (min(values), max(values))
    low, high = stats.t.interval(0.95, 4, loc=np.mean(values), scale=stats.sem(values))
    assert s["ci95"] == pytest.approx([low, high])
    with pytest.raises(ValueError, match="at least two"):
        reproduce.spread([0.5])


def test_compare_allows_the_stated_number_of_standard_deviations():
    spreads = {"a": {"std": 0.01}, "b": {"std": 0.002}}
    checks = reproduce.compare({"a": 0.52, "b": 0.3}, {"a": 0.5, "b": 0.3061}, spreads)
    by_name = {c.name: c for c in checks}
    assert by_name["a"].tolerance == pytest.approx(0.03) and by_name["a"].within
    assert by_name["b"].tolerance == pytest.approx(0.006) and not by_name["b"].within
    text = reproduce.report(checks, seeds=[0, 1, 2])
    assert "NOT REPRODUCED: b" in text and "| a | 0.5200 | 0.5000 | +0.0200 | 0.0300 | ok |" in text
    with pytest.raises(KeyError, match="'c'"):
        reproduce.compare({"c": 1.0}, {"a": 0.5}, spreads)


def test_config_differences_name_each_option():
    run = {"sigma": 2.0, "num_test": 100, "train": {"seed": 0}}
    committed = {"sigma": 2.0, "num_test": 10000, "train": {"seed": 0}}
    assert reproduce.config_differences(run, committed, ("sigma", "train")) == []
    assert reproduce.config_differences(run, committed, ("num_test",)) == [
        "num_test: 100 (committed 10000)"
    ]


def test_mnist_noise_reproduces_its_committed_results_and_catches_a_shift():
    """The committed run itself is reproduced; one accuracy moved by 4 sd over seeds is not."""
    import mnist_noise

    committed = reproduce.load_committed("mnist_noise.json")
    seeds = reproduce.load_committed("mnist_seeds.json")
    assert len(seeds["seeds"]) >= 5 and 0 in seeds["seeds"]
    log = []
    assert mnist_noise.compare_with_committed(copy.deepcopy(committed), log.append) is True
    assert "reproduced: all 6 numbers" in log[-1]
    shifted = copy.deepcopy(committed)
    sigma = committed["config"]["sigma"]
    (row,) = [r for r in shifted["variants"] if r["variant"] == "framed" and r["sigma"] == sigma]
    row["accuracy"] += 4 * seeds["numbers"]["framed_accuracy"]["std"]
    log.clear()
    assert mnist_noise.compare_with_committed(shifted, log.append) is False
    assert "NOT REPRODUCED: framed_accuracy" in log[-1]
    other = copy.deepcopy(committed)
    other["config"]["num_test"] = 100
    log.clear()
    assert mnist_noise.compare_with_committed(other, log.append) is None
    assert "num_test: 100 (committed 10000)" in log[-1]


def test_committed_seed_zero_is_the_committed_network():
    """results/mnist_seeds.json's seed 0 measured the network of results/mnist_noise.json."""
    import mnist_noise

    committed = reproduce.load_committed("mnist_noise.json")
    seeds = reproduce.load_committed("mnist_seeds.json")
    numbers = mnist_noise.headline(committed, sigma=committed["config"]["sigma"])
    assert seeds["per_seed"]["0"] == pytest.approx(numbers, abs=1e-12)
    assert seeds["config"]["sigma"] == committed["config"]["sigma"]
    assert seeds["config"]["num_test"] == committed["config"]["num_test"]
