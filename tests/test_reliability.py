"""Damaged files and hostile conditions end in one clear message (or, for a damaged
cache, a rebuild that says so): never a traceback, never exit 0 with a meaningless table.

Classes: a case listed twice; labels without foreground; a damaged cache; a download
without network; a second run on the same work_dir; SIGTERM mid-grid; a full disk.
Each is tested in-process; the command line's exit status is checked once per class.
"""

from __future__ import annotations

import errno
import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile

import numpy as np
import pytest

from kdcore.data.prepare import prepare_data
from kdcore.data.splits import make_splits
from kdcore.errors import ConfigError, KDBenchError, RunLockedError
from kdcore.io import run_lock
from tests.conftest import REPO, run_cli, smoke_config, write_msd_folder

BAD_INPUT, DISK_ERROR, SIGTERM_STATUS = 2, 74, 128 + signal.SIGTERM


def config(tmp_path, *overrides: str):
    return smoke_config(tmp_path, *overrides)


def msd(root, n: int = 5, empty: tuple[int, ...] = ()):
    """``n`` tiny 16x16x4 cases; the labels of the cases in ``empty`` hold no organ."""
    labels = {i: np.zeros((16, 16, 4), np.uint8) for i in empty}
    return write_msd_folder(root, [(16, 16, 4)] * n, labels=labels)


def on_msd(root) -> list[str]:
    return ["data=msd_spleen", f"data.root={root}", "image_size=16"]


def assert_one_clear_error(proc: subprocess.CompletedProcess, status: int, message: str):
    assert proc.returncode == status, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "Traceback" not in proc.stdout + proc.stderr
    assert message in proc.stderr
    assert len([line for line in proc.stderr.splitlines() if line.strip()]) == 1, proc.stderr


def assert_no_table(tmp_path):
    results = tmp_path / "results"
    assert not results.exists() or not any(results.iterdir())


# ---- 1. a case listed twice -----------------------------------------------------------


def listed_twice(tmp_path):
    root = msd(tmp_path / "msd")
    manifest = json.loads((root / "dataset.json").read_text())
    manifest["training"].append(dict(manifest["training"][3]))
    (root / "dataset.json").write_text(json.dumps(manifest))
    return root


def test_a_case_listed_twice_is_refused(tmp_path):
    with pytest.raises(ConfigError) as info:
        prepare_data(config(tmp_path, *on_msd(listed_twice(tmp_path))), lambda _: None)
    message = str(info.value)
    assert "lists the same image twice: training[3] (./imagesTr/case_3.nii.gz)" in message
    assert "training[5] (./imagesTr/case_3.nii.gz)" in message


def test_a_case_listed_twice_on_the_command_line(tmp_path):
    root = listed_twice(tmp_path)
    proc = run_cli(
        *on_msd(root),
        "profile=smoke",
        f"results_dir={tmp_path / 'results'}",
        f"work_dir={tmp_path / 'work'}",  # not the checkout's own work_dir
    )
    assert_one_clear_error(proc, BAD_INPUT, "lists the same image twice")
    assert_no_table(tmp_path)


# ---- 2. labels without foreground -----------------------------------------------------


def test_labels_without_any_foreground_are_refused(tmp_path):
    root = msd(tmp_path / "msd", empty=tuple(range(5)))
    with pytest.raises(ConfigError) as info:
        prepare_data(config(tmp_path, *on_msd(root)), lambda _: None)
    assert str(info.value).startswith(f"no label of {root} has a foreground voxel")
    assert "data.foreground=[1]" in str(info.value)


def test_a_test_split_without_foreground_is_refused(tmp_path):
    cfg = config(tmp_path, "split_seed=4")
    (test_case,) = make_splits(np.arange(5), "patient", 4, cfg.val_fraction, cfg.test_fraction).test
    root = msd(tmp_path / "msd", empty=(int(test_case),))
    with pytest.raises(ConfigError) as info:
        prepare_data(config(tmp_path, "split_seed=4", *on_msd(root)), lambda _: None)
    assert str(info.value).startswith(
        f"the test split (1 patient: case_{test_case}) has no foreground voxel: its metrics "
        "would be undefined; use another split_seed"
    )


def test_labels_without_foreground_on_the_command_line(tmp_path):
    root = msd(tmp_path / "msd", empty=tuple(range(5)))
    proc = run_cli(
        *on_msd(root),
        "profile=smoke",
        f"results_dir={tmp_path / 'results'}",
        f"work_dir={tmp_path / 'work'}",  # not the checkout's own work_dir
    )
    assert_one_clear_error(proc, BAD_INPUT, "has a foreground voxel")
    assert_no_table(tmp_path)


# ---- 3. a damaged cache ---------------------------------------------------------------


