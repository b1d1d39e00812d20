"""Specification of the statistics: Wilson interval, exact McNemar test, pass@k.

Reference values are hard-coded, computed once outside the project (scipy is not a
dependency and is not imported here):
- Wilson: Newcombe (1998), "Two-sided confidence intervals for the single proportion",
  Stat. Med. 17:857-872, worked examples for method 3 (score interval without
  continuity correction), quoted to 4 places there; full precision from scipy 1.17
  `binomtest(k, n).proportion_ci(method="wilson")`. Fractional successes: roots of the
  score equation (p_hat - p)^2 = z^2 p (1 - p) / n found with scipy.optimize.brentq.
- McNemar: scipy 1.17 `binomtest(gains, gains + losses, 0.5).pvalue` (two-sided).
- pass@k: the brute-force definition, enumerated in the test itself.
"""

from __future__ import annotations

import itertools

import pytest

from pytest_sleepy.stats import (Z_95, detectable_difference, exact_mcnemar, fisher_drop, mcnemar_power, pass_at_k,
                                  wilson_interval)

# --- Wilson score interval --------------------------------------------------------

# (successes, trials) -> (low, high); Newcombe 1998 method 3 / scipy binomtest(...).proportion_ci(method="wilson")
WILSON_REFERENCE = {
    (81, 263): (0.2552885198782742, 0.36620957698280004),  # Newcombe: 0.2553, 0.3662
    (15, 148): (0.06238639953073629, 0.16048724172330803),  # Newcombe: 0.0624, 0.1605
    (1, 29): (0.006113214292762667, 0.17175521879320282),  # Newcombe: 0.0061, 0.1718
    (0, 20): (0.0, 0.16112515805281935),  # Newcombe: 0.0000, 0.1611
    (3, 7): (0.1582198552514697, 0.7495416354723428),  # scipy
}


@pytest.mark.parametrize("successes, trials", WILSON_REFERENCE, ids=[f"{k}of{n}" for k, n in WILSON_REFERENCE])
def test_wilson_interval_matches_published_and_scipy_values(successes, trials):
    low, high = wilson_interval(successes, trials)
    assert (low, high) == pytest.approx(WILSON_REFERENCE[successes, trials], abs=1e-12)


def test_wilson_default_z_is_the_two_sided_95_percent_normal_quantile():
    # scipy.stats.norm.ppf(0.975)
    assert Z_95 == pytest.approx(1.959963984540054, abs=1e-15)


def test_wilson_interval_uses_the_given_z():
    # z = norm.ppf(0.995); scipy binomtest(3, 7).proportion_ci(confidence_level=0.99, method="wilson")
    low, high = wilson_interval(3, 7, z=2.5758293035489004)
    assert (low, high) == pytest.approx((0.11637368051613817, 0.8102850959116125), abs=1e-12)


def test_wilson_lower_bound_is_exactly_zero_with_no_successes():
    low, high = wilson_interval(0, 10)
    assert low == 0.0
    assert high == pytest.approx(0.27753279986288926, abs=1e-12)  # scipy


def test_wilson_upper_bound_is_exactly_one_when_every_trial_succeeds():
    low, high = wilson_interval(10, 10)
    assert high == 1.0
    assert low == pytest.approx(0.7224672001371109, abs=1e-12)  # scipy


def test_wilson_single_successful_trial():
    assert wilson_interval(1, 1) == pytest.approx((0.20654931437723745, 1.0), abs=1e-12)  # scipy


def test_wilson_interval_is_centred_on_one_half_at_half_successes():
    low, high = wilson_interval(5, 10)
    assert (low, high) == pytest.approx((0.236593090512564, 0.7634069094874361), abs=1e-12)  # scipy
    assert low + high == pytest.approx(1.0, abs=1e-12)


def test_wilson_interval_mirrors_when_successes_and_failures_swap():
    low, high = wilson_interval(3, 7)
    mirrored_low, mirrored_high = wilson_interval(4, 7)
    assert (mirrored_low, mirrored_high) == pytest.approx((1 - high, 1 - low), abs=1e-12)


@pytest.mark.parametrize("successes, trials, expected", [
    (2.5, 5, (0.17042358064358779, 0.8295764193564122)),  # brentq on the score equation
    (1.5, 4, (0.09189922917901214, 0.7805734799346372)),
    (7 / 3, 4, (0.19503635315141035, 0.8899818407728235)),
], ids=["2.5of5", "1.5of4", "7/3of4"])
def test_wilson_accepts_fractional_successes(successes, trials, expected):
    assert wilson_interval(successes, trials) == pytest.approx(expected, abs=1e-12)


