import pandas as pd
import pytest

from kdcore.report import git_commit, summarize, summary_markdown, write_tables


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


def test_tables_are_written_whole_without_leftovers(tmp_path):
    df = trials().assign(
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
    paths = write_tables(tmp_path / "out", "ablation_x", df, "# report\n")
    assert [p.name for p in paths] == ["ablation_x.csv", "ablation_x.md"]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "ablation_x.csv",
        "ablation_x.md",
    ]
    assert len(pd.read_csv(paths[0])) == 4


def test_commit_can_be_given_outside_a_checkout(monkeypatch, tmp_path):
    monkeypatch.setenv("KDBENCH_GIT_COMMIT", "abc123")
    assert git_commit(tmp_path).startswith("abc123")
    monkeypatch.delenv("KDBENCH_GIT_COMMIT")
    assert git_commit(tmp_path).startswith("unknown")
