"""Bad data inputs end in one clear ConfigError naming the file, and leave no cache."""

import re

import nibabel as nib
import numpy as np
import pytest
import torch

from kdcore.data.msd import list_cases
from kdcore.data.slices import SliceSettings, load_slices, preprocess_volume
from kdcore.errors import ConfigError
from tests.conftest import TINY_AFFINE, write_msd_folder

BAD = 3  # the corrupted case: the 4th of 5, after three good ones were read


def _tiny(tmp_path, **kwargs):
    return write_msd_folder(tmp_path / "msd", [(16, 16, 4)] * 5, **kwargs)


def _load_fails(root, tmp_path, *patterns) -> str:
    """load_slices raises a ConfigError matching every pattern and writes no cache."""
    cache = tmp_path / "cache"
    with pytest.raises(ConfigError) as info:
        load_slices(list_cases(root), SliceSettings((0, 255), 16), cache)
    message = str(info.value)
    for pattern in patterns:
        assert re.search(pattern, message), f"{pattern!r} not in {message!r}"
    slices = cache / "slices"
    assert not slices.exists() or not any(slices.iterdir()), "a cache folder was left behind"
    return message


@pytest.mark.parametrize("role", ["image", "label"])
@pytest.mark.parametrize("damage", ["truncated", "text"])
def test_unreadable_nifti_is_a_clear_error(tmp_path, role, damage):
    root = _tiny(tmp_path)
    path = root / f"{role}sTr" / f"case_{BAD}.nii.gz"
    if damage == "truncated":
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    else:
        path.write_text("this is not a NIfTI file\n")
    message = _load_fails(
        root, tmp_path, f"^{role} {re.escape(str(path))} cannot be read as NIfTI: ", "re-download"
    )
    assert "\n" not in message and "Traceback" not in message


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_non_finite_image_voxels_are_a_clear_error(tmp_path, value):
    root = _tiny(tmp_path)
    path = root / "imagesTr" / f"case_{BAD}.nii.gz"
    image = np.full((16, 16, 4), 40.0, np.float32)
    image[5, 6, 2] = value
    nib.save(nib.Nifti1Image(image, TINY_AFFINE), path)
    _load_fails(
        root,
        tmp_path,
        f"image {re.escape(str(path))} has 1 non-finite voxel \\(NaN or inf\\)",
        r"voxel \(5, 6, 2\)",
        "fix or re-export",
    )


def test_unexpected_label_values_are_a_clear_error(tmp_path):
    label = np.zeros((16, 16, 4), np.uint8)
    label[2:6, 3:7, 1:3], label[8:10, 8:10, 0] = 1, 2
    root = _tiny(tmp_path, labels={BAD: label})
    path = root / "labelsTr" / f"case_{BAD}.nii.gz"
    _load_fails(
        root,
        tmp_path,
        rf"label {re.escape(str(path))} has values \{{2\}} that are neither foreground \[1\] "
        r"nor background \[0\]",
        re.escape("data.foreground=[1] data.background=[0,2,3]"),
    )


@pytest.mark.parametrize(
    "affine, what",
    [
        (np.diag([1.5, 1.5, 2.5, 1.0]), r"spacing \(1.5, 1.5, 2.5\) mm vs \(1.5, 1.5, 5\) mm"),
        (TINY_AFFINE + np.array([[0, 0, 0, 10.0]] + [[0] * 4] * 3), r"origin \(10, 0, 0\) mm"),
        (np.diag([-1.5, 1.5, 5.0, 1.0]), "orientation"),
    ],
)
def test_label_on_another_voxel_grid_is_a_clear_error(tmp_path, affine, what):
    root = _tiny(tmp_path, label_affines={BAD: affine})
    path = root / "labelsTr" / f"case_{BAD}.nii.gz"
    _load_fails(
        root,
        tmp_path,
        f"label {re.escape(str(path))} is not on the voxel grid of its image",
        what,
        "re-export the label with the image's affine",
    )


