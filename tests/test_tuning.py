"""Equal tuning: each variant's knobs, and the choice of the best sample."""

from hydra import compose, initialize_config_dir

from kdcore.tuning import cell_key, choose, knob_settings, search_space
from tests.conftest import REPO


def make(*overrides: str):
    with initialize_config_dir(str(REPO / "configs"), version_base="1.3"):
        return compose("config", overrides=list(overrides))


def test_each_variant_tunes_its_own_knobs():
    cfg = make("variants=[baseline,pmd,at:at@enc+at@dec,enc+bottleneck]")
    space = search_space(cfg)
    assert set(space["weights"]) == {"pmd", "at@enc", "at@dec", "enc", "bottleneck"}
    assert set(space["temperatures"]) == {"pmd_temperature", "temperature"}
    knobs = {
        "lr": 2.0,
        "weights": dict.fromkeys(space["weights"], 0.5),
        "temperatures": dict.fromkeys(space["temperatures"], 1.5),
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


def test_the_best_validation_sample_of_each_variant_is_chosen():
    cell = {"data_fraction": 0.5}
    samples = [
        {"cell": cell, "variant": "pmd", "val_dice": 0.7, "settings": {"a": 1}},
        {"cell": cell, "variant": "pmd", "val_dice": 0.8, "settings": {"a": 2}},
        {"cell": cell, "variant": "pmd", "val_dice": 0.8, "settings": {"a": 3}},  # a tie
        {"cell": cell, "variant": "baseline", "val_dice": -1.0, "settings": {"a": 4}},
    ]
    best = choose(samples)
    assert best[cell_key(cell, "pmd")] == {"settings": {"a": 2}, "val_dice": 0.8, "trials": 3}
    assert best[cell_key(cell, "baseline")]["settings"] == {"a": 4}  # all diverged
