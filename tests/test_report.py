import importlib.util
import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from kdcore.io import replaced_dir
from kdcore.provenance import git_commit
from kdcore.report import render_report, thesis_rows, time_line
from kdcore.summary import CLIPPED_NOTE, summarize, summary_markdown
from kdcore.table_folder import read_examples, write_examples, write_index, write_table
from tests.conftest import REPO


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
        best_step=16,
        steps=32,
        stopped_early=False,
        val_slope=0.1,
        late_gain=0.2,
        converged=True,
        machine="CPU (AVX2), 2 cores",
        trained="2026-12-02 10:00:00 UTC",
        commit="abc",
        reused=False,
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


def test_report_modules_import_no_torch():
    modules = "kdcore.report, kdcore.summary, kdcore.table_folder, kdcore.provenance"
    code = f"import sys, {modules}; print('torch' in sys.modules, 'ray' in sys.modules)"
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
    assert "60 s for the 6 trials it trained, 2 at a time: 20.0 s of a slot per trial" in line
    trials.loc[:1, "reused"] = True  # reused trials took no slot of this grid
    line = time_line(trials, histories, grid_s=60.0, slots=2)
    assert "60 s for the 4 trials it trained, 2 at a time: 30.0 s of a slot per trial" in line


def test_metric_intervals_are_clipped_to_zero_one_and_marked():
    t = trials()
    t.loc[t["variant"] == "baseline", "recall"] = [0.99, 0.999, 0.90]  # t-interval above 1
    s = summarize(t, cases()).set_index("variant")
    assert s.loc["baseline", "recall_high"] == 1.0 and s.loc["baseline", "recall_clipped"]
    # the lower bound is the t-interval's own: mean 0.963, s = sqrt(0.005994 / 2),
    # half-width 4.302653 * s / sqrt(3) = 0.13599
    assert s.loc["baseline", "recall_low"] == pytest.approx(0.963 - 0.13599, abs=1e-5)
    assert not s.loc["baseline", "dice_clipped"]
    table = summary_markdown(summarize(t, cases()))
    assert "0.963 [0.827, 1.000]†" in table and CLIPPED_NOTE in table
    assert CLIPPED_NOTE not in summary_markdown(summarize(trials(), cases()))


def test_a_dice_difference_interval_stays_within_100_points():
    t = trials()
    t.loc[t["variant"] == "baseline", "dice"] = [0.0, 0.0, 0.5]
    t.loc[t["variant"] == "pmd", "dice"] = [1.0, 1.0, 0.6]
    s = summarize(t, cases()).set_index("variant")
    # differences 100, 100, 10: mean 70, s = sqrt(2700), half-width 4.302653 * 30
    assert s.loc["pmd", "delta"] == pytest.approx(70.0)
    assert s.loc["pmd", "delta_low"] == pytest.approx(70 - 4.302653 * 30, rel=1e-6)
    assert s.loc["pmd", "delta_high"] == 100.0 and s.loc["pmd", "delta_clipped"]


def _steps() -> tuple[pd.DataFrame, pd.DataFrame]:
    """Two steps: a slice split whose test slices come from 40 patients, and a patient
    split with 16 test patients."""
    rows, counts = [], []
    for step, split, patients in (("0 thesis", "slice", 40), ("1 + split", "patient", 16)):
        rows.append(_full_trials().assign(step=step, split=split, student="S1", teacher="T1"))
        for variant in ("baseline", "pmd"):
            for seed in range(3):
                for case in range(patients):
                    counts.append(
                        {"step": step, "variant": variant, "seed": seed, "case": f"p{case}"}
                        | {"tp": 50 + 10 * (variant == "pmd") + seed, "fp": 5, "fn": 20}
                    )
    return pd.concat(rows, ignore_index=True), pd.DataFrame(counts)


def _teacher(cells: list[dict], dice: float) -> dict:
    test = {"dice": dice, "iou": 0.9, "recall": 0.95, "precision": 0.97, "dice_3d": 0.96}
    return {"name": "T1(w16,d4)", "params": 2_707_380, "test": test, "best_epoch": 14} | {
        "cells": cells
    }