def test_wilson_with_zero_trials_is_the_whole_unit_interval():
    assert wilson_interval(0, 0) == (0.0, 1.0)


@pytest.mark.parametrize("successes, trials", [(-1, 5), (6, 5), (-0.5, 5), (5.5, 5)])
def test_wilson_rejects_successes_outside_zero_to_trials(successes, trials):
    with pytest.raises(ValueError, match="successes"):
        wilson_interval(successes, trials)


# --- exact McNemar test -------------------------------------------------------------


def test_mcnemar_without_discordant_pairs_is_one():
    assert exact_mcnemar(0, 0) == 1.0


def test_mcnemar_one_gain_no_loss_is_one():
    assert exact_mcnemar(1, 0) == 1.0


def test_mcnemar_five_gains_no_loss_is_one_in_sixteen():
    assert exact_mcnemar(5, 0) == pytest.approx(0.0625, abs=1e-15)


def test_mcnemar_balanced_discordant_pairs_is_one():
    assert exact_mcnemar(4, 4) == 1.0


# (gains, losses) -> scipy binomtest(gains, gains + losses, 0.5).pvalue
MCNEMAR_REFERENCE = {
    (6, 0): 0.03125,
    (7, 2): 0.1796875,
    (10, 3): 0.09228515625,
    (12, 20): 0.21532714972272515,
    (0, 9): 0.00390625,
    (15, 5): 0.04138946533203125,
    (1, 9): 0.021484375,
}


@pytest.mark.parametrize("gains, losses", MCNEMAR_REFERENCE, ids=[f"{g}vs{l}" for g, l in MCNEMAR_REFERENCE])
def test_mcnemar_matches_the_two_sided_binomial_test(gains, losses):
    assert exact_mcnemar(gains, losses) == pytest.approx(MCNEMAR_REFERENCE[gains, losses], rel=1e-12)


@pytest.mark.parametrize("gains, losses", [(7, 2), (12, 20), (0, 9), (3, 1)])
def test_mcnemar_does_not_depend_on_argument_order(gains, losses):
    assert exact_mcnemar(gains, losses) == exact_mcnemar(losses, gains)


# --- pass@k ---------------------------------------------------------------------------


def brute_force_pass_at_k(samples: int, correct: int, k: int) -> float:
    """The definition: the share of k-subsets of the samples that hold a correct one."""
    outcomes = [True] * correct + [False] * (samples - correct)
    subsets = list(itertools.combinations(outcomes, k))
    return sum(any(subset) for subset in subsets) / len(subsets)


def test_pass_at_k_is_zero_when_nothing_is_correct():
    assert pass_at_k(10, 0, 3) == 0.0


def test_pass_at_k_is_one_when_everything_is_correct():
    assert pass_at_k(10, 10, 3) == 1.0


def test_pass_at_k_is_one_when_fewer_wrong_samples_than_k():
    assert pass_at_k(5, 3, 3) == 1.0


@pytest.mark.parametrize("samples, correct", [(1, 0), (1, 1), (4, 1), (7, 3), (10, 9)])
def test_pass_at_1_is_the_share_of_correct_samples(samples, correct):
    assert pass_at_k(samples, correct, 1) == pytest.approx(correct / samples, abs=1e-15)


@pytest.mark.parametrize("samples, correct, k", [(6, 2, 3), (8, 1, 4), (9, 4, 2), (10, 3, 5), (7, 6, 1), (5, 0, 5)])
def test_pass_at_k_matches_the_subset_definition(samples, correct, k):
    assert pass_at_k(samples, correct, k) == pytest.approx(brute_force_pass_at_k(samples, correct, k), abs=1e-12)


def test_pass_at_k_worked_example():
    # 6 samples, 2 correct, k = 3: of C(6,3) = 20 subsets, C(4,3) = 4 hold no correct one.
    assert pass_at_k(6, 2, 3) == pytest.approx(16 / 20, abs=1e-15)


@pytest.mark.parametrize("samples, correct, k", [
    (5, 6, 1),  # more correct than samples
    (5, -1, 1),  # negative correct
    (5, 2, 0),  # k below 1
    (5, 2, 6),  # k above samples
    (0, 0, 1),  # no samples at all
], ids=["correct>samples", "correct<0", "k=0", "k>samples", "no-samples"])
def test_pass_at_k_rejects_invalid_arguments(samples, correct, k):
    with pytest.raises(ValueError, match="pass@k"):
        pass_at_k(samples, correct, k)


