"""The statistics behind every number the summary prints.

Kept small and exact (no scipy): a Wilson score interval for pass rates, the exact
McNemar test for paired comparisons (a two-sided binomial sign test on the discordant
koans), a one-sided Fisher exact test for a drop between two pass counts, and the
unbiased pass@k estimator of Chen et al. (2021).
"""

from __future__ import annotations

import functools
import math

__all__ = ["wilson_interval", "exact_mcnemar", "fisher_drop", "pass_at_k", "Z_95", "mcnemar_power",
           "detectable_difference", "POWER"]

Z_95 = 1.959963984540054  # two-sided 95 % normal quantile


def wilson_interval(successes: float, trials: int, z: float = Z_95) -> tuple[float, float]:
    """Wilson score interval for a proportion. `successes` may be fractional (a koan
    solved in 2 of 3 samples counts 2/3) when `trials` counts koans: samples of one koan
    are not independent trials, so they must not narrow the interval."""
    if trials <= 0:
        return (0.0, 1.0)
    if not 0 <= successes <= trials:
        raise ValueError(f"successes={successes} must lie between 0 and trials={trials}")
    p = successes / trials
    denominator = 1 + z * z / trials
    centre = (p + z * z / (2 * trials)) / denominator
    half = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / denominator
    # Clamp rounding noise: at p = 0 the lower bound is exactly 0.
    return (max(0.0, centre - half) if successes > 0 else 0.0, min(1.0, centre + half) if successes < trials else 1.0)


def exact_mcnemar(gains: int, losses: int) -> float:
    """Two-sided exact McNemar p-value from the discordant pairs: koans only the new
    strategy solved (`gains`) and koans only the reference solved (`losses`). Under the
    null hypothesis each discordant koan is a fair coin."""
    n = gains + losses
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(min(gains, losses) + 1)) / 2**n
    return min(1.0, 2 * tail)


def pass_at_k(samples: int, correct: int, k: int) -> float:
    """Unbiased estimate of the chance that at least one of k samples is correct, from
    `samples` draws of which `correct` passed: 1 - C(n-c, k) / C(n, k)."""
    if not 0 <= correct <= samples or not 1 <= k <= samples:
        raise ValueError(f"pass@k needs 0 <= correct <= samples and 1 <= k <= samples (got n={samples}, c={correct}, k={k})")
    if samples - correct < k:
        return 1.0
    return 1.0 - math.comb(samples - correct, k) / math.comb(samples, k)


def fisher_drop(before_passed: int, before_total: int, after_passed: int, after_total: int) -> float:
    """One-sided Fisher exact p-value that the pass rate fell from `before` to `after`:
    the chance, with the margins of the 2x2 table fixed, of `after` passing this few
    times or fewer if both runs had the same rate. Swap the arguments to test a rise."""
    for passed, total in ((before_passed, before_total), (after_passed, after_total)):
        if not 0 <= passed <= total:
            raise ValueError(f"passed={passed} must lie between 0 and total={total}")
    passes = before_passed + after_passed
    grand = before_total + after_total
    denominator = math.comb(grand, passes)
    if denominator == 0:
        return 1.0
    low = max(0, passes - before_total)
    tail = sum(math.comb(after_total, k) * math.comb(before_total, passes - k) for k in range(low, after_passed + 1))
    return min(1.0, tail / denominator)


POWER = 0.8  # the power at which the summary states the smallest detectable difference


def mcnemar_power(koans: int, gain_rate: float, loss_rate: float, alpha: float = 0.05) -> float:
    """Exact power of the two-sided exact McNemar test to find that a strategy is better.

    Each of `koans` koans is independently gained with probability `gain_rate`, lost
    with `loss_rate`, else unchanged (a multinomial). The test rejects when its p-value
    (`exact_mcnemar`) is below `alpha` with more gains than losses. Summing over the
    number of discordant koans d ~ Binomial(koans, gain_rate + loss_rate), the gains
    among them are Binomial(d, gain_rate / (gain_rate + loss_rate)), and the rejection
    region for each d is "gains >= c_d": so the power is exact, with no simulation."""
    if koans < 0 or not 0 <= gain_rate <= 1 or not 0 <= loss_rate <= 1 or gain_rate + loss_rate > 1:
        raise ValueError("koans must be >= 0 and the rates proportions that sum to at most 1")
    discordant = gain_rate + loss_rate
    if koans == 0 or discordant == 0:
        return 0.0
    share = gain_rate / discordant
    power = 0.0
    for d, critical in enumerate(_critical_gains(koans, alpha), start=1):
        if critical is None:
            continue
        p_d = math.comb(koans, d) * discordant**d * (1 - discordant) ** (koans - d)
        tail = sum(math.comb(d, g) * share**g * (1 - share) ** (d - g) for g in range(critical, d + 1))
        power += p_d * tail
    return min(1.0, power)


def detectable_difference(koans: int, loss_rate: float = 0.0, alpha: float = 0.05, power: float = POWER) -> float | None:
    """The smallest net gain (gain rate minus `loss_rate`) that the exact McNemar test
    finds with at least `power` over `koans` koans, holding the loss rate fixed; None
    when no gain rate does (too few koans). Found by bisection: power grows with the
    gain rate at a fixed loss rate."""
    if not 0 <= loss_rate <= 1:
        raise ValueError("loss_rate must lie in [0, 1]")
    top = 1 - loss_rate
    if top == 0 or mcnemar_power(koans, top, loss_rate, alpha) < power:
        return None
    low, high = 0.0, top
    for _ in range(24):  # to within 1e-7 of a rate: far below what the summary prints
        middle = (low + high) / 2
        if mcnemar_power(koans, middle, loss_rate, alpha) >= power:
            high = middle
        else:
            low = middle
    return high - loss_rate


@functools.lru_cache(maxsize=64)
def _critical_gains(koans: int, alpha: float) -> tuple[int | None, ...]:
    """For d = 1..koans discordant koans, the fewest gains for which exact McNemar
    rejects with gains > losses (None: no split of d rejects)."""
    table = []
    for discordant in range(1, koans + 1):
        table.append(next((g for g in range(discordant // 2 + 1, discordant + 1)
                           if exact_mcnemar(g, discordant - g) < alpha), None))
    return tuple(table)