def _render(trials, cases, axes, teachers, reference=None, rerendered=()) -> str:
    return render_report(
        "decomposition: x",
        summarize(trials, cases, axes),
        trials,
        cases,
        axes,
        teachers,
        "phantom CT, standard (40 patients, seed 0), SLICE split (leaky, as the thesis), 64x64",
        "Replicates differ in initialisation.",
        "Protocol: THESIS, which departs.",
        "python bench/run.py ablation=decomposition",
        "seeds: [0, 1, 2]\n",
        "abc123",
        "2026-11-26 16:26:13 UTC",
        reference,
        ["decomposition.png", "examples.png"],
        ["- Time per trial (mean seconds): data 0.0", ""],
        rerendered,
    )


def test_the_report_says_per_cell_what_its_split_made_of_test_and_training():
    trials, counts = _steps()
    teachers = [
        _teacher([{"step": "0 thesis"}], 0.972),
        _teacher([{"step": "1 + split"}], 0.969),
    ]
    lines = _render(trials, counts, ["step"], teachers).splitlines()
    assert "- Dataset: phantom CT, standard (40 patients, seed 0), 64x64" in lines
    assert (
        "  - the test slices of 40 patients, whose other slices were in training (slice "
        "split): step=0 thesis" in lines
    )
    assert "  - 16 test patients: step=1 + split" in lines
    assert "  - 50% of the training slices: step=0 thesis" in lines
    assert "  - 50% of the training patients: step=1 + split" in lines
    slice_teacher, patient_teacher = (line for line in lines if line.startswith("- Teacher"))
    assert slice_teacher.startswith(
        "- Teacher (for step=0 thesis): T1(w16,d4), 2,707,380 parameters, trained on the "
        "training slices, drawn from the same 40 patients as the test slices (slice split); "
        "test Dice 0.972"
    )
    assert "trained on all training patients (none of the test patients); test Dice 0.969" in (
        patient_teacher
    )
    # one split for every cell: one line each
    one = trials[trials["step"] == "1 + split"]
    lines = _render(one, counts[counts["step"] == "1 + split"], ["step"], teachers[1:])
    assert "- Test set: 16 test patients\n" in lines
    assert "- Student: S1 (1 parameters), trained on 50% of the training patients\n" in lines


def test_the_reference_rows_are_marked_with_their_published_dice():
    trials, counts = _steps()
    trials["variant"] = trials["variant"].replace({"pmd": "kd-T1S1"})
    counts["variant"] = counts["variant"].replace({"pmd": "kd-T1S1"})
    reference = {
        "source": "Published: Table 4.2.",
        "rows": [
            {"method": "S1: U-Net-S", "dice": 0.715},
            {"method": "KD(T1,S1)", "dice": 0.772},
            {"method": "KD(T2,S1)", "dice": 0.767},
        ],
    }
    summary = summarize(trials, counts, ["step"])
    marks = thesis_rows(summary, trials, ["step"], reference)
    assert marks == ["S1: 0.715", "KD(T1,S1): 0.772"] * 2
    other = trials.assign(teacher="T2(w8,h128,L4)")  # the same variant under another teacher
    assert thesis_rows(summary, other, ["step"], reference) == ["S1: 0.715", ""] * 2
    report = _render(trials, counts, ["step"], [_teacher([], 0.97)], reference)
    assert "| 0 thesis  | **kd-T1S1**  |" in report and "| KD(T1,S1): 0.772 " in report
    assert "- Rows in bold are the published table's own rows" in report
    assert "published dice" not in _render(trials, counts, ["step"], [_teacher([], 0.97)])


