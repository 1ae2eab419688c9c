"""Statistics of the comparison tables: intervals over seeds, paired KD-vs-baseline tests,
a paired bootstrap over test patients, and Holm's correction for several KD variants.

Pure numpy / scipy (no torch). Two sources of variation are covered separately:
- over seeds (``mean_ci``, ``paired_difference``): how much the result depends on the
  initialisation and batch order; seed s of a KD variant and of the baseline share both,
  so they are compared pairwise;
- over test patients (``bootstrap_pooled_dice_difference``): how much the result depends
  on which patients happen to be in the test set.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
from numpy.typing import ArrayLike
from scipy import stats as sps

# Differences within this many ulps of the data's magnitude are rounding noise (e.g.
# 0.3 - 0.1 != 0.5 - 0.3 in floating point), not a spread a t-test should see.
_ROUNDING_ULPS = 4


class Interval(NamedTuple):
    """A point estimate with a two-sided confidence interval ``[low, high]``."""

    mean: float
    low: float
    high: float

    def excludes_zero(self) -> bool:
        """True when the whole interval lies strictly above or strictly below 0.

        An interval with NaN bounds (a single replicate) excludes nothing.
        """
        return bool(self.low > 0 or self.high < 0)


@dataclass(frozen=True)
class PairedDifference:
    """Mean over seeds of ``kd - baseline`` with its t-interval and paired t-test."""

    mean: float
    low: float
    high: float
    p_value: float  # two-sided paired t-test; NaN with fewer than 2 seeds
    wins: int  # seeds where kd > baseline (ties are not wins)
    n: int  # seeds

    @property
    def interval(self) -> Interval:
        return Interval(self.mean, self.low, self.high)

    def excludes_zero(self) -> bool:
        """True when the interval of the mean difference lies strictly on one side of 0."""
        return self.interval.excludes_zero()


def _check_level(level: float) -> None:
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")


def _finite_1d(values: ArrayLike, name: str) -> np.ndarray:
    x = np.asarray(values, dtype=float)
    if x.ndim != 1 or x.size == 0:
        raise ValueError(f"{name} must be a non-empty 1-D sequence, got shape {x.shape}")
    if not np.all(np.isfinite(x)):
        # A failed trial must be dropped (or its seed dropped from both rows) explicitly.
        raise ValueError(f"{name} holds non-finite values: {x.tolist()}")
    return x


def t_quantile(level: float, dof: int) -> float:
    """The Student-t quantile of a two-sided interval at ``level``: ``t.ppf((1 + level) / 2)``.

    E.g. ``t_quantile(0.95, 2) == 4.302653...`` (the tabled value for 2 degrees of freedom).
    """
    _check_level(level)
    if dof < 1:
        raise ValueError(f"dof must be >= 1, got {dof}")
    return float(sps.t.ppf((1 + level) / 2, dof))


def mean_ci(values: ArrayLike, level: float = 0.95) -> Interval:
    """Mean over replicates and its two-sided Student-t interval.

    Half-width ``t_quantile(level, n - 1) * s / sqrt(n)`` with ``s`` the sample standard
    deviation (n - 1 in the denominator). With a single value the bounds are NaN: one
    replicate says nothing about the spread.
    """
    _check_level(level)
    x = _finite_1d(values, "values")
    n = x.size
    mean = float(x.mean())
    if n == 1:
        return Interval(mean, math.nan, math.nan)
    half = t_quantile(level, n - 1) * float(x.std(ddof=1)) / math.sqrt(n)
    return Interval(mean, mean - half, mean + half)


def paired_difference(kd: ArrayLike, baseline: ArrayLike, level: float = 0.95) -> PairedDifference:
    """Per-seed differences ``kd[i] - baseline[i]``: their mean, t-interval, paired t-test.

    ``kd[i]`` and ``baseline[i]`` must come from the same seed (same initialisation and
    batch order), which removes the seed-to-seed variation shared by both rows.

    p-value: ``scipy.stats.ttest_rel`` two-sided; NaN with fewer than 2 seeds. When all
    differences are equal (up to floating-point rounding) the t statistic is 0/0 or x/0,
    so the limit is returned instead, without warnings: 0.0 if the common difference is
    non-zero, 1.0 if it is zero.
    """
    _check_level(level)
    k = _finite_1d(kd, "kd")
    b = _finite_1d(baseline, "baseline")
    if k.shape != b.shape:
        raise ValueError(f"kd and baseline must pair seed by seed: {k.size} vs {b.size} values")
    d = k - b
    n = d.size
    ci = mean_ci(d, level)
    wins = int(np.sum(k > b))
    if n < 2:
        p = math.nan
    else:
        # The subtraction rounds each difference by up to ~eps * |operand|; a spread that
        # small is no evidence either way (and scipy would warn of precision loss on it).
        tol = _ROUNDING_ULPS * np.finfo(float).eps * float(np.max(np.abs(np.concatenate([k, b]))))
        if np.ptp(d) <= tol:
            p = 1.0 if abs(ci.mean) <= tol else 0.0
        else:
            p = float(sps.ttest_rel(k, b).pvalue)
    return PairedDifference(ci.mean, ci.low, ci.high, p, wins, n)


def pooled_dice(tp: ArrayLike, fp: ArrayLike, fn: ArrayLike) -> np.ndarray:
    """Dice ``2TP / (2TP + FP + FN)`` elementwise (numpy broadcasting).

    Empty-mask policy (as ``kdcore.metrics``): with tp = fp = fn = 0, nothing predicted
    and nothing to find, Dice is 0/0, undefined, and scores NaN, never a perfect 1.0. A
    scalar input gives a numpy scalar.
    """
    tp, fp, fn = (np.asarray(a, dtype=float) for a in (tp, fp, fn))
    num = 2 * tp
    den = num + fp + fn
    num, den = np.broadcast_arrays(num, den)
    out = np.full(den.shape, np.nan)
    np.divide(num, den, out=out, where=den != 0)  # `where` keeps 0/0 from warning
    return out[()]


def _check_counts(counts: ArrayLike, name: str) -> np.ndarray:
    """(seeds, patients, classes, 3) float counts; (seeds, patients, 3) is one class."""
    c = np.asarray(counts, dtype=float)
    if c.ndim == 3:
        c = c[:, :, None, :]
    if c.ndim != 4 or c.shape[3] != 3 or 0 in c.shape:
        raise ValueError(
            f"{name} must have shape (seeds, patients, 3) or (seeds, patients, classes, 3), "
            f"got {c.shape}"
        )
    if not np.all(np.isfinite(c)) or np.any(c < 0):
        raise ValueError(f"{name} must hold finite non-negative tp, fp, fn counts")
    return c


def _seed_mean_dice(sums: np.ndarray) -> np.ndarray:
    """Mean over seeds (axis -3) of the class-mean pooled Dice of counts summed over
    patients, ``sums`` (..., seeds, classes, 3). One class: NaN where any seed's pooled
    Dice is undefined (all its counts 0); several: undefined classes are left out of a
    seed's mean (as ``kdcore.metrics``), NaN only where a seed has no defined class."""
    dice = pooled_dice(sums[..., 0], sums[..., 1], sums[..., 2])  # (..., seeds, classes)
    if dice.shape[-1] == 1:
        return dice[..., 0].mean(axis=-1)
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a seed with no defined class
        return np.nanmean(dice, axis=-1).mean(axis=-1)


