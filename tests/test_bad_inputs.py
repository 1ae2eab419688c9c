"""Every class of bad input gives one clear error: a ConfigError (a KDBenchError) with a
one-line message that names the problem, and nothing written to results_dir.

Classes: config values (ranges, types, enumerations, cross-key rules), overrides Hydra
refuses, the machine (results_dir, device, Ray address, Ray's CPUs), data files, and
training that goes non-finite.

Most cases are checked in-process, as ``bench/run.py`` would meet them: the config
composed by Hydra, then the gate (``check_config``), or the job (``run_job``) for the
data files, which the data stage reads. One case per class also runs the command line in
a subprocess, for what only it shows: exit status 2, the message on stderr as a single
``error:`` line, and no traceback. The cases that need Ray (the cluster's CPUs, a trial
whose loss goes non-finite) run only there.
"""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from hydra.errors import HydraException

from kdcore import run_job
from kdcore.errors import KDBenchError
from kdcore.gate import check_config
from kdcore.settings import compose_config
from tests.conftest import TINY_AFFINE, run_cli, write_msd_folder

BAD_INPUT = 2


# ---- config values: checked before any work starts ------------------------------------
CONFIG = {
    "temperature zero": (["kd.temperature=0"], "kd.temperature must be a number > 0, got 0"),
    "negative KD weight": (["kd.weights.pmd=-0.2"], "kd.weights.pmd must be a number >= 0"),
    "student width zero": (["student.width=0"], "student.width must be an integer >= 1"),
    "teacher width not an integer": (["teacher.width=8.5"], "teacher.width must be an integer"),
    "negative learning rate": (["student.fit.lr=-1"], "student.fit.lr must be a number > 0"),
    "zero epochs": (["teacher.fit.epochs=0"], "teacher.fit.epochs must be an integer >= 1"),
    "fraction zero": (["data_fraction=0"], "data_fraction must be a number in (0, 1]"),
    "fraction above one": (["data_fraction=1.5"], "data_fraction must be a number in (0, 1]"),
    "fraction not a number": (["data_fraction=half"], "data_fraction must be a number in (0, 1]"),
    "too few phantom patients": (["phantom.num_patients=2"], "phantom.num_patients must be"),
    "unknown variant": (["variants=[baseline,distill]"], "unknown KD term 'distill'"),
    "unknown scale": (["variants=[enc+middle]"], "unknown KD term 'middle'"),
    "unknown device": (["device=gpu"], "device must be one of auto, cpu, cuda, got 'gpu'"),
    "unknown optimizer": (["student.fit.optimizer=lion"], "student.fit.optimizer must be one of"),
    "image size vs depth": (["image_size=100"], "divisible by 2**teacher.depth"),
    "teacher cache with augmentation": (
        ["kd.teacher_cache=true", "student.fit.augment=true"],
        "cannot be used with student.fit.augment=true",
    ),
    "batch of one with InfoNCE": (
        ["variants=[baseline,bottleneck]", "student.fit.batch_size=1"],
        "batch_size must be at least 2",
    ),
    "teacher on zero workers": (["teacher.workers=0"], "teacher.workers must be an integer >= 1"),
    "ZeRO stage 4": (["teacher.zero_stage=4"], "teacher.zero_stage must be one of 0, 1, 2, 3"),
    "both budgets": (["budget.epochs=16"], "set exactly one of budget.steps"),
    "zero patience": (["budget.patience=0"], "budget.patience must be null or an integer >= 1"),
    "alpha of one": (["stats.alpha=1"], "stats.alpha must be a number in (0, 1)"),
    "no tuning seeds": (["tuning.seeds=[]"], "tuning.seeds must be a list of at"),
    "only_in of an unknown variant": (
        ["only_in={kd:{data_fraction:0.5}}"],
        "only_in names 'kd', which is not a variant of this grid",
    ),
    "only_in on a missing axis": (
        ["variants=[baseline,pmd]", "only_in={pmd:{data_fraction:0.5}}"],
        "only_in: 'pmd' names the axis 'data_fraction', which this grid does not have",
    ),
}
if torch.cuda.is_available():  # without CUDA, its absence is reported first (below)
    CONFIG["cuda without GPUs for the trials"] = (
        ["device=cuda", "ray.gpus_per_trial=0"],
        "ray.gpus_per_trial=0 gives the trials no GPU",
    )

# ---- overrides Hydra refuses while composing the config ---------------------------------
HYDRA = {
    "unknown key": (["student.widht=3"], "Key 'widht' is not in struct"),
    "unknown ablation": (["ablation=nope"], "ablation/nope"),
    "unknown profile": (["profile=nope"], "profile/nope"),
    "unknown data": (["data=nope"], "data/nope"),
}


