"""kdcore.stats against values worked out by hand (the arithmetic is in the comments)."""

import math
import warnings

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from kdcore.stats import (
    Interval,
    PairedDifference,
    bootstrap_pooled_dice_difference,
    holm,
    mean_ci,
    minimum_detectable_effect,
    paired_difference,
    pooled_dice,
    seeds_needed,
    t_quantile,
)
from kdcore.summary import StatsSettings, summarize, summary_markdown

# Tabled two-sided 95 % Student-t quantiles t_{0.975, dof}.
T975 = {2: 4.302653, 3: 3.182446}


# --- t_quantile, mean_ci -------------------------------------------------------------------


def test_t_quantile_matches_table():
    assert t_quantile(0.95, 2) == pytest.approx(T975[2], abs=1e-6)
    assert t_quantile(0.95, 3) == pytest.approx(T975[3], abs=1e-6)
    # 80 % two-sided -> t_{0.90, 3} = 1.637744 (table)
    assert t_quantile(0.80, 3) == pytest.approx(1.637744, abs=1e-6)


def test_mean_ci_three_values_by_hand():
    # [1, 2, 3]: mean 2; sample var ((-1)^2 + 0 + 1^2) / (3 - 1) = 1, s = 1;
    # half-width = t_{0.975,2} * s / sqrt(3) = 4.302653 / 1.732051 = 2.484138
    ci = mean_ci([1, 2, 3])
    assert ci.mean == 2.0
    assert ci.low == pytest.approx(2 - 2.484138, abs=1e-5)
    assert ci.high == pytest.approx(2 + 2.484138, abs=1e-5)
    assert not ci.excludes_zero()  # [-0.484, 4.484]
    # Shifted by +4: [5, 6, 7] -> [6 - 2.484, 6 + 2.484] = [3.516, 8.484], above 0.
    assert mean_ci([5, 6, 7]).excludes_zero()
    # Shifted by -4: [-3, -2, -1] -> [-4.484, 0.484]: contains 0.
    assert not mean_ci([-3, -2, -1]).excludes_zero()
    # [-7, -6, -5] -> [-8.484, -3.516], below 0.
    assert mean_ci([-7, -6, -5]).excludes_zero()


def test_mean_ci_other_level():
    # 90 % with 2 dof: t_{0.95,2} = 2.919986 (table); half-width 2.919986 / sqrt(3) = 1.685854
    ci = mean_ci([1, 2, 3], level=0.90)
    assert (ci.low, ci.high) == pytest.approx((2 - 1.685854, 2 + 1.685854), abs=1e-5)


def test_mean_ci_single_value_has_nan_bounds_without_warning():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ci = mean_ci([0.8])
    assert ci.mean == 0.8 and math.isnan(ci.low) and math.isnan(ci.high)
    assert not ci.excludes_zero()


def test_mean_ci_rejects_empty_and_non_finite():
    with pytest.raises(ValueError):
        mean_ci([])
    with pytest.raises(ValueError):
        mean_ci([0.8, float("nan")])
    with pytest.raises(ValueError):
        mean_ci([1, 2], level=1.0)


def test_interval_is_a_tuple():
    mean, low, high = Interval(1.0, 0.5, 1.5)
    assert (mean, low, high) == (1.0, 0.5, 1.5)


# --- paired_difference ---------------------------------------------------------------------


