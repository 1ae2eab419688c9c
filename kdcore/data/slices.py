"""NIfTI volumes -> preprocessed axial 2D slices, cached on disk."""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from monai.transforms import (
    LoadImage,
    Orientation,
    Resize,
    ScaleIntensityRange,
    ScaleIntensityRangePercentiles,
)

from kdcore.data.checks import check_image, check_pair, check_slice_size, read_volume
from kdcore.data.classes import BINARY, LabelClasses
from kdcore.data.msd import Case
from kdcore.errors import ConfigError
from kdcore.io import cached_dir

CACHE_VERSION = 3  # bump when the preprocessing code changes what it writes


@dataclass(frozen=True)
class SliceSettings:
    """How volumes become slices: HU window scaled to [0, 1], then in-plane resize.

    Label voxels whose value is in ``foreground`` become 1, those in ``background`` 0;
    any other label value is an error (e.g. a multi-organ label map needs
    ``foreground=(1,), background=(0, 2, 3)``). ``classes`` (several classes) replaces
    them both: each voxel becomes its class index (``LabelClasses.class_map``).

    ``modalities`` () is one CT image per case, scaled by the HU ``window``; else the
    images' channels (a 4D NIfTI's last axis), in order: a "CT" channel scaled by the
    window, any other (MR) by its volume's 0.5th and 99.5th percentiles.

    ``pixel_mm`` None (the thesis): every slice is resized to ``image_size`` x
    ``image_size`` whatever its pixel spacing. A number: slices are resampled to that
    in-plane spacing (mm), then centre-cropped or zero-padded to ``image_size`` x
    ``image_size``, so a pixel is the same size in every scan.
    """

    window: tuple[float, float] = (0.0, 255.0)  # thesis: raw HU clipped to [0, 255]
    image_size: int = 256
    foreground: tuple[int, ...] = (1,)
    background: tuple[int, ...] = (0,)
    pixel_mm: float | None = None
    classes: LabelClasses | None = None
    modalities: tuple[str, ...] = ()

    @property
    def label_classes(self) -> LabelClasses:
        """The classes of the masks: ``classes``, or the binary task of ``foreground``."""
        if self.classes is not None:
            return self.classes
        return LabelClasses(BINARY.names, (self.foreground,), self.background)

    def key(self) -> dict:
        """What the slices depend on: the binary task keeps the keys it always had."""
        settings = asdict(self)
        classes = settings.pop("classes")
        if not settings["modalities"]:
            settings.pop("modalities")
        if self.classes is not None and not self.classes.binary:
            settings.pop("foreground")
            settings["background"] = list(self.classes.background)
            settings["classes"] = dict(zip(classes["names"], classes["values"], strict=True))
        elif self.classes is not None:
            settings["foreground"] = classes["values"][0]
            settings["background"] = classes["background"]
        return settings

    def __post_init__(self):
        if self.pixel_mm is not None:
            pixel_mm = self.pixel_mm
            if (
                isinstance(pixel_mm, bool)
                or not isinstance(pixel_mm, (int, float, np.integer, np.floating))
                or not math.isfinite(pixel_mm)
                or pixel_mm <= 0
            ):
                raise ConfigError(
                    f"data.pixel_mm must be a pixel spacing in mm > 0 (or null to resize "
                    f"every slice to image_size), got {pixel_mm!r}"
                )
            object.__setattr__(self, "pixel_mm", float(pixel_mm))
        if not self.window[0] < self.window[1]:
            raise ConfigError(f"window must be [low, high] with low < high, got {self.window}")
        if self.image_size < 8:
            raise ConfigError(f"image_size must be at least 8, got {self.image_size}")
        for name in ("foreground", "background"):
            values = getattr(self, name)
            if isinstance(values, (str, bytes)) or not all(
                isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in values
            ):
                raise ConfigError(
                    f"data.{name} must be a list of integer label values, got {values!r}"
                )
            object.__setattr__(self, name, tuple(int(v) for v in values))
        if not self.foreground:
            raise ConfigError(
                "data.foreground is empty: list the label values of the organ, e.g. "
                "data.foreground=[1]"
            )
        both = sorted(set(self.foreground) & set(self.background))
        if both:
            raise ConfigError(
                f"label values {both} are in both data.foreground={list(self.foreground)} "
                f"and data.background={list(self.background)}; put each value in one of them"
            )


@dataclass
class SliceData:
    """All slices of a dataset, in case order then z order.

    images: (N, H, W) float16 in [0, 1] (N, M, H, W with M > 1 modalities); masks:
    (N, H, W) uint8 class indices (0 the background; {0, 1} for the binary task), of the
    ``classes``; H and W are
    the volume's x and y axes in RAS orientation (x increasing towards the patient's
    right, y towards anterior).
    case: (N,) index into ``case_names`` of each slice's volume; z: (N,) slice index in
    RAS order (inferior to superior).
    """

    images: np.ndarray
    masks: np.ndarray
    case: np.ndarray
    z: np.ndarray
    case_names: list[str]
    key: str
    classes: LabelClasses = BINARY

    def __len__(self) -> int:
        return len(self.case)


