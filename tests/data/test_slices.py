"""Bad data inputs end in one clear ConfigError naming the file, and leave no cache."""

import math
import re

import nibabel as nib
import numpy as np
import pytest
import torch

from kdcore.data.msd import list_cases
from kdcore.data.slices import CACHE_VERSION, SliceSettings, load_slices, preprocess_volume
from kdcore.errors import ConfigError
from tests.conftest import TINY_AFFINE, write_msd_cases, write_msd_folder

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
        ((16, 16, 4, 2), r"has shape \(16, 16, 4, 2\): 2 channels on its 4th axis, but the "),
        ((16, 16, 4, 1, 2), r"has shape \(16, 16, 4, 1, 2\); expected a 3D"),
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


# --- orientation: every volume is sliced in RAS orientation -------------------------------


def _anatomy(shape=(20, 24, 5), spacing=(0.8, 0.9, 3.0), origin=(-7.0, 4.0, 11.0)):
    """An RAS-stored image, an asymmetric label and their affine diag(spacing) + origin."""
    rng = np.random.default_rng(7)
    image = rng.integers(-100, 300, shape).astype(np.int16)
    label = np.zeros(shape, np.uint8)
    label[3:12, 2:6, 1:4] = 1  # an L: no flip or transpose maps it onto itself
    label[3:6, 6:15, 1:4] = 1
    image[label == 1] = 180
    affine = np.diag([*spacing, 1.0])
    affine[:3, 3] = origin
    return image, label, affine


def _flipped_xy(image, label, affine):
    """The same voxels stored with x and y reversed (an LPS-like affine)."""
    flipped = affine.copy()
    flipped[:3, :2] *= -1
    flipped[:3, 3] = affine[:3, :3] @ [image.shape[0] - 1, image.shape[1] - 1, 0] + affine[:3, 3]
    return image[::-1, ::-1], label[::-1, ::-1], flipped


def _flipped_z(image, label, affine):
    """The same voxels stored with slices from superior to inferior."""
    flipped = affine.copy()
    flipped[:3, 2] *= -1
    flipped[:3, 3] = affine[:3, :3] @ [0, 0, image.shape[2] - 1] + affine[:3, 3]
    return image[:, :, ::-1], label[:, :, ::-1], flipped


def _transposed_xy(image, label, affine):
    """The same voxels stored with the x and y axes swapped."""
    return image.transpose(1, 0, 2), label.transpose(1, 0, 2), affine[:, [1, 0, 2, 3]]


@pytest.mark.parametrize("pixel_mm", [None, 0.7])
def test_stored_orientation_does_not_change_the_slices(tmp_path, pixel_mm):
    ras = _anatomy()
    stored = [
        ras,
        _flipped_xy(*ras),
        _transposed_xy(*ras),
        _flipped_z(*_transposed_xy(*_flipped_xy(*ras))),
    ]
    assert not np.array_equal(stored[1][0], ras[0])  # the files do differ
    root = write_msd_cases(tmp_path / "msd", stored)
    settings = SliceSettings((0, 255), 32, pixel_mm=pixel_mm)
    data = load_slices(list_cases(root), settings, tmp_path / "c")
    n = ras[0].shape[2]
    assert len(data) == 4 * n and data.images.shape[1:] == (32, 32)
    assert np.array_equal(data.z, np.tile(np.arange(n), 4))
    images, masks = np.asarray(data.images), np.asarray(data.masks)
    assert masks[:n].any() and images[:n].any()
    for case in range(1, 4):
        part = slice(case * n, (case + 1) * n)
        assert np.array_equal(images[part], images[:n]), f"case {case}: images differ"
        assert np.array_equal(masks[part], masks[:n]), f"case {case}: masks differ"