def test_paired_difference_by_hand():
    kd = [0.80, 0.78, 0.83, 0.75]
    base = [0.76, 0.79, 0.78, 0.74]
    # d = kd - base = [0.04, -0.01, 0.05, 0.01]; kd wins seeds 0, 2, 3 -> wins = 3
    # mean d = 0.09 / 4 = 0.0225
    # deviations 0.0175, -0.0325, 0.0275, -0.0125; squares 0.00030625, 0.00105625,
    # 0.00075625, 0.00015625 -> sum 0.002275; var = 0.002275 / 3 = 0.000758333
    # s = 0.0275379, se = s / sqrt(4) = 0.0137689
    # half-width = t_{0.975,3} * se = 3.182446 * 0.0137689 = 0.0438189
    # t = 0.0225 / 0.0137689 = 1.634114 on 3 dof
    r = paired_difference(kd, base)
    assert isinstance(r, PairedDifference)
    assert r.n == 4 and r.wins == 3
    assert r.mean == pytest.approx(0.0225)
    assert (r.low, r.high) == pytest.approx((0.0225 - 0.0438189, 0.0225 + 0.0438189), abs=1e-6)
    assert r.interval == Interval(r.mean, r.low, r.high)
    assert not r.excludes_zero()
    t_hand = 0.0225 / (math.sqrt(0.002275 / 3) / 2)
    assert t_hand == pytest.approx(1.634114, abs=1e-6)
    # Table, 3 dof: one-sided 0.10 at t = 1.637744 and 0.15 at t = 1.249778; 1.634114 lies
    # between them, so the two-sided p lies in (0.20, 0.30), just above 0.20.
    assert 0.20 < r.p_value < 0.30
    assert r.p_value == pytest.approx(2 * sps.t.sf(t_hand, 3), rel=1e-9)  # 0.200745


def test_paired_difference_ties_are_not_wins():
    # d = [0, 1, -1]: one win, one tie, one loss; mean 0, s = 1 -> t = 0, p = 1
    r = paired_difference([1, 1, 2], [1, 0, 3])
    assert r.wins == 1 and r.mean == 0.0
    assert r.p_value == pytest.approx(1.0)


def test_paired_difference_constant_differences_without_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        # d = [0.2, 0.2, 0.2] up to rounding (0.3 - 0.1 != 0.5 - 0.3 in floating point):
        # zero spread, non-zero mean -> t = +inf -> p = 0
        up = paired_difference([0.3, 0.5, 0.7], [0.1, 0.3, 0.5])
        # identical rows: d = [0, 0, 0] -> t = 0/0, no evidence -> p = 1
        same = paired_difference([0.7, 0.8, 0.9], [0.7, 0.8, 0.9])
    assert up.p_value == 0.0 and up.wins == 3 and up.mean == pytest.approx(0.2)
    assert same.p_value == 1.0 and same.wins == 0
    assert (same.mean, same.low, same.high) == (0.0, 0.0, 0.0)


def test_paired_difference_single_seed():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        r = paired_difference([0.8], [0.7])
    assert r.n == 1 and r.wins == 1 and r.mean == pytest.approx(0.1)
    assert math.isnan(r.low) and math.isnan(r.high) and math.isnan(r.p_value)


def test_paired_difference_rejects_unpaired_lengths():
    with pytest.raises(ValueError, match="pair"):
        paired_difference([0.8, 0.7], [0.7, 0.6, 0.5])


# --- pooled_dice ---------------------------------------------------------------------------


def test_pooled_dice_vectorised_with_zero_denominator():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        # (2,1,1): 4 / (4 + 1 + 1) = 2/3; (0,0,0): 0/0 -> undefined (NaN), never perfect;
        # (0,3,0): 0 / 3 = 0
        got = pooled_dice([2, 0, 0], [1, 0, 3], [1, 0, 0])
        scalar = pooled_dice(0, 0, 0)
    np.testing.assert_allclose(got, [2 / 3, np.nan, 0.0])
    assert np.isnan(scalar) and np.ndim(scalar) == 0
    # Broadcasting: tp (2, 1) against fp, fn (2,): [[2/(2+1+0), 2/(2+0+1)], [0, 0]]
    np.testing.assert_allclose(
        pooled_dice([[1], [0]], [1, 0], [0, 1]), [[2 / 3, 2 / 3], [0.0, 0.0]]
    )


# --- bootstrap_pooled_dice_difference ------------------------------------------------------


def _random_counts(rng: np.random.Generator, seeds: int, patients: int) -> np.ndarray:
    return rng.integers(0, 50, size=(seeds, patients, 3))