# -- one-sided Fisher exact test for a drop ---------------------------------------------

# Reference p-values from scipy 1.17: fisher_exact([[bp, bt - bp], [ap, at - ap]],
# alternative="greater").pvalue, i.e. the before row has the greater odds of passing.
FISHER_DROP = [
    ((5, 5, 0, 5), 0.003968253968253969),
    ((3, 3, 1, 3), 0.2),
    ((10, 10, 2, 10), 0.000357227911407478),
    ((7, 10, 3, 10), 0.0894477039987876),
    ((20, 30, 10, 30), 0.009691594130894985),
    ((1, 3, 0, 3), 0.5),
    ((4, 4, 4, 4), 1.0),
    ((0, 5, 0, 5), 1.0),
]


@pytest.mark.parametrize("counts, expected", FISHER_DROP, ids=[str(c) for c, _ in FISHER_DROP])
def test_fisher_drop_matches_scipy(counts, expected):
    assert fisher_drop(*counts) == pytest.approx(expected, rel=1e-12)


def test_fisher_drop_of_a_rise_is_not_significant():
    assert fisher_drop(0, 5, 5, 5) == pytest.approx(1.0)


def test_fisher_drop_refuses_impossible_counts():
    with pytest.raises(ValueError, match="passed=6 must lie between 0 and total=5"):
        fisher_drop(6, 5, 0, 5)


# -- power of the exact McNemar test ---------------------------------------------------



@pytest.mark.parametrize("koans, power", [(30, 0.091), (100, 0.734), (200, 0.974)])
def test_a_ten_point_gain_is_seen_rarely_at_thirty_koans_and_almost_always_at_two_hundred(koans, power):
    # The seed's claim: about 12% of koans gained and 2% lost.
    assert mcnemar_power(koans, 0.12, 0.02) == pytest.approx(power, abs=0.0015)


@pytest.mark.parametrize("koans, gain_rate, loss_rate", [(30, 0.12, 0.02), (60, 0.2, 0.05), (100, 0.075, 0.025)])
def test_the_exact_power_agrees_with_simulation(koans, gain_rate, loss_rate):
    import random

    rng = random.Random(20261130)
    trials, rejected = 20000, 0
    for _ in range(trials):
        gains = losses = 0
        for _ in range(koans):
            u = rng.random()
            gains += u < gain_rate
            losses += gain_rate <= u < gain_rate + loss_rate
        rejected += gains > losses and exact_mcnemar(gains, losses) < 0.05
    exact = mcnemar_power(koans, gain_rate, loss_rate)
    standard_error = (exact * (1 - exact) / trials) ** 0.5
    assert abs(rejected / trials - exact) < 4 * standard_error + 1e-3


def test_the_detectable_difference_has_the_stated_power_and_shrinks_with_more_koans():
    sizes = (30, 100, 200)
    differences = [detectable_difference(n, 0.02) for n in sizes]
    assert differences == sorted(differences, reverse=True)
    for n, difference in zip(sizes, differences):
        assert mcnemar_power(n, 0.02 + difference, 0.02) == pytest.approx(0.8, abs=1e-4)
        assert mcnemar_power(n, 0.02 + difference * 0.98, 0.02) < 0.8


def test_too_few_koans_can_detect_nothing():
    assert detectable_difference(4, 0.0) is None  # 4 gains of 4 give p = 0.125


def test_a_comparison_below_the_detectable_difference_is_underpowered():
    from pytest_sleepy.results import Comparison, power_of

    small = Comparison("b", "a", ["k1", "k2"], [], exact_mcnemar(2, 0), koans=30, detectable=power_of(30, 2, 0))
    large = Comparison("b", "a", [f"k{i}" for i in range(12)], [], exact_mcnemar(12, 0), koans=30,
                       detectable=power_of(30, 12, 0))
    assert small.underpowered and not large.underpowered


def test_a_net_loss_is_measured_at_the_gain_rate_like_a_net_gain_at_the_loss_rate():
    from pytest_sleepy.results import power_of

    assert power_of(30, 0, 6) == power_of(30, 6, 0) == detectable_difference(30, 0.0)
    assert power_of(30, 2, 9) == detectable_difference(30, 2 / 30)
