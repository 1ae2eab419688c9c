"""Patients and datasets: the painting sequence, per-patient seeds and MSD-layout NIfTI
output."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np

from kdcore.data.phantom import labels
from kdcore.data.phantom.appearance import (
    EASY_HABITUS,
    EASY_SPLEEN_SIZE,
    Appearance,
    Look,
    draw_look,
    look_rng,
    phase_hu,
)
from kdcore.data.phantom.body import (
    draw_body_wall,
    draw_psoas_and_crura,
    draw_ribs,
    draw_spine,
    draw_table,
    draw_thorax,
)
from kdcore.data.phantom.bowel import draw_bowel
from kdcore.data.phantom.finish import finalise, finalise_scan, slab_positions
from kdcore.data.phantom.geometry import Canvas, smooth_field
from kdcore.data.phantom.organs import (
    draw_kidneys,
    draw_lesions,
    draw_liver,
    draw_pancreas,
    draw_spleen,
    draw_stomach,
)
from kdcore.data.phantom.plan import Plan, make_plan, plan_pancreas
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


@dataclass
class Scan:
    """One generated patient: ``image`` int16 HU and ``labels`` uint8 organ labels
    (``labels.NAMES``), both (X, Y, Z); the voxel ``spacing`` (mm) of this scan, and its
    ``look`` (phase, dose, ...; None for the easy phantom)."""

    image: np.ndarray
    labels: np.ndarray
    spacing: tuple[float, float, float]
    look: Look | None = None


def generate_patient(
    seed: int,
    shape: tuple[int, int, int] = DEFAULT_SHAPE,
    spacing: tuple[float, float, float] = DEFAULT_SPACING,
    appearance: Appearance | None = None,
) -> Scan:
    """One patient's CT volume and organ labels, from ``seed``.

    ``appearance`` None is the easy phantom: ``shape`` and ``spacing`` (mm, x y z) set the
    sampling grid, centred on the body, and only the noise realisation depends on the
    grid. With an ``Appearance`` the scan's look is drawn too (``appearance.draw_look``):
    the in-plane spacing follows from the drawn field of view (``spacing`` gives the slice
    interval only) and each slice averages its drawn thickness. The anatomy depends on
    ``seed`` alone (and the appearance's habitus and spleen-size knobs).
    """
    rng = np.random.default_rng(seed)
    anatomy = (
        (EASY_HABITUS, EASY_SPLEEN_SIZE)
        if appearance is None
        else (appearance.habitus, appearance.spleen_size)
    )
    plan = make_plan(rng, *anatomy)
    plan_pancreas(plan, rng)
    offset = (
        rng.uniform(-8, 8),
        (plan.body.half_ap_ant - plan.body.half_ap_post) / 2 + rng.uniform(-8, 8),
        -plan.z_shift,
    )
    if appearance is None:
        cv = Canvas(shape, spacing, offset)
        cv.texture = smooth_field(rng, cv.axes, 25.0)
        _paint_anatomy(cv, plan, rng)
        return Scan(finalise(cv, spacing, rng), cv.organ, tuple(spacing))
    look_draws = look_rng(seed)
    look = draw_look(look_draws, appearance, 2 * plan.body.half_width)
    plan.hu = phase_hu(look_draws, look, plan.hu)
    if look.zebra_hu:
        plan.extra["zebra"] = (
            look.zebra_hu,
            look_draws.uniform(3, 6),
            look_draws.uniform(0, 2 * np.pi),
        )
    pixel = look.fov_mm / shape[0]
    spacing = (pixel, pixel, float(spacing[2]))
    offset = tuple(o + s for o, s in zip(offset, look.shift_mm, strict=True))
    z_axis, slabs = slab_positions(shape[2], spacing[2], offset[2], look.slice_mm)
    cv = Canvas(shape, spacing, offset, z_axis)
    cv.texture = smooth_field(rng, cv.axes, 25.0)
    _paint_anatomy(cv, plan, rng, table=look.table)
    draw_lesions(cv, plan, look)
    image, organ = finalise_scan(cv, look, slabs, spacing)
    return Scan(image, organ, spacing, look)


def _paint_anatomy(cv: Canvas, plan: Plan, rng: np.random.Generator, table: bool = True) -> None:
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
    if table:  # the last draw: leaving it out changes nothing else
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
    appearance: Appearance | None = None,
) -> Path:
    """Write root/dataset.json, root/imagesTr/spleen_{i:03d}.nii.gz,
    root/labelsTr/spleen_{i:03d}.nii.gz (every organ labelled, see ``labels``) and
    root/scans.json (each case's phase, dose, noise, kernel, slice thickness, field of
    view); return root.

    Patient ``i`` is ``generate_patient(patient_seed(seed, i), ..., appearance)``, so it
    does not depend on ``num_patients``. Every file is written under a temporary name and
    renamed, and dataset.json comes last, so an interrupted run leaves no truncated file
    behind.
    """
    root = Path(root)
    (root / "imagesTr").mkdir(parents=True, exist_ok=True)
    (root / "labelsTr").mkdir(parents=True, exist_ok=True)
    training, scans = [], {}
    for i in range(int(num_patients)):
        scan = generate_patient(patient_seed(seed, i), shape, spacing, appearance)
        name = f"spleen_{i:03d}.nii.gz"
        _save_nifti(scan.image, scan.spacing, root / "imagesTr" / name)
        _save_nifti(scan.labels, scan.spacing, root / "labelsTr" / name)
        training.append({"image": f"./imagesTr/{name}", "label": f"./labelsTr/{name}"})
        scans[name] = {
            "spacing_mm": [round(float(v), 4) for v in scan.spacing],
            **(scan.look.summary() if scan.look else {"phase": "portal"}),
        }
    write_text_atomic(root / "scans.json", json.dumps(scans, indent=1))
    manifest = _manifest(training, appearance is None)
    write_text_atomic(root / "dataset.json", json.dumps(manifest, indent=4))
    return root


def _manifest(training: list[dict], easy: bool) -> dict:
    """The MSD dataset.json for the listed training cases."""
    look = (
        "portal-venous phase like"
        if easy
        else "contrast phase, dose, kernel, slice thickness and field of view drawn per patient"
    )
    return {
        "name": "Phantom abdomen",
        "description": f"Procedural abdominal CT phantoms ({look}) with every modelled organ "
        "labelled, in the layout of MSD Task09_Spleen (label 1 is the spleen)",
        "reference": "kdcore.data.phantom",
        "licence": "CC0",
        "tensorImageSize": "3D",
        "modality": {"0": "CT"},
        "labels": {str(value): name for value, name in labels.NAMES.items()},
        "numTraining": len(training),
        "numTest": 0,
        "training": training,
        "test": [],
    }
