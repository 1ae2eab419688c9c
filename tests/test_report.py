import json
import subprocess
import sys

import pandas as pd
import pytest

from kdcore.io import replaced_dir
from kdcore.provenance import git_commit
from kdcore.report import time_line
from kdcore.summary import summarize, summary_markdown
from kdcore.table_folder import write_index, write_table


def trials() -> pd.DataFrame:
    rows = []
    for variant, dices in {"baseline": [0.70, 0.80, 0.75], "pmd": [0.77, 0.85, 0.78]}.items():
        for seed, d in enumerate(dices):
            rows.append(
                {
                    "variant": variant,
                    "seed": seed,
                    "dice": d,
                    "iou": d - 0.1,
                    "recall": d,
                    "precision": d,
                    "dice_3d": d,
                    "wall_s": 10.0,
                }
            )
    return pd.DataFrame(rows)


def cases() -> pd.DataFrame:
    """Two test patients per trial; pmd finds more of each organ than the baseline."""
    rows = []
    for variant, tp in {"baseline": 60, "pmd": 80}.items():
        for seed in range(3):
            for case, size in (("a", 100), ("b", 120)):
                rows.append(
                    {
                        "variant": variant,
                        "seed": seed,
                        "case": case,
                        "tp": tp + seed,
                        "fp": 10,
                        "fn": size - tp - seed,
                    }
                )
    return pd.DataFrame(rows)


def test_summary_has_intervals_and_the_paired_difference_from_the_baseline():
    s = summarize(trials(), cases()).set_index("variant")
    # baseline dice 0.70, 0.80, 0.75: mean 0.75, s = 0.05, half-width 4.302653 * 0.05 / sqrt(3)
    assert s.loc["baseline", "dice_mean"] == pytest.approx(0.75)
    half = 4.302653 * 0.05 / 3**0.5
    assert s.loc["baseline", "dice_low"] == pytest.approx(0.75 - half, rel=1e-5)
    assert s.loc["baseline", "dice_high"] == pytest.approx(0.75 + half, rel=1e-5)
    # paired differences 7, 5, 3 points: mean 5, s = 2, half-width 4.302653 * 2 / sqrt(3)
    assert s.loc["pmd", "delta"] == pytest.approx(5.0)
    assert s.loc["pmd", "delta_low"] == pytest.approx(5 - 4.302653 * 2 / 3**0.5, rel=1e-5)
    assert s.loc["pmd", "wins"] == 3 and s.loc["pmd", "p_holm"] == s.loc["pmd", "p"]
    # every resample of patients favours pmd: the bootstrap interval lies above zero
    assert 0 < s.loc["pmd", "boot_low"] < s.loc["pmd", "boot_high"]
    assert s.loc["pmd", "verdict"] == "gain"
    table = summary_markdown(summarize(trials(), cases()))
    assert "0.750 [0.626, 0.874]" in table and "+5.00 [+0.03, +9.97]" in table
    assert "3/3" in table


def test_summary_compares_within_each_cell_of_an_axis():
    both = pd.concat([trials().assign(data_fraction=f) for f in (0.5, 1.0)])
    counts = pd.concat([cases().assign(data_fraction=f) for f in (0.5, 1.0)])
    both.loc[(both["data_fraction"] == 1.0) & (both["variant"] == "pmd"), "dice"] -= 0.10
    s = summarize(both, counts, ["data_fraction"])
    assert list(zip(s["data_fraction"], s["variant"], strict=True)) == [
        (0.5, "baseline"),
        (0.5, "pmd"),
        (1.0, "baseline"),
        (1.0, "pmd"),
    ]
    assert s["delta"].iloc[1] == pytest.approx(5.0) and s["delta"].iloc[3] == pytest.approx(-5.0)


def _full_trials() -> pd.DataFrame:
    return trials().assign(
        teacher="T",
        student="S1",
        params=1,
        data_fraction=0.5,
        split="patient",
        tp=1,
        fp=0,
        fn=0,
        val_dice=0.5,
        best_epoch=1,
        objective="0.4*seg",
        data_s=0.5,
        fit_s=8.0,
        checkpoint_s=0.2,
        trial_s=10.5,
        node="0a1b2c3d",
    )


