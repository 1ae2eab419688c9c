"""Patients and datasets: the painting sequence, per-patient seeds and MSD-layout NIfTI
output."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np

from kdcore.data.phantom.body import (
    draw_body_wall,
    draw_psoas_and_crura,
    draw_ribs,
    draw_spine,
    draw_table,
    draw_thorax,
)
from kdcore.data.phantom.bowel import draw_bowel
from kdcore.data.phantom.finish import finalise
from kdcore.data.phantom.geometry import Canvas, smooth_field
from kdcore.data.phantom.organs import (
    draw_kidneys,
    draw_liver,
    draw_pancreas,
    draw_spleen,
    draw_stomach,
)
from kdcore.data.phantom.plan import Plan, make_plan, plan_pancreas
from kdcore.data.phantom.tissues import SPLEEN
from kdcore.data.phantom.vessels import draw_aorta_and_ivc, draw_portal_system
from kdcore.io import atomic_path, write_text_atomic

DEFAULT_SHAPE = (128, 128, 40)
DEFAULT_SPACING = (2.8, 2.8, 5.0)
DEFAULT_FOV_MM = tuple(n * s for n, s in zip(DEFAULT_SHAPE, DEFAULT_SPACING, strict=True))


def spacing_for_shape(
    shape: tuple[int, int, int], fov_mm: tuple[float, float, float] = DEFAULT_FOV_MM
) -> tuple[float, float, float]:
    """Voxel spacing (mm) that makes a volume of ``shape`` cover ``fov_mm`` (default FOV)."""
    return tuple(float(f) / int(n) for f, n in zip(fov_mm, shape, strict=True))


def generate_patient(
    seed: int,
    shape: tuple[int, int, int] = DEFAULT_SHAPE,
    spacing: tuple[float, float, float] = DEFAULT_SPACING,
) -> tuple[np.ndarray, np.ndarray]:
    """Return (image_hu int16 array of `shape` (X, Y, Z), spleen label uint8 array of `shape`).

    The anatomy depends on ``seed`` only; ``shape`` and ``spacing`` (mm, x y z) set the
    sampling grid, centred on the body. Only the noise realisation depends on the grid.
    """
    rng = np.random.default_rng(seed)
    plan = make_plan(rng)
    plan_pancreas(plan, rng)
    offset = (
        rng.uniform(-8, 8),
        (plan.body.half_ap_ant - plan.body.half_ap_post) / 2 + rng.uniform(-8, 8),
        -plan.z_shift,
    )
    cv = Canvas(shape, spacing, offset)
    cv.texture = smooth_field(rng, cv.axes, 25.0)
    _paint_anatomy(cv, plan, rng)
    label = (cv.tissue == SPLEEN).astype(np.uint8)
    image = finalise(cv, spacing, rng)
    return image, label


def _paint_anatomy(cv: Canvas, plan: Plan, rng: np.random.Generator) -> None:
    """Paint every structure, in painting order: later structures overwrite earlier ones
    where they meet, which packs the organs against each other with fat left in the gaps.

    The order is also the order of the random draws, so changing it changes every patient.
    """
    draw_body_wall(cv, plan)
    draw_bowel(cv, plan, rng)
    draw_liver(cv, plan, rng)
    draw_stomach(cv, plan, rng)
    draw_pancreas(cv, plan)
    draw_aorta_and_ivc(cv, plan, rng)
    draw_portal_system(cv, plan, rng)
    draw_psoas_and_crura(cv, plan, rng)
    draw_spleen(cv, plan)
    draw_kidneys(cv, plan, rng)
    draw_thorax(cv, plan, rng)
    draw_spine(cv, plan)
    draw_ribs(cv, plan, rng)
    draw_table(cv, plan, rng)


def patient_seed(seed: int, index: int) -> int:
    """The ``generate_patient`` seed of patient ``index`` of a dataset with seed ``seed``."""
    return int(np.random.SeedSequence([int(seed), int(index)]).generate_state(1)[0])


def _save_nifti(array: np.ndarray, spacing, path: Path) -> None:
    """Write a NIfTI file under a temporary name in the same folder, then rename it."""
    # x runs towards the patient's left, which world (RAS) coordinates call -x: an LAS
    # affine, so that reorienting to RAS puts the spleen where real scans have it.
    sx, sy, sz = (float(s) for s in spacing)
    affine = np.diag([-sx, sy, sz, 1.0])
    affine[0, 3] = sx * (array.shape[0] - 1)  # keep the volume at x >= 0 in world mm
    img = nib.Nifti1Image(array, affine)
    img.header.set_xyzt_units("mm")
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    with atomic_path(path) as tmp:
        nib.save(img, tmp)


def write_phantom_dataset(
    root: str | Path,
    num_patients: int,
    seed: int = 0,
    shape: tuple[int, int, int] = DEFAULT_SHAPE,
    spacing: tuple[float, float, float] = DEFAULT_SPACING,
) -> Path:
    """Write root/dataset.json, root/imagesTr/spleen_{i:03d}.nii.gz,
    root/labelsTr/spleen_{i:03d}.nii.gz; return root.

    Patient ``i`` is ``generate_patient(patient_seed(seed, i))``, so it does not depend on
    ``num_patients``. Every file is written under a temporary name and renamed,
    and dataset.json comes last, so an interrupted run leaves no truncated file behind.
    """
    root = Path(root)
    (root / "imagesTr").mkdir(parents=True, exist_ok=True)
    (root / "labelsTr").mkdir(parents=True, exist_ok=True)
    training = []
    for i in range(int(num_patients)):
        image, label = generate_patient(patient_seed(seed, i), shape, spacing)
        name = f"spleen_{i:03d}.nii.gz"
        _save_nifti(image, spacing, root / "imagesTr" / name)
        _save_nifti(label, spacing, root / "labelsTr" / name)
        training.append({"image": f"./imagesTr/{name}", "label": f"./labelsTr/{name}"})
    write_text_atomic(root / "dataset.json", json.dumps(_manifest(training), indent=4))
    return root


def _manifest(training: list[dict]) -> dict:
    """The MSD dataset.json for the listed training cases."""
    return {
        "name": "Phantom spleen",
        "description": "Procedural abdominal CT phantoms (portal-venous phase like) with "
        "spleen labels, in the layout of MSD Task09_Spleen",
        "reference": "kdcore.data.phantom",
        "licence": "CC0",
        "tensorImageSize": "3D",
        "modality": {"0": "CT"},
        "labels": {"0": "background", "1": "spleen"},
        "numTraining": len(training),
        "numTest": 0,
        "training": training,
        "test": [],
    }