def bootstrap_pooled_dice_difference(
    kd_counts: ArrayLike,
    baseline_counts: ArrayLike,
    n_boot: int = 2000,
    level: float = 0.95,
    seed: int = 0,
) -> Interval:
    """Paired bootstrap over test patients of the seed-averaged pooled-Dice difference.

    ``kd_counts``, ``baseline_counts``: shape (seeds, patients, 3) holding tp, fp, fn per
    seed and test patient, the same seeds and patients in the same order in both; with
    several classes (seeds, patients, classes, 3).

    Statistic: for each seed the pooled Dice over the patients (counts summed, then
    ``pooled_dice``; with several classes, each class's, then their mean), averaged over
    seeds, kd minus baseline. The point estimate is the
    statistic on the original patients. Each of ``n_boot`` resamples draws the patients with
    replacement, the same draw for both methods and all seeds (the comparison is paired on
    the test set), and recomputes the statistic; the interval is the percentile interval of
    those ``n_boot`` values. Deterministic for a given ``seed`` (``np.random.default_rng``).

    Empty masks (``pooled_dice``: tp = fp = fn = 0 is undefined, NaN): where a seed of
    either method has all counts 0 over the test patients, the point estimate and both
    bounds are NaN. A resample that draws only such patients for some seed has no
    statistic and is left out of the percentile interval; the bounds are NaN when no
    resample has one.
    """
    _check_level(level)
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")
    kd = _check_counts(kd_counts, "kd_counts")
    base = _check_counts(baseline_counts, "baseline_counts")
    if kd.shape != base.shape:
        raise ValueError(
            f"kd_counts and baseline_counts differ in shape: {kd.shape} vs {base.shape}"
        )
    n_patients = kd.shape[1]

    point = _seed_mean_dice(kd.sum(axis=1)) - _seed_mean_dice(base.sum(axis=1))
    if math.isnan(point):
        return Interval(math.nan, math.nan, math.nan)

    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n_patients, size=(n_boot, n_patients))
    # weights[b, p]: how often resample b drew patient p (one bincount over offset rows,
    # so no Python loop over resamples); summed counts are then a matrix product.
    offsets = n_patients * np.arange(n_boot)[:, None]
    weights = np.bincount((idx + offsets).ravel(), minlength=n_boot * n_patients)
    weights = weights.reshape(n_boot, n_patients).astype(float)
    kd_sums = np.einsum("bp,spck->bsck", weights, kd)  # (n_boot, seeds, classes, 3)
    base_sums = np.einsum("bp,spck->bsck", weights, base)
    diffs = _seed_mean_dice(kd_sums) - _seed_mean_dice(base_sums)
    diffs = diffs[~np.isnan(diffs)]  # resamples of empty patients only: no statistic
    if diffs.size == 0:
        return Interval(float(point), math.nan, math.nan)

    alpha = 1 - level
    low, high = np.quantile(diffs, [alpha / 2, 1 - alpha / 2])
    return Interval(float(point), float(low), float(high))