def test_bootstrap_identical_methods_give_zero():
    counts = _random_counts(np.random.default_rng(1), seeds=3, patients=12)
    # Same counts -> the same arithmetic on both sides of every resample -> exactly 0.
    assert bootstrap_pooled_dice_difference(counts, counts.copy()) == Interval(0.0, 0.0, 0.0)


def test_bootstrap_kd_better_on_every_patient_is_above_zero():
    rng = np.random.default_rng(2)
    base = np.stack(
        [rng.integers(50, 100, size=(3, 15)), *rng.integers(5, 20, size=(2, 3, 15))], axis=-1
    )
    kd = base.copy()
    kd[..., 1:] -= 3  # same TP, 3 fewer FP and FN on every patient and seed
    # For any multiset of patients kd has the same summed TP and smaller FP + FN, so its
    # pooled Dice 2TP / (2TP + FP + FN) is larger for every seed: every resampled
    # difference is > 0, hence so is the lower percentile.
    ci = bootstrap_pooled_dice_difference(kd, base, n_boot=500)
    assert 0 < ci.low < ci.mean < ci.high
    assert ci.excludes_zero()


def test_bootstrap_point_estimate_by_hand():
    # (seeds=2, patients=2, [tp, fp, fn])
    kd = np.array([[[8, 2, 2], [2, 1, 1]], [[6, 2, 4], [4, 0, 2]]])
    base = np.array([[[5, 5, 5], [0, 0, 0]], [[4, 2, 2], [0, 1, 0]]])
    # kd seed 0: tp 10, fp 3, fn 3 -> 20 / 26 = 10/13;  seed 1: 10, 2, 6 -> 20 / 28 = 5/7
    # base seed 0: 5, 5, 5 -> 10 / 20 = 1/2;            seed 1: 4, 3, 2 -> 8 / 13
    # kd mean (10/13 + 5/7) / 2 = 135/182; base mean (1/2 + 8/13) / 2 = 29/52
    # difference 135/182 - 29/52 = 270/364 - 203/364 = 67/364 = 0.184066
    ci = bootstrap_pooled_dice_difference(kd, base, n_boot=200)
    assert ci.mean == pytest.approx(67 / 364)
    assert ci.low <= ci.high


def test_bootstrap_single_patient_resamples_are_the_original():
    # One patient: every resample is that patient -> interval collapses to the point.
    # kd 2*9 / (18 + 1 + 1) = 0.9; base 2*5 / (10 + 5 + 5) = 0.5 -> 0.4
    ci = bootstrap_pooled_dice_difference([[[9, 1, 1]]], [[[5, 5, 5]]], n_boot=50)
    assert ci == pytest.approx((0.4, 0.4, 0.4))


def test_bootstrap_matches_a_plain_loop():
    # The vectorised weights must equal summing the drawn patients one resample at a time
    # (same draw: default_rng(seed).integers(0, patients, size=(n_boot, patients))).
    rng = np.random.default_rng(3)
    kd, base = _random_counts(rng, 2, 7), _random_counts(rng, 2, 7)
    n_boot, seed = 300, 11
    idx = np.random.default_rng(seed).integers(0, 7, size=(n_boot, 7))

    def stat(c):
        s = c.sum(axis=1)  # (seeds, 3)
        return pooled_dice(s[:, 0], s[:, 1], s[:, 2]).mean()

    diffs = [stat(kd[:, row]) - stat(base[:, row]) for row in idx]
    ci = bootstrap_pooled_dice_difference(kd, base, n_boot=n_boot, seed=seed)
    assert ci.mean == pytest.approx(stat(kd) - stat(base))
    assert (ci.low, ci.high) == pytest.approx(tuple(np.quantile(diffs, [0.025, 0.975])))


def test_bootstrap_is_deterministic_per_seed():
    rng = np.random.default_rng(4)
    kd, base = _random_counts(rng, 3, 10), _random_counts(rng, 3, 10)
    a = bootstrap_pooled_dice_difference(kd, base, seed=7)
    assert bootstrap_pooled_dice_difference(kd, base, seed=7) == a
    b = bootstrap_pooled_dice_difference(kd, base, seed=8)
    assert b.mean == a.mean and (b.low, b.high) != (a.low, a.high)


