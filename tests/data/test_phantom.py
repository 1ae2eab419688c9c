"""The phantom generator: pinned output, determinism, MSD layout and the loader.

Run as a script (``python tests/data/test_phantom.py``) it prints the digests of the
standard preset's pinned cases, to paste into STANDARD_GOLDEN when the preset is changed
on purpose.
"""

import dataclasses
import hashlib
import json

import nibabel as nib
import numpy as np
import pytest

from kdcore.data.msd import list_cases
from kdcore.data.phantom import generate_patient, labels, patient_seed, write_phantom_dataset
from kdcore.data.phantom.appearance import EASY_SPLEEN_SIZE, PRESETS

SHAPE, SPACING = (64, 64, 16), (5.6, 5.6, 12.0)
SMALL, SMALL_SPACING = (48, 48, 12), (7.5, 7.5, 10.0)

# Easy (the original phantom): sha256 of image.tobytes() + spleen mask (uint8).tobytes().
# They pin it byte for byte, as it was before the other organs were labelled, so that the
# earlier tables stay reproducible. Never change them: easy must not change.
GOLDEN = [
    (
        patient_seed(0, 0),
        SMALL,
        SMALL_SPACING,
        "ded0edfb6a5fb3db3508647529433fd4a63d7842e12238531ba31b94d7d43495",
    ),
    (
        patient_seed(0, 1),
        SMALL,
        SMALL_SPACING,
        "bd6e944552e31e2f3512b49431fba919d70ba19860b78e1def987440c38f9f39",
    ),
    (
        patient_seed(0, 2),
        SMALL,
        SMALL_SPACING,
        "4b2f0107b7abd3b193bbaedd8693fbbaa98e4f9f27a813a2b67afcabed095a56",
    ),
    (3, SHAPE, SPACING, "aafcd1006f49d82ee86d8fda9a858656a0b2ba64335d9bce34516b38e29be191"),
]

# Standard preset (PRESETS["standard"]): sha256 of image.tobytes() + labels.tobytes() (every
# organ). Pins of the preset as it is calibrated now: a change of its values, of its draws
# or of the imaging changes them. Remake them deliberately, after such a change, with
# `python tests/data/test_phantom.py`, which prints this list.
STANDARD_GOLDEN = [
    (
        patient_seed(0, 0),
        SMALL,
        SMALL_SPACING,
        "1454e6c7565f39fdbc85d317cc7ae8d1e4f34b92f7965c090637c7ad330c06e7",
    ),
    (
        patient_seed(0, 1),
        SMALL,
        SMALL_SPACING,
        "d09e8e66ae954b0f9abf03d309fcd3aa1cb71b4539c017cbc47c8f14d0722c34",
    ),
    (
        patient_seed(0, 2),
        SMALL,
        SMALL_SPACING,
        "313c48928e1267bce9f625628a6057047d16ed4d5f8c301f0471909db02b66d8",
    ),
    (3, SHAPE, SPACING, "a015abcb71605269092d725b6f86f2e6b5ccae5ee8780d75b25f7dd9ff537fa7"),
]

# Every label value but the spleen's is background for a spleen task.
OTHER_ORGANS = tuple(v for v in labels.NAMES if v != labels.SPLEEN)


def easy_digest(scan) -> str:
    """The easy pins' digest: image and spleen mask."""
    spleen = (scan.labels == labels.SPLEEN).astype(np.uint8)
    return hashlib.sha256(scan.image.tobytes() + spleen.tobytes()).hexdigest()


def full_digest(scan) -> str:
    """The standard pins' digest: image and every organ's label."""
    return hashlib.sha256(scan.image.tobytes() + scan.labels.tobytes()).hexdigest()


@pytest.mark.parametrize("seed, shape, spacing, digest", GOLDEN)
def test_easy_phantom_is_pinned_byte_for_byte(seed, shape, spacing, digest):
    scan = generate_patient(seed, shape, spacing)
    assert scan.image.dtype == np.int16 and scan.labels.dtype == np.uint8
    assert scan.image.shape == scan.labels.shape == shape
    assert scan.spacing == spacing and scan.look is None
    assert easy_digest(scan) == digest


@pytest.mark.parametrize("seed, shape, spacing, digest", STANDARD_GOLDEN)
def test_standard_preset_is_pinned(seed, shape, spacing, digest):
    scan = generate_patient(seed, shape, spacing, PRESETS["standard"])
    assert scan.image.shape == scan.labels.shape == shape
    assert full_digest(scan) == digest, "remake STANDARD_GOLDEN if the change is on purpose"


def test_generator_is_deterministic_from_the_seed():
    for appearance in (None, PRESETS["standard"]):
        a, b = (generate_patient(3, SHAPE, SPACING, appearance) for _ in range(2))
        c = generate_patient(4, SHAPE, SPACING, appearance)
        assert np.array_equal(a.image, b.image) and np.array_equal(a.labels, b.labels)
        assert not np.array_equal(a.labels, c.labels)


def test_patient_has_realistic_hu_and_a_partial_spleen():
    scan = generate_patient(patient_seed(0, 0), SHAPE, SPACING)
    image, spleen = scan.image, scan.labels == labels.SPLEEN
    assert image.min() <= -900 and image.max() >= 300  # air outside, bone inside
    assert 60 < image[spleen].mean() < 160
    with_spleen = spleen.any(axis=(0, 1)).mean()
    assert 0 < with_spleen < 1  # slices without spleen are kept
    # the spleen sits on the patient's left: high x in the array
    assert np.argwhere(spleen)[:, 0].mean() > SHAPE[0] / 2