def test_a_volume_stored_in_coronal_order_is_sliced_axially(tmp_path):
    image, label, affine = _anatomy()
    # file axes (x, z, y): the second axis runs superior, the third anterior
    coronal = (image.transpose(0, 2, 1), label.transpose(0, 2, 1), affine[:, [0, 2, 1, 3]])
    assert coronal[0].shape == (20, 5, 24)  # thinner than 8 voxels in the file's 2nd axis
    root = write_msd_cases(tmp_path / "msd", [(image, label, affine), coronal])
    data = load_slices(list_cases(root), SliceSettings((0, 255), 16), tmp_path / "c")
    assert len(data) == 10
    assert np.array_equal(data.images[5:], data.images[:5])
    assert np.array_equal(data.masks[5:], data.masks[:5])


def test_too_small_after_reorienting_names_both_shapes(tmp_path):
    image, label, affine = _anatomy(shape=(20, 24, 5))
    # stored (20, 24, 5) but its third axis is anterior: 5 voxels across in RAS
    root = write_msd_cases(tmp_path / "msd", [(image, label, affine[:, [0, 2, 1, 3]])])
    path = root / "imagesTr" / "case_0.nii.gz"
    _load_fails(
        root,
        tmp_path,
        f"image {re.escape(str(path))} has shape \\(20, 5, 24\\) after reorienting to RAS "
        r"\(stored as \(20, 24, 5\)\), too small to slice",
    )


# --- default: every slice resized to image_size, as in the thesis ---------------------------


def _old_preprocessing(image: np.ndarray, label: np.ndarray, size: int):
    """The slices as CACHE_VERSION 2 made them: the stored array, windowed to [0, 255]."""
    from monai.transforms import Resize, ScaleIntensityRange

    img = ScaleIntensityRange(0, 255, 0.0, 1.0, clip=True)(torch.as_tensor(image).float())
    shape = (size, size, image.shape[2])
    img = Resize(shape, mode="trilinear", align_corners=False)(img[None])[0]
    lab = Resize(shape, mode="nearest")(torch.as_tensor(label == 1)[None].float())[0]
    img = torch.as_tensor(img).permute(2, 0, 1).numpy().astype(np.float16)
    return img, (torch.as_tensor(lab).permute(2, 0, 1).numpy() > 0.5).astype(np.uint8)


@pytest.mark.parametrize("size", [16, 20, 32])  # down, same, up (x is 20 voxels)
def test_default_slices_of_an_ras_volume_are_unchanged(tmp_path, size):
    image, label, affine = _anatomy()
    root = write_msd_cases(tmp_path / "msd", [(image, label, affine)])
    settings = SliceSettings((0, 255), size)
    assert settings.pixel_mm is None and SliceSettings((0, 255), size, (1,), (0,), None) == settings
    data = load_slices(list_cases(root), settings, tmp_path / "c")
    old_images, old_masks = _old_preprocessing(image, label, size)
    assert np.array_equal(data.images, old_images)
    assert np.array_equal(data.masks, old_masks)
    assert CACHE_VERSION >= 3  # bumped: reoriented volumes can differ from the old cache


# --- pixel_mm: resample to one pixel spacing, then centre-crop or pad ----------------------


def _disk(spacing, fov_mm=60.0, radius_mm=20.0, slices=2):
    """A disk of ``radius_mm`` (spleen HU) centred in a ``fov_mm`` square of soft tissue."""
    nx, ny = (round(fov_mm / s) for s in spacing)
    x = (np.arange(nx) + 0.5) * spacing[0] - fov_mm / 2
    y = (np.arange(ny) + 0.5) * spacing[1] - fov_mm / 2
    inside = x[:, None] ** 2 + y[None, :] ** 2 <= radius_mm**2
    label = np.repeat(inside[:, :, None], slices, axis=2).astype(np.uint8)
    image = np.where(label == 1, 200, 50).astype(np.int16)
    return image, label, np.diag([*spacing, 5.0, 1.0])


