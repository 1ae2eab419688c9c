"""Equal tuning: each variant's knobs, and the choice of the best sample."""

import pytest
from omegaconf import OmegaConf

from kdcore.settings import as_dict, compose_config, with_settings
from kdcore.trial_store import sample_key, trial_key
from kdcore.tuning import cell_key, choose, draw_samples, knob_count, knob_settings


def make(*overrides: str):
    return compose_config(list(overrides))


def test_each_variant_tunes_its_own_knobs_with_trials_in_proportion():
    cfg = make("variants=[baseline,pmd,at:at@enc+at@dec,enc+bottleneck]")
    assert [knob_count(v) for v in cfg.variants] == [1, 3, 3, 4]  # lr, weights, temperatures
    samples = draw_samples(cfg, {}, "enc+bottleneck")
    assert len(samples) == 1 + 4 * cfg.tuning.trials_per_knob
    assert samples[0] == {  # the configured settings come first
        "lr": 1.0,
        "weights": {"enc": 1.0, "bottleneck": 1.0},
        "temperatures": {"temperature": 1.0},
    }
    assert set(samples[0]["weights"]) == {"enc", "bottleneck"}
    assert set(samples[0]["temperatures"]) == {"temperature"}
    assert all(0.25 <= s["lr"] <= 4.0 for s in samples)
    assert len({s["lr"] for s in samples}) == len(samples)
    assert draw_samples(cfg, {}, "enc+bottleneck") == samples  # the draws are fixed
    assert draw_samples(cfg, {"data_fraction": 1.0}, "enc+bottleneck") != samples
    knobs = {
        "lr": 2.0,
        "weights": {"pmd": 0.5, "at@enc": 0.5, "at@dec": 0.5},
        "temperatures": {"pmd_temperature": 1.5},
    }
    lr = cfg.student.fit.lr
    assert knob_settings(cfg, "baseline", knobs) == {"student.fit.lr": 2 * lr}
    assert knob_settings(cfg, "pmd", knobs) == {
        "student.fit.lr": 2 * lr,
        "kd.weights.pmd": 0.1,
        "kd.pmd_temperature": 6.0,
    }
    at = knob_settings(cfg, "at:at@enc+at@dec", knobs)
    assert at["kd.weights.at@enc"] == 100.0 and "kd.pmd_temperature" not in at  # AT has none


def test_under_the_thesis_protocol_the_baseline_tunes_its_own_learning_rate():
    cfg = make("protocol=thesis")
    knobs = {"lr": 4.0, "weights": {}, "temperatures": {}}
    assert knob_settings(cfg, "baseline", knobs) == {"protocol.baseline_fit.lr": 6e-4}


def test_the_best_sample_by_its_mean_over_the_tuning_seeds_is_chosen():
    cell = {"data_fraction": 0.5}

    def result(variant, sample, dice, settings):
        return {
            "cell": cell,
            "variant": variant,
            "sample": sample,
            "val_dice": dice,
            "settings": settings,
        }

    samples = [
        result("pmd", 0, 0.70, {"a": 1}),
        result("pmd", 0, 0.74, {"a": 1}),  # mean 0.72
        result("pmd", 1, 0.90, {"a": 2}),  # one lucky seed ...
        result("pmd", 1, 0.50, {"a": 2}),  # ... mean 0.70
        result("pmd", 2, 0.72, {"a": 3}),
        result("pmd", 2, 0.72, {"a": 3}),  # a tie with sample 0: the first stays
        result("baseline", 0, -1.0, {"a": 4}),
        result("baseline", 0, -1.0, {"a": 4}),
    ]
    best = choose(samples)
    chosen = best[cell_key(cell, "pmd")]
    assert chosen["settings"] == {"a": 1} and chosen["trials"] == 3 and chosen["seeds"] == 2
    assert chosen["val_dice"] == pytest.approx(0.72)
    assert best[cell_key(cell, "baseline")]["settings"] == {"a": 4}  # all diverged


@pytest.mark.parametrize("variant", ["baseline", "mtms:all", "hinton", "at:at@enc+at@dec"])
def test_the_configured_sample_is_the_untuned_trial(variant):
    """A variant whose configured settings win its search runs the very trials of the
    untuned grid (the trial store reuses them), and its samples have keys of their own."""
    cfg = OmegaConf.create(as_dict(make()))  # as the grid makes it (a term's weight is new)
    configured = draw_samples(cfg, {}, variant)[0]
    tuned = with_settings(cfg, knob_settings(cfg, variant, configured))
    assert trial_key(tuned, variant, 0) == trial_key(cfg, variant, 0)
    assert sample_key(tuned, variant, 0) != trial_key(cfg, variant, 0)