def test_a_truncated_slice_cache_is_rebuilt_and_says_so(tmp_path):
    cfg = config(tmp_path, *on_msd(msd(tmp_path / "msd")))
    data, _ = prepare_data(cfg, lambda _: None)
    images = np.array(data.images)
    folder = tmp_path / "work" / "cache" / "slices" / data.key
    damaged = folder / "images.npy"
    size = damaged.stat().st_size
    os.truncate(damaged, size - 100)  # what a full disk or a killed copy leaves
    lines = []
    again, _ = prepare_data(cfg, lines.append)
    assert f"rebuilding {folder}: images.npy is damaged ({size - 100:,} bytes, expected " in (
        "\n".join(lines)
    )
    assert np.array_equal(np.asarray(again.images), images)


# ---- 4. a download without network ----------------------------------------------------


def test_an_offline_download_cleans_up_and_says_how_to_place_the_data(tmp_path, monkeypatch):
    import monai.apps

    def offline(**_):
        raise OSError("<urlopen error [Errno -3] Temporary failure in name resolution>")

    monkeypatch.setattr(monai.apps, "download_and_extract", offline)
    root = tmp_path / "msd"
    cfg = config(tmp_path, "data=msd_spleen", f"data.root={root}", "data.download=true")
    with pytest.raises(ConfigError) as info:
        prepare_data(cfg, lambda _: None)
    message = str(info.value)
    assert "failed: <urlopen error [Errno -3] Temporary failure in name resolution>" in message
    assert "Place the data by hand" in message and not root.exists()


# ---- 5. a second run on the same work_dir ---------------------------------------------


def test_a_held_lock_is_an_error_the_command_line_reports(tmp_path):
    with run_lock(tmp_path / "work"), pytest.raises(RunLockedError) as info:
        with run_lock(tmp_path / "work"):
            pass
    assert isinstance(info.value, KDBenchError)  # one line on stderr, exit status 2
    assert "use another work_dir" in str(info.value)


# ---- 6. SIGTERM mid-grid --------------------------------------------------------------


@pytest.mark.slow  # about a minute: Ray starts and the trials begin first
def test_sigterm_mid_grid_says_how_to_resume(tmp_path):
    ray_tmp = tempfile.mkdtemp(prefix="kdray")  # short: Ray's socket paths must be
    args = [
        sys.executable,
        str(REPO / "bench" / "run.py"),
        "profile=smoke",
        "variants=[baseline]",  # no teacher: the grid starts at once
        "seeds=[0,1]",
        f"results_dir={tmp_path / 'results'}",
        f"work_dir={tmp_path / 'work'}",
    ]
    env = {**os.environ, "RAY_TMPDIR": ray_tmp}
    with open(tmp_path / "stderr.txt", "w") as stderr:  # a file: a full pipe would block
        proc = subprocess.Popen(
            args, stdout=subprocess.PIPE, stderr=stderr, text=True, cwd=REPO, env=env
        )
        try:
            for line in proc.stdout:
                if "trial started" in line:
                    break
            assert proc.poll() is None, "the run ended before the signal"
            proc.send_signal(signal.SIGTERM)
            out, _ = proc.communicate(timeout=120)
        finally:
            if proc.poll() is None:
                proc.kill()
            shutil.rmtree(ray_tmp, ignore_errors=True)
    err = (tmp_path / "stderr.txt").read_text()
    assert proc.returncode == SIGTERM_STATUS, out[-2000:] + err[-2000:]
    assert err.splitlines()[-1] == "interrupted: run the same command again to resume"
    assert "Traceback" not in out + err
    assert_no_table(tmp_path)


# ---- 7. a full disk -------------------------------------------------------------------


def _full_disk(*_args, **_kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")  # a write() names no file


def test_a_full_disk_names_the_path_in_one_line(tmp_path, monkeypatch, capsys):
    spec = importlib.util.spec_from_file_location("bench_run", REPO / "bench" / "run.py")
    run = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(run)
    cfg = config(tmp_path, *on_msd(msd(tmp_path / "msd")))
    monkeypatch.setattr(np, "save", _full_disk)
    with pytest.raises(SystemExit) as stop:
        run.main(cfg)  # Hydra passes a given config straight to the job
    assert stop.value.code == DISK_ERROR
    err = capsys.readouterr().err
    slices = tmp_path / "work" / "cache" / "slices"
    assert not any(slices.iterdir())  # the half-written cache was removed
    assert err.startswith(f"error: no space left on device while writing {slices}/")
    assert err.rstrip().endswith(": free space or choose another results_dir/work_dir")
    assert len(err.strip().splitlines()) == 1


def test_a_full_disk_on_the_command_line(tmp_path):
    code = "\n".join(
        [
            "import errno, runpy, numpy",
            "def full(*a, **k): raise OSError(errno.ENOSPC, 'No space left on device')",
            "numpy.save = full",
            f"runpy.run_path({str(REPO / 'bench' / 'run.py')!r}, run_name='__main__')",
        ]
    )
    root = msd(tmp_path / "msd")
    proc = subprocess.run(
        [sys.executable, "-c", code, "profile=smoke", *on_msd(root), f"work_dir={tmp_path / 'w'}"],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=REPO,
    )
    assert_one_clear_error(proc, DISK_ERROR, "no space left on device while writing")