def _rerender_module():
    spec = importlib.util.spec_from_file_location("rerender", REPO / "bench" / "rerender.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _committed_table(folder, trials, counts, axes, teachers) -> None:
    markdown = _render(trials, counts, axes, teachers)
    provenance = {
        "ablation": "decomposition",
        # as the grid records a bundle axis: each step's settings with its label
        "axes": {a: [{"label": v} for v in trials[a].unique()] for a in axes},
        "dataset": "phantom CT, standard (40 patients, seed 0), SLICE split (leaky, as the "
        "thesis), 64x64",
        "trials": len(trials),
        "command": "python bench/run.py ablation=decomposition",
        "commit": "abc123",
        "written": "2026-11-26 16:26:13 UTC",
        "config": {"reference_table": None},
    }
    histories = {"a.csv": [{"epoch": 1, "train_s": 1.0}]}
    with replaced_dir(folder) as tmp:
        write_table(tmp, trials, histories, counts, markdown, provenance, axes)
        (tmp / "examples.png").write_bytes(b"committed examples")


def test_rerender_redraws_from_the_trial_data_and_keeps_the_provenance(tmp_path):
    rerender = _rerender_module()
    trials, counts = _steps()
    teachers = [_teacher([{"step": "0 thesis"}], 0.972), _teacher([{"step": "1 + split"}], 0.9)]
    folder = tmp_path / "results" / "decomposition" / "t"
    _committed_table(folder, trials, counts, ["step"], teachers)
    parsed = rerender.teachers_of((folder / "table.md").read_text())
    assert parsed == teachers  # the teacher lines read back
    before = (folder / "table.md").read_text()
    rerender.rerender(folder, "def456", "2026-12-01 10:00:00 UTC")
    after = (folder / "table.md").read_text()
    line = (
        "Re-rendered at def456 on 2026-12-01 10:00:00 UTC by bench/rerender.py from the "
        "committed trial data"
    )
    assert f"- Git commit: abc123\n- Written: 2026-11-26 16:26:13 UTC\n- {line}\n" in after
    assert after.replace(f"- {line}\n", "") == before  # nothing else changed
    provenance = json.loads((folder / "provenance.json").read_text())
    assert provenance["commit"] == "abc123" and provenance["rerendered"] == [line]
    assert (folder / "decomposition.png").stat().st_size > 5_000
    # no stored predictions: the committed examples.png is kept as it was
    assert (folder / "examples.png").read_bytes() == b"committed examples"
    # with examples.npz the examples figure is drawn again, and a second line is added
    images = np.zeros((2, 16, 16))
    truth = np.zeros((2, 16, 16), dtype=bool)
    write_examples(folder, images, truth, {"teacher": truth}, {"step": "0 thesis"})
    rerender.rerender(folder, "0a0b0c", "2026-12-02 10:00:00 UTC")
    assert (folder / "examples.png").read_bytes()[:4] == b"\x89PNG"
    assert len(json.loads((folder / "provenance.json").read_text())["rerendered"]) == 2
    assert "](examples.png)" in (folder / "table.md").read_text()


def test_examples_are_stored_and_read_back_in_order(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.random((3, 8, 8)).astype(np.float32)
    truth = rng.random((3, 8, 8)) > 0.5
    predictions = {"teacher": truth, "baseline": ~truth, "bottleneck+pmd": truth & False}
    path = write_examples(tmp_path, images, truth, predictions, {"student.width": 16}, "abc")
    back = read_examples(path)
    assert list(back["predictions"]) == ["teacher", "baseline", "bottleneck+pmd"]
    assert np.array_equal(back["images"], images) and np.array_equal(back["truth"], truth)
    assert np.array_equal(back["predictions"]["baseline"], ~truth)
    assert back["cell"] == {"student.width": 16} and back["titles"] == ["a", "b", "c"]
    assert read_examples(write_examples(tmp_path, images, truth, {}))["titles"] is None


def test_a_command_with_a_newline_stays_in_one_table_cell():
    from kdcore.rows import one_line

    assert (
        one_line("python bench/run.py 'work_dir=/a\nb'") == "python bench/run.py 'work_dir=/a\\nb'"
    )
    assert one_line("données") == "données"