@pytest.mark.parametrize("size", [48, 80])  # field of view 60 mm: cropped, padded
def test_pixel_mm_gives_every_scan_the_same_pixel_size(tmp_path, size):
    spacings = [(0.5, 0.5), (1.0, 1.0), (0.6, 0.9)]
    root = write_msd_cases(tmp_path / "msd", [_disk(s) for s in spacings])
    data = load_slices(list_cases(root), SliceSettings((0, 255), size, pixel_mm=1.0), tmp_path)
    assert data.images.shape == data.masks.shape == (2 * len(spacings), size, size)
    expected = math.pi * 20.0**2  # mm^2 = pixels at 1 mm
    areas = data.masks.sum(axis=(1, 2))
    assert np.all(np.abs(areas / expected - 1) < 0.03), areas
    centre = (size - 1) / 2
    for mask in data.masks:
        assert np.allclose(np.argwhere(mask).mean(axis=0), centre, atol=1.0)
    if size == 80:  # 60 mm at 1 mm in 80 pixels: 10 pixels of padding each side
        images = np.asarray(data.images)
        assert not images[:, :10].any() and not images[:, 70:].any()
        assert not images[:, :, :10].any() and not images[:, :, 70:].any()
        assert (images[:, 10:70, 10:70] > 0.15).all()  # soft tissue and disk, not padding
    default = load_slices(list_cases(root), SliceSettings((0, 255), size), tmp_path)
    assert default.key != data.key  # pixel_mm is part of the cache key


@pytest.mark.parametrize("value", [0, -1.0, float("nan"), float("inf"), True, "1"])
def test_pixel_mm_must_be_positive(value):
    with pytest.raises(ConfigError, match=r"data\.pixel_mm must be a pixel spacing in mm > 0"):
        SliceSettings(pixel_mm=value)


def test_pixel_mm_is_stored_as_float():
    assert SliceSettings(pixel_mm=1).pixel_mm == 1.0
    assert isinstance(SliceSettings(pixel_mm=np.float32(0.5)).pixel_mm, float)


def test_pixel_mm_needs_the_affine_of_the_volume():
    from monai.data import MetaTensor

    settings = SliceSettings((0, 255), 8, pixel_mm=0.5)
    with pytest.raises(ValueError, match="pixel_mm needs the voxel spacing"):
        preprocess_volume(torch.zeros(4, 4, 1), torch.zeros(4, 4, 1), settings)
    affine = torch.diag(torch.tensor([1.0, 2.0, 3.0, 1.0]))
    image = MetaTensor(torch.zeros(4, 4, 1), affine=affine)
    img, mask = preprocess_volume(image, torch.ones(4, 4, 1), settings)
    assert img.shape == mask.shape == (1, 8, 8)
    # 4 mm x 8 mm at 0.5 mm: 8 x 16 pixels, the y axis cropped to the central 8
    assert mask.all()


@pytest.mark.parametrize("damage", ["truncated", "flipped byte", "deleted", "no manifest"])
def test_a_damaged_slice_cache_is_rebuilt_and_says_so(tiny_msd, tmp_path, damage):
    cases, settings = list_cases(tiny_msd), SliceSettings((0, 255), 16)
    first = load_slices(cases, settings, tmp_path / "cache")
    images, masks = np.array(first.images), np.array(first.masks)
    folder = tmp_path / "cache" / "slices" / first.key
    victim = folder / ("manifest.json" if damage == "no manifest" else "images.npy")
    size = victim.stat().st_size
    if damage == "truncated":
        victim.write_bytes(victim.read_bytes()[: size // 2])
    elif damage == "flipped byte":
        raw = bytearray(victim.read_bytes())
        raw[-1] ^= 0xFF
        victim.write_bytes(bytes(raw))
    else:
        victim.unlink()
    lines = []
    again = load_slices(cases, settings, tmp_path / "cache", lines.append)
    why = {
        "truncated": f"{size // 2:,} bytes, expected {size:,}",
        "flipped byte": "its sha256 differs from the manifest's",
        "deleted": "missing",
        "no manifest": "missing: written by an older version?",
    }[damage]
    assert lines == [f"rebuilding {folder}: {victim.name} is damaged ({why})"]
    assert np.array_equal(again.images, images) and np.array_equal(again.masks, masks)
    lines.clear()
    load_slices(cases, settings, tmp_path / "cache", lines.append)
    assert lines == []  # rebuilt whole: the next load trusts it
    assert sorted(p.name for p in folder.parent.iterdir()) == [first.key]  # nothing left aside