# ---- the machine: each builder gets tmp_path and returns the arguments ------------------
def results_dir_is_a_file(tmp: Path) -> list[str]:
    (tmp / "taken").write_text("a file\n")
    return [f"results_dir={tmp / 'taken'}"]


def results_dir_under_a_file(tmp: Path) -> list[str]:
    (tmp / "taken").write_text("a file\n")
    return [f"results_dir={tmp / 'taken' / 'results'}"]


def work_dir_is_a_file(tmp: Path) -> list[str]:
    (tmp / "taken").write_text("a file\n")
    return [f"work_dir={tmp / 'taken'}"]


MACHINE = {
    "results_dir is a file": (results_dir_is_a_file, "is a file, not a folder"),
    "work_dir is a file": (work_dir_is_a_file, "is a file, not a folder"),
    "results_dir under a file": (results_dir_under_a_file, "lies under the file"),
    "unreachable Ray address": (
        lambda _: ["ray.address=127.0.0.1:1"],
        "the Ray cluster at 127.0.0.1:1 did not answer",
    ),
    "dashboard address as Ray address": (
        lambda _: ["ray.address=http://127.0.0.1:8265"],
        "is a dashboard / job-submission address",
    ),
}
# checked once Ray has started, before the teacher trains: only through the command line
RAY_CPUS = {
    "more teacher workers than CPUs": (
        lambda _: ["teacher.workers=64", "variants=[pmd]", "seeds=[0]"],
        "teacher.workers=64 needs 64 CPUs",
    ),
}
if not torch.cuda.is_available():
    MACHINE["cuda without CUDA"] = (
        lambda _: ["device=cuda", "ray.gpus_per_trial=1"],
        "device=cuda but this machine has no usable CUDA GPU",
    )
    MACHINE["cuda without CUDA, nor GPUs for the trials"] = (
        lambda _: ["device=cuda", "ray.gpus_per_trial=0"],
        "device=cuda but this machine has no usable CUDA GPU",
    )


# ---- data: a tiny MSD-layout folder with one bad case ----------------------------------
BAD_CASE = 2


def _msd(tmp: Path, **kwargs) -> tuple[Path, list[str]]:
    root = write_msd_folder(tmp / "msd", [(16, 16, 4)] * 5, **kwargs)
    return root, ["data=msd_spleen", f"data.root={root}", "image_size=16"]


def truncated_image(tmp: Path) -> list[str]:
    root, args = _msd(tmp)
    path = root / "imagesTr" / f"case_{BAD_CASE}.nii.gz"
    path.write_bytes(path.read_bytes()[:200])
    return args


def label_not_nifti(tmp: Path) -> list[str]:
    root, args = _msd(tmp)
    (root / "labelsTr" / f"case_{BAD_CASE}.nii.gz").write_text("not an image\n")
    return args


def nan_voxels(tmp: Path) -> list[str]:
    root, args = _msd(tmp)
    image = np.full((16, 16, 4), 40.0, np.float32)
    image[3, 4, 1] = np.nan
    nib.save(nib.Nifti1Image(image, TINY_AFFINE), root / "imagesTr" / f"case_{BAD_CASE}.nii.gz")
    return args


def label_value_two(tmp: Path) -> list[str]:
    label = np.zeros((16, 16, 4), np.uint8)
    label[2:6, 3:7, 1:3] = 2
    return _msd(tmp, labels={BAD_CASE: label})[1]


def other_affine(tmp: Path) -> list[str]:
    return _msd(tmp, label_affines={BAD_CASE: np.diag([1.5, 1.5, 2.5, 1.0])})[1]


def other_shape(tmp: Path) -> list[str]:
    root = write_msd_folder(
        tmp / "msd", [(16, 16, 4)] * 5, label_shapes=[(16, 16, 4)] * 4 + [(16, 16, 3)]
    )
    return ["data=msd_spleen", f"data.root={root}", "image_size=16"]


def too_small(tmp: Path) -> list[str]:
    root = write_msd_folder(tmp / "msd", [(16, 16, 4)] * 4 + [(4, 16, 4)])
    return ["data=msd_spleen", f"data.root={root}", "image_size=16"]


def empty_dataset(tmp: Path) -> list[str]:
    root = tmp / "empty"
    root.mkdir()
    (root / "dataset.json").write_text('{"training": []}')
    return ["data=msd_spleen", f"data.root={root}"]


