import json
import subprocess
import sys

import pandas as pd
import pytest

from kdcore.report import git_commit, summarize, summary_markdown, write_index, write_table


def trials() -> pd.DataFrame:
    rows = []
    for variant, dices in {"baseline": [0.70, 0.80], "pmd": [0.77, 0.85]}.items():
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


def test_summary_is_mean_and_sample_std_with_change_against_baseline():
    s = summarize(trials())
    assert list(s.index) == ["baseline", "pmd"]
    assert s.loc["baseline", "dice_mean"] == pytest.approx(0.75)
    assert s.loc["baseline", "dice_std"] == pytest.approx(0.0707107, rel=1e-5)
    assert s.loc["pmd", "delta_dice_pts"] == pytest.approx(6.0)
    assert s.loc["pmd", "delta_dice_rel"] == pytest.approx(8.0)
    table = summary_markdown(s)
    assert "0.750 ± 0.071" in table and "+6.00 pts (+8.0%)" in table


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
    )


def _provenance(command: str, written: str) -> dict:
    return {"ablation": "x", "trials": 4, "command": command, "commit": "abc", "written": written}


def test_a_table_folder_is_written_whole_and_replaces_only_itself(tmp_path):
    histories = {("baseline", 0): [{"epoch": 1, "train_loss": 0.5, "loss_seg": 1.25}]}
    folder = tmp_path / "out" / "x" / "quick-a"
    paths = write_table(folder, _full_trials(), histories, "# report\n", _provenance("a", "1"))
    assert [p.name for p in paths] == ["table.md", "trials.csv"]
    assert sorted(p.name for p in folder.iterdir()) == [
        "history",
        "provenance.json",
        "table.md",
        "trials.csv",
    ]
    assert len(pd.read_csv(paths[1])) == 4
    history = pd.read_csv(folder / "history" / "baseline-seed0.csv")
    assert list(history.columns) == ["epoch", "train_loss", "loss_seg"]
    # a rerun replaces the folder; a table of other settings beside it is untouched
    beside = tmp_path / "out" / "x" / "quick-b"
    write_table(beside, _full_trials(), {}, "# other\n", _provenance("b", "2"))
    write_table(folder, _full_trials(), {}, "# again\n", _provenance("a", "3"))
    assert (folder / "table.md").read_text() == "# again\n"
    assert not (folder / "history" / "baseline-seed0.csv").exists()
    assert (beside / "table.md").read_text() == "# other\n"
    assert sorted(p.name for p in (tmp_path / "out" / "x").iterdir()) == ["quick-a", "quick-b"]
    index = write_index(tmp_path / "out").read_text()
    assert index.index("x/quick-a") < index.index("x/quick-b")  # newest first
    assert "`a`" in index and "`b`" in index


def test_a_failed_write_keeps_the_old_table(tmp_path):
    folder = tmp_path / "x" / "t"
    write_table(folder, _full_trials(), {}, "# old\n", _provenance("a", "1"))
    with pytest.raises(KeyError):
        write_table(folder, _full_trials().drop(columns="tp"), {}, "# new\n", {})
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