def _provenance(command: str, written: str) -> dict:
    return {"ablation": "x", "trials": 4, "command": command, "commit": "abc", "written": written}


def _write(folder, trials, histories, markdown, provenance):
    """As the job writes a table: built aside, swapped in whole."""
    with replaced_dir(folder) as tmp:
        write_table(tmp, trials, histories, cases(), markdown, provenance)


def test_a_table_folder_is_written_whole_and_replaces_only_itself(tmp_path):
    histories = {"baseline-seed0.csv": [{"epoch": 1, "train_loss": 0.5, "loss_seg": 1.25}]}
    folder = tmp_path / "out" / "x" / "quick-a"
    _write(folder, _full_trials(), histories, "# report\n", _provenance("a", "1"))
    assert sorted(p.name for p in folder.iterdir()) == [
        "cases.csv",
        "history",
        "provenance.json",
        "table.md",
        "trials.csv",
    ]
    assert len(pd.read_csv(folder / "trials.csv")) == 6
    assert len(pd.read_csv(folder / "cases.csv")) == 12
    history = pd.read_csv(folder / "history" / "baseline-seed0.csv")
    assert list(history.columns) == ["epoch", "train_loss", "loss_seg"]
    # a rerun replaces the folder; a table of other settings beside it is untouched
    beside = tmp_path / "out" / "x" / "quick-b"
    _write(beside, _full_trials(), {}, "# other\n", _provenance("b", "2"))
    _write(folder, _full_trials(), {}, "# again\n", _provenance("a", "3"))
    assert (folder / "table.md").read_text() == "# again\n"
    assert not (folder / "history" / "baseline-seed0.csv").exists()
    assert (beside / "table.md").read_text() == "# other\n"
    assert sorted(p.name for p in (tmp_path / "out" / "x").iterdir()) == ["quick-a", "quick-b"]
    index = write_index(tmp_path / "out").read_text()
    assert index.index("x/quick-a") < index.index("x/quick-b")  # newest first
    assert "`a`" in index and "`b`" in index


def test_a_failed_write_keeps_the_old_table(tmp_path):
    folder = tmp_path / "x" / "t"
    _write(folder, _full_trials(), {}, "# old\n", _provenance("a", "1"))
    with pytest.raises(KeyError):
        _write(folder, _full_trials().drop(columns="tp"), {}, "# new\n", {})
    assert (folder / "table.md").read_text() == "# old\n"
    assert json.loads((folder / "provenance.json").read_text())["command"] == "a"
    assert sorted(p.name for p in folder.parent.iterdir()) == ["t"]


def test_report_module_imports_no_torch():
    code = "import sys, kdcore.report; print('torch' in sys.modules, 'ray' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


def test_commit_can_be_given_outside_a_checkout(monkeypatch, tmp_path):
    monkeypatch.setenv("KDBENCH_GIT_COMMIT", "abc123")
    assert git_commit(tmp_path).startswith("abc123")
    monkeypatch.delenv("KDBENCH_GIT_COMMIT")
    assert git_commit(tmp_path).startswith("unknown")


def test_time_line_splits_a_trial_into_its_parts():
    trials = _full_trials()
    histories = {"a.csv": [{"train_s": 2.0}, {"train_s": 3.0}], "b.csv": [{"train_s": 5.0}]}
    line = time_line(trials, histories, grid_s=60.0, slots=2)
    # steps 5 of fit 8 -> validation 3; wall 10 - data 0.5 - fit 8 -> models and test 1.5
    assert "data 0.5, training steps 5.0, validation 3.0, checkpoints 0.2" in line
    assert "models and test 1.5" in line and "as Ray Tune measured it 10.5" in line
    assert "60 s for 6 trials, 2 at a time: 20.0 s of a slot per trial" in line
