"""Shared helpers: tiny MSD-layout folders written by the tests themselves, and the
command line run in a subprocess."""

from __future__ import annotations

import faulthandler
import json
import os
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from omegaconf import DictConfig

from kdcore.settings import compose_config

REPO = Path(__file__).resolve().parent.parent

# A crash in native code prints every thread's stack, also after pytest's own handler is
# off (pytest turns it back on at exit when it was on before it started).
faulthandler.enable()

# Ray (used by the grid tests) must not ask for auth tokens or usage stats in tests.
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")


_exit_status: list[int] = []


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    _exit_status.append(int(exitstatus))


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config: pytest.Config) -> None:
    """End the process with pytest's status once pytest has finished, skipping the
    interpreter's teardown: one CI run passed every test and then died with a
    segmentation fault there (native code of torch, Ray, onnxruntime or MLflow, all
    loaded in this process; it did not come back in a rerun)."""
    if _exit_status:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(_exit_status[-1])


def run_cli(*args: str, timeout: int = 600, **env_vars: str) -> subprocess.CompletedProcess:
    """``python bench/run.py *args`` from the checkout, with extra environment variables."""
    return subprocess.run(
        [sys.executable, str(REPO / "bench" / "run.py"), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
        env={**os.environ, **env_vars},
    )


def smoke_config(tmp_path: Path, *overrides: str) -> DictConfig:
    """The smoke profile's config, its results and work folders under ``tmp_path``."""
    return compose_config(
        [
            "profile=smoke",
            f"results_dir={tmp_path / 'results'}",
            f"work_dir={tmp_path / 'work'}",
            *overrides,
        ]
    )


TINY_AFFINE = np.diag([1.5, 1.5, 5.0, 1.0])


def write_msd_folder(
    root: Path,
    shapes: list[tuple[int, int, int]],
    label_shapes: list | None = None,
    seed: int = 0,
    *,
    labels: dict[int, np.ndarray] | None = None,
    label_affines: dict[int, np.ndarray] | None = None,
) -> Path:
    """Write a small MSD-layout dataset: HU images with a bright box as the 'spleen'.

    ``labels`` / ``label_affines`` replace the label array / affine of the cases
    (by index) they name; the others get the box label and TINY_AFFINE.
    """
    rng = np.random.default_rng(seed)
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    label_shapes = label_shapes or shapes
    labels, label_affines = labels or {}, label_affines or {}
    training = []
    for i, (shape, lshape) in enumerate(zip(shapes, label_shapes, strict=True)):
        image = rng.normal(40, 10, shape).astype(np.int16)
        label = np.zeros(lshape, np.uint8)
        label[2:6, 3:7, 1:3] = 1
        image[2:6, 3:7, 1:3] += 80
        label = labels.get(i, label)
        affine = TINY_AFFINE
        label_affine = label_affines.get(i, affine)
        nib.save(nib.Nifti1Image(image, affine), root / "imagesTr" / f"case_{i}.nii.gz")
        nib.save(nib.Nifti1Image(label, label_affine), root / "labelsTr" / f"case_{i}.nii.gz")
        training.append(
            {"image": f"./imagesTr/case_{i}.nii.gz", "label": f"./labelsTr/case_{i}.nii.gz"}
        )
    manifest = {"name": "tiny", "labels": {"0": "background", "1": "spleen"}, "training": training}
    (root / "dataset.json").write_text(json.dumps(manifest))
    return root


@pytest.fixture
def tiny_msd(tmp_path: Path) -> Path:
    """Five 16x16x4 volumes in the MSD layout."""
    return write_msd_folder(tmp_path / "tiny_msd", [(16, 16, 4)] * 5)


def write_msd_cases(root: Path, cases: list[tuple[np.ndarray, np.ndarray, np.ndarray]]) -> Path:
    """Write an MSD-layout dataset of the given (image, label, affine) cases, in order.

    Image and label of a case are written with the same 4x4 affine; case ``i`` is
    ``case_{i}.nii.gz``.
    """
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    training = []
    for i, (image, label, affine) in enumerate(cases):
        for folder, array in (("imagesTr", image), ("labelsTr", label)):
            data = np.ascontiguousarray(array)
            nib.save(nib.Nifti1Image(data, affine), root / folder / f"case_{i}.nii.gz")
        training.append(
            {"image": f"./imagesTr/case_{i}.nii.gz", "label": f"./labelsTr/case_{i}.nii.gz"}
        )
    manifest = {"name": "cases", "labels": {"0": "background", "1": "organ"}, "training": training}
    (root / "dataset.json").write_text(json.dumps(manifest))
    return root