def test_affines_equal_up_to_round_off_are_accepted(tmp_path):
    root = _tiny(tmp_path, label_affines={BAD: TINY_AFFINE + 1e-5})
    assert len(load_slices(list_cases(root), SliceSettings((0, 255), 16), tmp_path / "c")) == 20


@pytest.mark.parametrize(
    "shape, what",
    [
        ((16, 16), r"has shape \(16, 16\); expected a 3D \(X, Y, Z\) volume"),
        ((16, 16, 4, 2), r"has shape \(16, 16, 4, 2\); expected a 3D"),
        ((4, 16, 3), r"has shape \(4, 16, 3\), too small to slice: need at least 8x8"),
        ((16, 16, 0), r"holds no voxels \(shape \(16, 16, 0\), e.g. zero slices\)"),
    ],
)
def test_volumes_too_small_to_slice_are_a_clear_error(tmp_path, shape, what):
    root = _tiny(tmp_path)
    path = root / "imagesTr" / f"case_{BAD}.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros(shape, np.int16), TINY_AFFINE), path)
    _load_fails(root, tmp_path, f"image {re.escape(str(path))} ", what)


def test_foreground_and_background_map_label_values(tmp_path):
    label = np.zeros((16, 16, 4), np.uint8)
    label[2:6, 3:7, 1:3], label[8:12, 8:12, 0:2] = 1, 2
    root = _tiny(tmp_path, labels={i: label for i in range(5)})
    cases = list_cases(root)
    spleen = load_slices(cases, SliceSettings((0, 255), 16, background=(0, 2)), tmp_path / "c")
    expected = (label == 1).transpose(2, 0, 1).astype(np.uint8)
    assert np.array_equal(spleen.masks[:4], expected)
    both = load_slices(cases, SliceSettings((0, 255), 16, foreground=(1, 2)), tmp_path / "c")
    assert np.array_equal(both.masks[:4], (label > 0).transpose(2, 0, 1))
    assert both.key != spleen.key  # the mapping is part of the cache key


def test_mapping_is_applied_before_the_nearest_resize():
    label = torch.zeros(4, 4, 1)
    label[:2, :2] = 2  # a nearest resize of the raw values would keep the 2s
    label[2:, 2:] = 1
    settings = SliceSettings((0, 255), 8, foreground=(2,), background=(0, 1))
    _, mask = preprocess_volume(torch.zeros(4, 4, 1), label, settings)
    assert mask.shape == (1, 8, 8) and set(np.unique(mask)) == {0, 1}
    assert mask[0, :4, :4].all() and not mask[0, 4:].any() and not mask[0, :, 4:].any()
    with pytest.raises(ConfigError, match=r"label has values \{2\} that are neither"):
        preprocess_volume(torch.zeros(4, 4, 1), label, SliceSettings((0, 255), 8))


@pytest.mark.parametrize(
    "kwargs, what",
    [
        ({"foreground": ()}, "data.foreground is empty"),
        ({"foreground": (1,), "background": (0, 1)}, r"label values \[1\] are in both"),
        ({"foreground": (1.5,)}, "data.foreground must be a list of integer"),
        ({"background": ("0",)}, "data.background must be a list of integer"),
    ],
)
def test_slice_settings_validate_the_label_mapping(kwargs, what):
    with pytest.raises(ConfigError, match=what):
        SliceSettings(**kwargs)


def test_settings_accept_lists_and_store_tuples():
    settings = SliceSettings(foreground=[1, np.int64(2)], background=[0])
    assert settings.foreground == (1, 2) and settings.background == (0,)


def test_default_tiny_folders_still_load(tiny_msd, tmp_path):
    data = load_slices(list_cases(tiny_msd), SliceSettings(), tmp_path / "cache")
    assert data.images.shape == (20, 256, 256) and set(np.unique(data.masks)) == {0, 1}