def test_bootstrap_of_an_empty_test_set_is_undefined_not_perfect():
    # seed 1 of the baseline: nothing to find and nothing predicted on both patients, so
    # its pooled Dice is 0/0; the comparison is undefined (NaN), not a perfect baseline
    kd = np.array([[[8, 2, 2], [2, 1, 1]], [[6, 2, 4], [4, 0, 2]]])
    base = np.array([[[5, 5, 5], [0, 0, 0]], [[0, 0, 0], [0, 0, 0]]])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ci = bootstrap_pooled_dice_difference(kd, base, n_boot=50)
    assert all(math.isnan(v) for v in ci)


def test_bootstrap_leaves_out_resamples_of_empty_patients_only():
    # patient 1 has tp = fp = fn = 0 for both methods. With 2 patients a resample draws
    # (0, 0), (0, 1), (1, 0) or (1, 1); the last has no statistic and is left out, and every
    # other resample sums to patient 0's counts: kd 2*9/(18+1+1) = 0.9, base 10/20 = 0.5.
    kd = np.array([[[9, 1, 1], [0, 0, 0]]])
    base = np.array([[[5, 5, 5], [0, 0, 0]]])
    idx = np.random.default_rng(0).integers(0, 2, size=(40, 2))
    assert np.any(np.all(idx == 1, axis=1))  # the draw holds some (1, 1) resamples
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ci = bootstrap_pooled_dice_difference(kd, base, n_boot=40)
    assert ci == pytest.approx((0.4, 0.4, 0.4))


def test_bootstrap_with_no_defined_resample_has_nan_bounds():
    # 5 patients, only patient 0 has counts; n_boot=1 with seed 0 draws it not at all
    kd = np.zeros((1, 5, 3))
    kd[0, 0] = (9, 1, 1)
    base = kd.copy()
    base[0, 0] = (5, 5, 5)
    (row,) = np.random.default_rng(0).integers(0, 5, size=(1, 5))
    assert 0 not in row
    ci = bootstrap_pooled_dice_difference(kd, base, n_boot=1)
    assert ci.mean == pytest.approx(0.4) and math.isnan(ci.low) and math.isnan(ci.high)


def test_bootstrap_rejects_bad_shapes():
    good = np.ones((2, 3, 3))
    with pytest.raises(ValueError):
        bootstrap_pooled_dice_difference(good, np.ones((2, 4, 3)))
    with pytest.raises(ValueError):
        bootstrap_pooled_dice_difference(np.ones((2, 3)), np.ones((2, 3)))
    with pytest.raises(ValueError):
        bootstrap_pooled_dice_difference(-good, good)


# --- holm ----------------------------------------------------------------------------------


def test_holm_by_hand():
    # m = 3, sorted: 0.01 (index 0), 0.03 (index 2), 0.04 (index 1)
    # scaled: 3 * 0.01 = 0.03, 2 * 0.03 = 0.06, 1 * 0.04 = 0.04
    # running max: 0.03, 0.06, max(0.06, 0.04) = 0.06
    # back in input order: [0.03, 0.06, 0.06]
    np.testing.assert_allclose(holm([0.01, 0.04, 0.03]), [0.03, 0.06, 0.06])


def test_holm_caps_at_one_and_keeps_order():
    # m = 2: 2 * 0.6 = 1.2 -> capped 1.0; 1 * 0.7 = 0.7 -> running max 1.0
    np.testing.assert_allclose(holm([0.7, 0.6]), [1.0, 1.0])
    # m = 2: 2 * 0.4 = 0.8; 0.7 -> running max 0.8 (monotone in the raw p)
    np.testing.assert_allclose(holm([0.4, 0.7]), [0.8, 0.8])