def preprocess_volume(
    image: torch.Tensor,
    label: torch.Tensor,
    settings: SliceSettings,
    label_path: str | Path | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(X, Y, Z) HU volume (or (M, X, Y, Z), one channel per modality) and label ->
    (Z, S, S) (or (Z, M, S, S)) float16 images and uint8 masks.

    The volumes are sliced as given: ``read_case`` has reoriented them to RAS. Image:
    each channel scaled to [0, 1] (``_normalise``: the HU window for CT), bilinear
    resize. Label: values mapped to class indices by ``settings.label_classes``
    (ConfigError naming ``label_path`` on any other value), then nearest resize (the
    reference's linear interpolation gave soft label edges). The z axis is never resampled.

    With ``settings.pixel_mm`` the in-plane resize is to that spacing (taken from the
    image's affine: a MONAI MetaTensor), then the slices are centre-cropped or padded to
    S x S, image with 0.0 (the window's low end: air), label with 0.
    """
    lo, hi = settings.window
    size = settings.image_size
    if settings.pixel_mm is None:
        inplane, label_mode = (size, size), "nearest"
    else:
        spacing = inplane_spacing(image)
        inplane = tuple(
            max(1, round(n * mm / settings.pixel_mm))
            for n, mm in zip(image.shape[-3:-1], spacing, strict=True)
        )
        # nearest-exact samples the same pixel centres as the image's bilinear resize
        label_mode = "nearest-exact"
    channels = image.float() if image.ndim == 4 else image.float()[None]  # (M, X, Y, Z)
    image = torch.stack(
        [
            _normalise(channel, name, (lo, hi))
            for channel, name in zip(channels, settings.modalities or ("CT",), strict=True)
        ]
    )
    shape = (*inplane, image.shape[-1])
    image = Resize(shape, mode="trilinear", align_corners=False)(image)
    mask = settings.label_classes.class_map(label, label_path)
    label = Resize(shape, mode=label_mode)(mask[None].float())[0]
    image, label = torch.as_tensor(image), torch.as_tensor(label)
    if settings.pixel_mm is not None:
        image = torch.stack([_crop_or_pad(c, size, 0.0) for c in image])
        label = _crop_or_pad(label, size, 0.0)
    # (Z, S, S) for one modality, (Z, M, S, S) for more
    image = image.permute(3, 0, 1, 2) if len(image) > 1 else image[0].permute(2, 0, 1)
    image = image.numpy().astype(np.float16)
    label = label.permute(2, 0, 1).numpy().round().astype(np.uint8)  # nearest: exact
    return image, label


def _normalise(channel: torch.Tensor, modality: str, window: tuple[float, float]) -> torch.Tensor:
    """One (X, Y, Z) channel scaled to [0, 1]: a CT one by the HU ``window``, any other
    (MR) by its own 0.5th and 99.5th percentiles."""
    if modality == "CT":
        return ScaleIntensityRange(*window, 0.0, 1.0, clip=True)(channel)
    return ScaleIntensityRangePercentiles(0.5, 99.5, 0.0, 1.0, clip=True)(channel)


def to_ras(volume: torch.Tensor) -> torch.Tensor:
    """An (X, Y, Z) MetaTensor with its voxels flipped / permuted to RAS orientation.

    Afterwards x increases towards the patient's right, y towards anterior, z towards
    superior, and the affine says so. Only axis flips and permutations (to the closest
    RAS axes for an oblique affine): no voxel is resampled. A plain tensor (no affine)
    is returned as it is.
    """
    if getattr(volume, "affine", None) is None:
        return volume
    # labels=None: the axis labels follow the MetaTensor's "space" (RAS for NIfTI)
    return Orientation(axcodes="RAS", labels=None)(volume[None])[0]


def inplane_spacing(volume: torch.Tensor) -> tuple[float, float]:
    """(x, y) voxel size in mm of an (X, Y, Z) MetaTensor, from its affine."""
    affine = getattr(volume, "affine", None)
    if affine is None:
        raise ValueError(
            "SliceSettings.pixel_mm needs the voxel spacing: pass the volume as a MONAI "
            "MetaTensor with its affine"
        )
    columns = np.asarray(torch.as_tensor(affine), dtype=np.float64)[:3, :2]
    sx, sy = np.linalg.norm(columns, axis=0)
    return float(sx), float(sy)


def _crop_or_pad(volume: torch.Tensor, size: int, value: float) -> torch.Tensor:
    """Centre-crop or pad (with ``value``) the first two axes of (X, Y, Z) to ``size``."""
    for axis in (0, 1):
        n = volume.shape[axis]
        if n > size:
            volume = volume.narrow(axis, (n - size) // 2, size)
        elif n < size:
            before = (size - n) // 2
            pad_shape = list(volume.shape)
            pad_shape[axis] = before
            head = volume.new_full(pad_shape, value)
            pad_shape[axis] = size - n - before
            tail = volume.new_full(pad_shape, value)
            volume = torch.cat([head, volume, tail], dim=axis)
    return volume


def cache_key(cases: list[Case], settings: SliceSettings) -> str:
    """Hash of the preprocessing settings and the source files (path, size, mtime)."""
    files = []
    for case in cases:
        for path in (case.image, case.label):
            stat = path.stat()
            files.append([str(path.resolve()), stat.st_size, stat.st_mtime_ns])
    blob = json.dumps([CACHE_VERSION, settings.key(), files], sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def load_slices(
    cases: list[Case],
    settings: SliceSettings,
    cache_dir: str | Path,
    log: Callable[[str], None] = print,
) -> SliceData:
    """Preprocess every slice of ``cases``, or read them back from ``cache_dir``.

    The cache entry is written to a temporary folder and renamed into place, so an
    interrupted run never leaves a half-written entry; its manifest is checked on every
    load, and a damaged entry (a truncated or altered file) is rebuilt, logged as
    'rebuilding <folder>: <file> is damaged (<why>)'.
    """
    key = cache_key(cases, settings)
    folder = cached_dir(
        Path(cache_dir) / "slices" / key, lambda tmp: _write_cache(cases, settings, tmp), log
    )
    meta = json.loads((folder / "meta.json").read_text())
    arrays = {n: np.load(folder / f"{n}.npy", mmap_mode="r") for n in ("images", "masks")}
    arrays.update({n: np.load(folder / f"{n}.npy") for n in ("case", "z")})
    return SliceData(
        case_names=meta["case_names"], key=key, classes=settings.label_classes, **arrays
    )


def foreground_slices(data: SliceData) -> np.ndarray:
    """(N,) bool: whether each slice's mask holds a voxel of any class."""
    masks = np.asarray(data.masks)
    return masks.reshape(len(masks), -1).any(axis=1)


def read_case(
    case: Case, loader: LoadImage | None = None, modalities: tuple[str, ...] = ()
) -> tuple[torch.Tensor, torch.Tensor]:
    """The checked (image, label) volumes of ``case``, both reoriented to RAS; with
    several ``modalities`` the image is (M, X, Y, Z), channel first.

    ConfigError naming the file if either cannot be read as NIfTI, the image is not a 3D
    volume (4D with one channel per modality) large enough to slice (in RAS orientation)
    or has non-finite voxels, or the label's shape or affine differs from the image's (as
    stored, before reorienting). Label values are checked by ``preprocess_volume``.
    """
    loader = loader or LoadImage(image_only=True)
    image = read_volume(loader, case.image, "image")
    label = read_volume(loader, case.label, "label")
    check_image(image, case.image, modalities)
    if image.ndim == 4:
        image = image[..., 0] if image.shape[3] == 1 else image
    if image.ndim == 4:  # one channel per modality: channel first, as MONAI's transforms
        spatial = image[..., 0]
        ras_image = Orientation(axcodes="RAS", labels=None)(image.permute(3, 0, 1, 2))
        check_slice_size(ras_image[0], case.image, tuple(image.shape))
    else:
        spatial = image
        ras_image = to_ras(image)
        check_slice_size(ras_image, case.image, tuple(image.shape))
    check_pair(spatial, label, case.image, case.label)
    return ras_image, to_ras(label)


def _write_cache(cases: list[Case], settings: SliceSettings, folder: Path) -> None:
    """Preprocess ``cases`` into the (empty, temporary) cache ``folder``."""
    loader = LoadImage(image_only=True)
    images, masks, case_ids, zs = [], [], [], []
    for i, case in enumerate(cases):
        image, label = read_case(case, loader, settings.modalities)
        img, msk = preprocess_volume(image, label, settings, case.label)
        images.append(img)
        masks.append(msk)
        case_ids.append(np.full(len(img), i, dtype=np.int32))
        zs.append(np.arange(len(img), dtype=np.int32))
    arrays = {"images": images, "masks": masks, "case": case_ids, "z": zs}
    for name, parts in arrays.items():
        np.save(folder / f"{name}.npy", np.concatenate(parts))
    meta = {"case_names": [c.name for c in cases], "settings": settings.key()}
    (folder / "meta.json").write_text(json.dumps(meta, indent=1))