def test_every_organ_is_labelled():
    scan = generate_patient(3, SHAPE, SPACING)
    assert set(np.unique(scan.labels)) == set(labels.NAMES)
    # the liver is on the patient's right (low x), the left kidney on the left (high x)
    x_of = {v: np.argwhere(scan.labels == v)[:, 0].mean() for v in labels.NAMES}
    assert x_of[labels.LIVER] < SHAPE[0] / 2 < x_of[labels.LEFT_KIDNEY]
    assert x_of[labels.RIGHT_KIDNEY] < x_of[labels.LEFT_KIDNEY]


def test_easy_and_standard_draw_the_same_anatomy_from_a_seed():
    # The look has its own generator: with the easy anatomy knobs and the easy field of
    # view (64 x 5.6 mm, centred, the same scan range), a seed's organs are the same voxel
    # for voxel.
    same_grid = dataclasses.replace(
        PRESETS["standard"],
        spleen_size=EASY_SPLEEN_SIZE,
        fov_mm=(SHAPE[0] * SPACING[0],) * 2,
        off_centre_mm=0.0,
        scan_shift_mm=0.0,
    )
    for seed in (0, 1, 2):
        easy = generate_patient(seed, SHAPE, SPACING)
        standard = generate_patient(seed, SHAPE, SPACING, same_grid)
        assert standard.spacing == pytest.approx(SPACING)
        assert (standard.labels == labels.SPLEEN).sum() > 100
        assert np.array_equal(easy.labels, standard.labels)
        assert not np.array_equal(easy.image, standard.image)  # only the look differs


def test_dataset_is_msd_layout_and_patients_do_not_depend_on_count(tmp_path):
    small = write_phantom_dataset(tmp_path / "a", 2, seed=5, shape=SHAPE, spacing=SPACING)
    large = write_phantom_dataset(tmp_path / "b", 3, seed=5, shape=SHAPE, spacing=SPACING)
    cases_small, cases_large = list_cases(small), list_cases(large)
    assert len(cases_small) == 2 and len(cases_large) == 3
    img = nib.load(cases_small[1].image)
    assert img.shape == SHAPE and np.allclose(img.header.get_zooms(), SPACING)
    assert np.array_equal(
        np.asarray(img.dataobj), np.asarray(nib.load(cases_large[1].image).dataobj)
    )
    assert not list(small.glob("**/.*"))  # no temporary files left behind
    manifest = json.loads((small / "dataset.json").read_text())
    assert manifest["labels"] == {str(v): name for v, name in labels.NAMES.items()}
    assert len(manifest["labels"]) == 18 and manifest["labels"]["1"] == "spleen"


def test_standard_dataset_records_each_scan(tmp_path):
    root = write_phantom_dataset(
        tmp_path / "s", 3, seed=2, shape=SHAPE, spacing=SPACING, appearance=PRESETS["standard"]
    )
    scans = json.loads((root / "scans.json").read_text())
    cases = list_cases(root)
    assert sorted(scans) == sorted(f"spleen_{i:03d}.nii.gz" for i in range(3))
    for i, case in enumerate(cases):
        scan = generate_patient(patient_seed(2, i), SHAPE, SPACING, PRESETS["standard"])
        record = scans[f"spleen_{i:03d}.nii.gz"]
        assert record["phase"] == scan.look.phase
        assert record["slice_mm"] == pytest.approx(scan.look.slice_mm, abs=0.01)
        assert record["noise_sd_hu"] == pytest.approx(scan.look.noise_sd, abs=0.1)
        assert record["fov_mm"] == pytest.approx(scan.look.fov_mm, abs=0.1)
        # each scan's NIfTI carries its own spacing, the one scans.json records
        zooms = nib.load(case.image).header.get_zooms()
        assert np.allclose(zooms, record["spacing_mm"], atol=1e-3)
        assert np.allclose(zooms, scan.spacing, atol=1e-3)
        assert np.array_equal(np.asarray(nib.load(case.label).dataobj), scan.labels)


def test_loader_reads_a_tiny_phantom_with_the_other_organs_as_background(tmp_path):
    from kdcore.data.slices import SliceSettings, load_slices

    root = write_phantom_dataset(tmp_path / "p", 2, seed=1, shape=SHAPE, spacing=SPACING)
    settings = SliceSettings((0, 255), 32, foreground=(labels.SPLEEN,), background=OTHER_ORGANS)
    data = load_slices(list_cases(root), settings, tmp_path / "cache", log=lambda _: None)
    assert data.images.shape == (2 * SHAPE[2], 32, 32)
    assert data.masks.any() and not data.masks.all(axis=(1, 2)).any()
    assert set(np.unique(data.masks)) == {0, 1}


def print_standard_digests() -> None:
    """Print STANDARD_GOLDEN's digests as they are now, to paste into this file."""
    for seed, shape, spacing, _ in STANDARD_GOLDEN:
        scan = generate_patient(seed, shape, spacing, PRESETS["standard"])
        print(f'"{full_digest(scan)}",  # seed {seed}, shape {shape}, spacing {spacing}')


if __name__ == "__main__":
    print_standard_digests()