def test_holm_passes_nan_through_and_does_not_count_it():
    # The NaN is not a test: m = 3 as in test_holm_by_hand, not 4.
    got = holm([0.01, np.nan, 0.04, 0.03])
    assert math.isnan(got[1])
    np.testing.assert_allclose(got[[0, 2, 3]], [0.03, 0.06, 0.06])
    assert np.all(np.isnan(holm([np.nan, np.nan])))
    assert holm([]).shape == (0,)


def test_holm_rejects_out_of_range():
    with pytest.raises(ValueError):
        holm([0.5, 1.5])


# --- the verdict of a KD row (kdcore.summary.summarize) ------------------------------------

METRICS = ("dice", "iou", "recall", "precision", "dice_3d")
BASELINE_DICE = [0.70, 0.80, 0.75]
BASELINE_COUNTS = [(60, 10, 40), (60, 10, 40)]  # pooled Dice 120 / 170 for any resample

# Seed differences from the baseline, in points. 5, 6, 7: mean 6, s = 1, half-width
# 4.302653 / sqrt(3) = 2.48 -> [3.52, 8.48], above 0; -5, -6, -7: below 0; -1, 2, 5: mean 2,
# s = 3, half-width 7.45 -> [-5.45, 9.45], holds 0.
SEEDS = {
    "above": [0.75, 0.86, 0.82],
    "below": [0.65, 0.74, 0.68],
    "zero": [0.69, 0.82, 0.80],
}
# (tp, fp, fn) of test patients a and b, the same for every seed. 90, 10, 10 scores
# 180 / 200 and 10, 10, 90 scores 20 / 120: better (worse) than the baseline on every
# resample -> above (below) 0; one of each: resamples (a, a) above 0, (b, b) and (a, b)
# (200 / 320) below, each drawn about 1/4 of the time or more -> the interval holds 0.
PATIENTS = {
    "above": [(90, 10, 10), (90, 10, 10)],
    "below": [(10, 10, 90), (10, 10, 90)],
    "zero": [(90, 10, 10), (10, 10, 90)],
}


def _trials_and_cases(kd_dice, kd_counts) -> tuple[pd.DataFrame, pd.DataFrame]:
    trials, cases = [], []
    for variant, dices, counts in (
        ("baseline", BASELINE_DICE, BASELINE_COUNTS),
        ("kd", kd_dice, kd_counts),
    ):
        for seed, dice in enumerate(dices):
            trials.append({"variant": variant, "seed": seed, "wall_s": 1.0})
            trials[-1].update(dict.fromkeys(METRICS, dice))
            for case, (tp, fp, fn) in zip("ab", counts, strict=True):
                cases.append({"variant": variant, "seed": seed, "case": case})
                cases[-1].update(tp=tp, fp=fp, fn=fn)
    return pd.DataFrame(trials), pd.DataFrame(cases)


def _side(low: float, high: float) -> str:
    return "above" if low > 0 else "below" if high < 0 else "zero"


@pytest.mark.parametrize(
    "seeds, patients, verdict",
    [
        ("above", "above", "gain"),
        ("below", "below", "loss"),
        ("zero", "zero", "within noise"),
        ("above", "zero", "gain"),  # the verdict is the (Holm-adjusted) paired t-test's
        ("zero", "above", "within noise"),  # the bootstrap over patients stays a column
        ("below", "zero", "loss"),
        ("zero", "below", "within noise"),
    ],
)
def test_the_verdict_is_the_holm_adjusted_paired_test(seeds, patients, verdict):
    trials, cases = _trials_and_cases(SEEDS[seeds], PATIENTS[patients])
    row = summarize(trials, cases).set_index("variant").loc["kd"]
    assert _side(row["delta_low"], row["delta_high"]) == seeds
    assert _side(row["boot_low"], row["boot_high"]) == patients
    assert row["p_holm"] == row["p"]  # one KD row: nothing to adjust
    assert row["verdict"] == verdict


