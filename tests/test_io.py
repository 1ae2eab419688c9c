import pytest

from kdcore.io import atomic_dir, atomic_path, write_text_atomic


def test_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "table.csv"
    write_text_atomic(target, "old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        assert tmp.name.endswith(".csv")
        tmp.write_text("half")
        raise RuntimeError("interrupted")
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["table.csv"]


def test_folder_appears_whole_or_not_at_all(tmp_path):
    with pytest.raises(RuntimeError), atomic_dir(tmp_path / "cache") as tmp:
        (tmp / "a.npy").write_text("x")
        raise RuntimeError("interrupted")
    assert not list(tmp_path.iterdir())
    with atomic_dir(tmp_path / "cache") as tmp:
        (tmp / "a.npy").write_text("x")
    assert [p.name for p in tmp_path.iterdir()] == ["cache"]