DATA = {
    "missing folder": (lambda _: ["data=msd_spleen", "data.root=/nonexistent/msd"], "not found"),
    "empty dataset": (empty_dataset, "the dataset is empty"),
    "truncated image": (truncated_image, "cannot be read as NIfTI"),
    "label not NIfTI": (label_not_nifti, "cannot be read as NIfTI"),
    "NaN voxels": (nan_voxels, "non-finite voxel"),
    "label value other than 0/1": (label_value_two, "data.foreground=[...]"),
    "label affine differs": (other_affine, "is not on the voxel grid of its image"),
    "label shape differs": (other_shape, "must match voxel for voxel"),
    "volume too small to slice": (too_small, "too small to slice"),
}

# ---- training: a loss that goes non-finite stops the grid, no table ----------------------
TRAINING = {
    "non-finite loss": (
        lambda _: ["variants=[baseline]", "seeds=[0]", "student.fit.lr=1e30"],
        "variant 'baseline' seed 0: the loss became non-finite in epoch 1",
    ),
}


def _static(cases: dict) -> dict:
    return {name: ((lambda _, a=args: list(a)), message) for name, (args, message) in cases.items()}


def _arguments(build, tmp: Path) -> list[str]:
    """The case's overrides, with the smoke profile and results_dir and work_dir under
    ``tmp`` unless it sets them."""
    args = build(tmp)
    if not any(a.startswith("results_dir=") for a in args):
        args.append(f"results_dir={tmp / 'results'}")
    if not any(a.startswith("work_dir=") for a in args):
        args.append(f"work_dir={tmp / 'w'}")
    if not any(a.startswith("profile=") for a in args):
        args.append("profile=smoke")
    return args


def _compose(args: list[str]):
    return compose_config(args)


def _messages(err: BaseException) -> str:
    """The error's message and those of its causes (Hydra wraps OmegaConf's)."""
    parts = []
    while err is not None:
        parts.append(str(err))
        err = err.__cause__
    return "\n".join(parts)


def _assert_one_clear_error(err: KDBenchError, message: str, tmp: Path) -> None:
    assert message in str(err)
    assert len(str(err).splitlines()) == 1, str(err)  # bench/run.py prints one line
    results = tmp / "results"
    assert not results.exists() or not any(results.iterdir())


GATE = {**_static(CONFIG), **MACHINE}


@pytest.mark.parametrize("build, message", GATE.values(), ids=GATE.keys())
def test_the_gate_refuses_bad_config_values_and_machines(build, message, tmp_path):
    cfg = _compose(_arguments(build, tmp_path))
    with pytest.raises(KDBenchError) as caught:
        check_config(cfg)
    _assert_one_clear_error(caught.value, message, tmp_path)


@pytest.mark.parametrize("build, message", _static(HYDRA).values(), ids=HYDRA.keys())
def test_hydra_refuses_bad_overrides(build, message, tmp_path):
    with pytest.raises(HydraException) as caught:
        _compose(_arguments(build, tmp_path))
    assert message in _messages(caught.value)


@pytest.mark.parametrize("build, message", DATA.values(), ids=DATA.keys())
def test_the_job_refuses_bad_data_files_before_any_training(build, message, tmp_path):
    cfg = _compose(_arguments(build, tmp_path))
    lines = []
    with pytest.raises(KDBenchError) as caught:
        run_job(cfg, "test", lines.append)
    _assert_one_clear_error(caught.value, message, tmp_path)
    assert not any(line.startswith(("teacher", "grid")) for line in lines), lines


# One case per class through the command line; the Ray-backed cases only there.
ONE_PER_CLASS = {
    "config: temperature zero": _static(CONFIG)["temperature zero"],
    "hydra: unknown key": _static(HYDRA)["unknown key"],
    "machine: results_dir is a file": MACHINE["results_dir is a file"],
    **{f"machine: {k}": v for k, v in RAY_CPUS.items()},
    "data: truncated image": DATA["truncated image"],
    **{f"training: {k}": v for k, v in TRAINING.items()},
}


@pytest.mark.parametrize("name", ONE_PER_CLASS)
def test_the_command_line_exits_2_with_one_error_line_and_no_traceback(name, tmp_path):
    build, message = ONE_PER_CLASS[name]
    proc = run_cli(*_arguments(build, tmp_path))
    assert proc.returncode == BAD_INPUT, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    if name.startswith("hydra:"):  # Hydra prints its own message, without "error:"
        assert errors == []
    else:
        assert len(errors) == 1 and message in errors[0], proc.stderr[-2000:]
    results = tmp_path / "results"
    assert not results.exists() or not any(results.iterdir())