def test_no_gain_or_loss_is_given_where_an_arm_has_not_converged():
    trials, cases = _trials_and_cases(SEEDS["above"], PATIENTS["above"])
    trials = trials.assign(steps=100, stopped_early=False, converged=True)
    assert summarize(trials, cases).set_index("variant").loc["kd", "verdict"] == "gain"
    # 1 of the baseline's 3 runs unconverged: 2/3 < the 80% an arm needs
    trials.loc[(trials["variant"] == "baseline") & (trials["seed"] == 0), "converged"] = False
    row = summarize(trials, cases).set_index("variant").loc["kd"]
    assert row["verdict"] == "budget-limited"
    assert summary_markdown(summarize(trials, cases)).count("budget-limited") == 1
    lenient = summarize(trials, cases, stats=StatsSettings(converged_share=0.5))
    assert lenient.set_index("variant").loc["kd", "verdict"] == "gain"


def test_collapsed_runs_are_counted_against_the_cells_baseline_mean():
    trials, cases = _trials_and_cases(SEEDS["zero"], PATIENTS["zero"])
    base = trials.loc[trials["variant"] == "baseline", "dice"].mean()
    trials.loc[(trials["variant"] == "kd") & (trials["seed"] == 1), "dice"] = 0.49 * base
    s = summarize(trials, cases).set_index("variant")
    assert s.loc["kd", "collapsed"] == 1 and s.loc["baseline", "collapsed"] == 0
    assert "collapsed" in summary_markdown(summarize(trials, cases))


def test_a_row_mixing_collapsed_and_working_runs_is_unstable_not_within_noise():
    trials, cases = _trials_and_cases(SEEDS["zero"], PATIENTS["zero"])
    assert summarize(trials, cases).set_index("variant").loc["kd", "verdict"] == "within noise"
    base = trials.loc[trials["variant"] == "baseline", "dice"].mean()
    kd = trials["variant"] == "kd"
    trials.loc[kd & (trials["seed"] == 1), "dice"] = 0.2 * base  # one of three collapses
    row = summarize(trials, cases).set_index("variant").loc["kd"]
    assert row["collapsed"] == 1 and row["p_holm"] > 0.05 and row["verdict"] == "unstable"
    assert "unstable" in summary_markdown(summarize(trials, cases))
    # a mixed baseline makes its KD rows unstable too
    trials.loc[kd, "dice"] = SEEDS["zero"]
    trials.loc[(trials["variant"] == "baseline") & (trials["seed"] == 0), "dice"] = 0.1
    assert summarize(trials, cases).set_index("variant").loc["kd", "verdict"] == "unstable"
    # a loss the t-test finds despite a collapsed run stays a loss
    # (baseline 0.70, 0.80, 0.75: runs below 0.375 collapsed; differences -30, -31, -39)
    trials, cases = _trials_and_cases([0.40, 0.49, 0.36], PATIENTS["below"])
    row = summarize(trials, cases).set_index("variant").loc["kd"]
    assert row["collapsed"] == 1 and row["p_holm"] < 0.05 and row["verdict"] == "loss"


def test_minimum_detectable_effect_matches_the_t_approximation():
    # sd 1.5 points, 5 seeds: (t(0.975, 4) + t(0.8, 4)) * 1.5 / sqrt(5)
    expected = (2.776445 + 0.940965) * 1.5 / np.sqrt(5)
    assert minimum_detectable_effect(1.5, 5) == pytest.approx(expected, rel=1e-5)
    assert np.isnan(minimum_detectable_effect(1.5, 1))
    n = seeds_needed(1.5, 1.0)
    assert minimum_detectable_effect(1.5, n) <= 1.0 < minimum_detectable_effect(1.5, n - 1)
    assert seeds_needed(1.5, 1.0, alpha=0.05 / 8) > n and seeds_needed(0.0, 1.0) == 2
    trials, cases = _trials_and_cases(SEEDS["above"], PATIENTS["above"])
    row = summarize(trials, cases).set_index("variant").loc["kd"]
    assert row["mde"] == pytest.approx(minimum_detectable_effect(row["sd"], 3))