def holm(pvalues: ArrayLike) -> np.ndarray:
    """Holm-Bonferroni adjusted p-values (Holm, S. 1979, "A simple sequentially rejective
    multiple test procedure", Scandinavian Journal of Statistics 6(2): 65-70).

    With the m non-NaN p-values sorted ascending, p_(1) <= ... <= p_(m), the adjusted
    value of p_(i) is ``max_{j <= i} min(1, (m - j + 1) * p_(j))``: the running maximum
    keeps the adjusted values in the order of the raw ones. Rejecting where the adjusted
    value is <= alpha controls the family-wise error rate at alpha. NaN entries (e.g. a
    variant with one seed) stay NaN and do not count in m. Same shape as the input.
    """
    p = np.asarray(pvalues, dtype=float)
    flat = p.ravel()
    known = ~np.isnan(flat)
    if np.any((flat[known] < 0) | (flat[known] > 1)):
        raise ValueError(f"p-values must lie in [0, 1], got {flat.tolist()}")
    out = np.full(flat.shape, np.nan)
    values = flat[known]
    m = values.size
    if m:
        order = np.argsort(values, kind="stable")
        scaled = np.minimum(1.0, (m - np.arange(m)) * values[order])
        adjusted = np.empty(m)
        adjusted[order] = np.maximum.accumulate(scaled)
        out[known] = adjusted
    return out.reshape(p.shape)


def minimum_detectable_effect(sd: float, n: int, alpha: float = 0.05, power: float = 0.8) -> float:
    """The smallest true mean difference a two-sided paired t-test at ``alpha`` detects
    with probability ``power`` over ``n`` pairs whose differences have standard deviation
    ``sd``: ``(t(1 - alpha/2, n-1) + t(power, n-1)) * sd / sqrt(n)`` (the usual
    t-approximation of the noncentral t). NaN with fewer than 2 pairs or a NaN ``sd``."""
    if n < 2 or not math.isfinite(sd):
        return math.nan
    dof = n - 1
    return float((sps.t.ppf(1 - alpha / 2, dof) + sps.t.ppf(power, dof)) * sd / math.sqrt(n))


def seeds_needed(
    sd: float, effect: float, alpha: float = 0.05, power: float = 0.8, most: int = 100_000
) -> int | None:
    """How many paired seeds make ``effect`` detectable (``minimum_detectable_effect`` <=
    ``effect``); None when even ``most`` would not, or ``sd`` is NaN. 2 at the least."""
    if not math.isfinite(sd) or effect <= 0:
        return None
    if sd == 0:
        return 2
    n = 2
    while minimum_detectable_effect(sd, n, alpha, power) > effect:
        n = n * 2 if n < 64 else n + max(1, n // 8)
        if n > most:
            return None
    low = max(2, n // 2)  # the smallest n in (low, n] that suffices, by bisection
    while low < n:
        mid = (low + n) // 2
        if minimum_detectable_effect(sd, mid, alpha, power) <= effect:
            n = mid
        else:
            low = mid + 1
    return n
