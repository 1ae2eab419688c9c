import errno
import json
import multiprocessing
import os
import pickle
from pathlib import Path

import pytest

from kdcore.errors import DamagedCacheError, RunLockedError, storage_message
from kdcore.io import (
    atomic_dir,
    atomic_path,
    cached_dir,
    replaced_dir,
    run_lock,
    verified_dir,
    verify_dir,
    write_manifest,
    write_text_atomic,
)


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


def test_interrupted_swap_keeps_the_old_table(tmp_path, monkeypatch):
    table = tmp_path / "table"
    with replaced_dir(table) as tmp:
        (tmp / "table.md").write_text("old")
    real_replace = os.replace

    def stop_after_moving_the_old_one_aside(src, dst):
        real_replace(src, dst)
        if "-old-" in Path(dst).name:
            raise KeyboardInterrupt  # a signal between the two renames

    monkeypatch.setattr(os, "replace", stop_after_moving_the_old_one_aside)
    with pytest.raises(KeyboardInterrupt), replaced_dir(table) as tmp:
        (tmp / "table.md").write_text("new")
    monkeypatch.undo()
    assert (table / "table.md").read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["table"]


# ---- verified caches ------------------------------------------------------------------


def _cache(folder):
    with verified_dir(folder) as tmp:
        (tmp / "a.bin").write_bytes(b"abc" * 1000)
        (tmp / "sub").mkdir()
        (tmp / "sub" / "b.txt").write_text("hello")
    return folder


def test_manifest_records_every_file_and_verifies(tmp_path):
    folder = _cache(tmp_path / "c")
    files = json.loads((folder / "manifest.json").read_text())["files"]
    assert sorted(files) == ["a.bin", "sub/b.txt"] and files["a.bin"]["bytes"] == 3000
    verify_dir(folder)
    (folder / "extra").write_text("not listed, not checked")
    verify_dir(folder)


@pytest.mark.parametrize(
    "damage, file, why",
    [
        (lambda f: (f / "a.bin").write_bytes(b"abc"), "a.bin", "3 bytes, expected 3,000"),
        (lambda f: (f / "sub" / "b.txt").write_text("HELLO"), "sub/b.txt", "its sha256 differs"),
        (lambda f: (f / "sub" / "b.txt").unlink(), "sub/b.txt", "missing"),
        (lambda f: (f / "manifest.json").write_text("{"), "manifest.json", "not a valid manifest"),
        (lambda f: (f / "manifest.json").unlink(), "manifest.json", "missing: written by"),
    ],
)
def test_damage_names_the_file_and_why(tmp_path, damage, file, why):
    folder = _cache(tmp_path / "c")
    damage(folder)
    with pytest.raises(DamagedCacheError) as info:
        verify_dir(folder)
    err = info.value
    assert (err.folder, err.file) == (folder, file) and err.why.startswith(why)
    assert err.rebuild_message() == f"rebuilding {folder}: {file} is damaged ({err.why})"


def test_damage_travels_between_processes(tmp_path):
    err = pickle.loads(pickle.dumps(DamagedCacheError(tmp_path, "x.npy", "missing")))
    assert err.rebuild_message() == f"rebuilding {tmp_path}: x.npy is damaged (missing)"


def test_size_only_verification_skips_checksums(tmp_path):
    folder = _cache(tmp_path / "c")
    (folder / "sub" / "b.txt").write_text("HELLO")  # same size, other bytes
    verify_dir(folder, checksums=False)


def test_cached_dir_builds_once_and_rebuilds_damage(tmp_path):
    builds, lines = [], []

    def build(tmp):
        builds.append(tmp)
        (tmp / "x.npy").write_bytes(b"0123456789")

    folder = tmp_path / "c"
    assert cached_dir(folder, build, lines.append) == folder and len(builds) == 1
    cached_dir(folder, build, lines.append)
    assert len(builds) == 1 and lines == []
    (folder / "x.npy").write_bytes(b"01234")
    cached_dir(folder, build, lines.append)
    assert len(builds) == 2 and (folder / "x.npy").read_bytes() == b"0123456789"
    assert lines == [f"rebuilding {folder}: x.npy is damaged (5 bytes, expected 10)"]
    assert [p.name for p in tmp_path.iterdir()] == ["c"]


def test_a_nested_cache_is_left_to_its_own_manifest(tmp_path):
    folder = _cache(tmp_path / "teacher")
    _cache(folder / "outputs")
    files = json.loads(write_manifest(folder).read_text())["files"]
    assert sorted(files) == ["a.bin", "sub/b.txt"]


# ---- disk errors name the file being written --------------------------------------------


def test_full_disk_inside_an_atomic_folder_names_the_file(tmp_path):
    target = tmp_path / "cache" / "slices"
    with pytest.raises(OSError) as info, atomic_dir(target) as tmp:
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp / "images.npy"))
    assert info.value.errno == errno.ENOSPC and info.value.filename == str(target / "images.npy")
    assert storage_message(info.value) == (
        f"no space left on device while writing {target / 'images.npy'}: free space or "
        "choose another results_dir/work_dir"
    )


def test_disk_error_without_a_path_names_the_target(tmp_path):
    target = tmp_path / "table.md"
    with pytest.raises(OSError) as info, atomic_path(target):
        raise OSError(errno.EDQUOT, "Disk quota exceeded")  # what f.write raises
    assert info.value.filename == str(target)
    assert storage_message(info.value).startswith(f"disk quota exceeded while writing {target}")


def test_other_errors_pass_unchanged(tmp_path):
    err = OSError(errno.EIO, "I/O error")
    with pytest.raises(OSError) as info, atomic_path(tmp_path / "t.md"):
        raise err
    assert info.value is err and storage_message(err) is None


# ---- one run per work_dir -----------------------------------------------------------------


def _hold(folder, held, release):
    with run_lock(folder):
        held.set()
        release.wait(60)


def test_a_second_run_on_the_same_work_dir_is_refused(tmp_path):
    ctx = multiprocessing.get_context("spawn")
    held, release = ctx.Event(), ctx.Event()
    other = ctx.Process(target=_hold, args=(tmp_path, held, release))
    other.start()
    try:
        assert held.wait(60)
        with pytest.raises(RunLockedError) as info, run_lock(tmp_path):
            pass
        message = str(info.value)
        assert message.startswith(f"another run holds {tmp_path / 'run.lock'} (pid {other.pid}, ")
        assert message.endswith("): wait for it to finish, or use another work_dir")
        assert "started 20" in message
    finally:
        release.set()
        other.join(60)
    with run_lock(tmp_path) as path:  # released with its holder
        assert json.loads(path.read_text())["pid"] == os.getpid()


def test_a_killed_run_leaves_no_stale_lock(tmp_path):
    ctx = multiprocessing.get_context("spawn")
    held, release = ctx.Event(), ctx.Event()
    other = ctx.Process(target=_hold, args=(tmp_path, held, release))
    other.start()
    assert held.wait(60)
    other.kill()
    other.join(60)
    with run_lock(tmp_path):
        pass


def test_the_lock_is_held_against_another_descriptor_in_the_same_process(tmp_path):
    with run_lock(tmp_path), pytest.raises(RunLockedError, match=f"pid {os.getpid()}"):
        with run_lock(tmp_path):
            pass
