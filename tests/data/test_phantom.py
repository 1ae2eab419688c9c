import hashlib

import nibabel as nib
import numpy as np
import pytest

from kdcore.data.msd import list_cases
from kdcore.data.phantom import generate_patient, patient_seed, write_phantom_dataset

SHAPE, SPACING = (64, 64, 16), (5.6, 5.6, 12.0)

# Golden values: sha256 of image.tobytes() + label.tobytes(). They pin the phantom byte for
# byte, so a refactoring (or a reordered random draw) cannot change it unnoticed. Change them
# only on purpose, when the phantom's anatomy or imaging is changed deliberately.
GOLDEN = [
    (
        patient_seed(0, 0),
        (48, 48, 12),
        (7.5, 7.5, 10.0),
        "ded0edfb6a5fb3db3508647529433fd4a63d7842e12238531ba31b94d7d43495",
    ),
    (
        patient_seed(0, 1),
        (48, 48, 12),
        (7.5, 7.5, 10.0),
        "bd6e944552e31e2f3512b49431fba919d70ba19860b78e1def987440c38f9f39",
    ),
    (
        patient_seed(0, 2),
        (48, 48, 12),
        (7.5, 7.5, 10.0),
        "4b2f0107b7abd3b193bbaedd8693fbbaa98e4f9f27a813a2b67afcabed095a56",
    ),
    (3, SHAPE, SPACING, "aafcd1006f49d82ee86d8fda9a858656a0b2ba64335d9bce34516b38e29be191"),
]


@pytest.mark.parametrize("seed, shape, spacing, digest", GOLDEN)
def test_phantom_output_is_pinned(seed, shape, spacing, digest):
    image, label = generate_patient(seed, shape, spacing)
    assert image.dtype == np.int16 and label.dtype == np.uint8
    assert image.shape == label.shape == shape
    assert hashlib.sha256(image.tobytes() + label.tobytes()).hexdigest() == digest


def test_generator_is_deterministic_from_the_seed():
    a_img, a_lab = generate_patient(3, SHAPE, SPACING)
    b_img, b_lab = generate_patient(3, SHAPE, SPACING)
    c_img, c_lab = generate_patient(4, SHAPE, SPACING)
    assert np.array_equal(a_img, b_img) and np.array_equal(a_lab, b_lab)
    assert not np.array_equal(a_lab, c_lab)


def test_patient_has_realistic_hu_and_a_partial_spleen():
    image, label = generate_patient(patient_seed(0, 0), SHAPE, SPACING)
    assert image.dtype == np.int16 and label.dtype == np.uint8 and image.shape == SHAPE
    assert image.min() <= -900 and image.max() >= 300  # air outside, bone inside
    spleen_hu = image[label == 1].mean()
    assert 60 < spleen_hu < 160
    with_spleen = (label.sum(axis=(0, 1)) > 0).mean()
    assert 0 < with_spleen < 1  # slices without spleen are kept
    # the spleen sits on the patient's left: high x in the array
    assert np.argwhere(label)[:, 0].mean() > SHAPE[0] / 2


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


def test_loader_reads_a_tiny_phantom(tmp_path):
    from kdcore.data.slices import SliceSettings, load_slices

    root = write_phantom_dataset(tmp_path / "p", 2, seed=1, shape=SHAPE, spacing=SPACING)
    data = load_slices(list_cases(root), SliceSettings((0, 255), 32), tmp_path / "cache")
    assert data.images.shape == (2 * SHAPE[2], 32, 32)
    assert data.masks.any() and not data.masks.all(axis=(1, 2)).any()
