"""Per-volume checks of NIfTI images and labels, each failing with one clear ConfigError.

Every message names the file, says what is wrong and what to do: a file that cannot be
read, a volume too small to slice, non-finite voxels, an image and label on different
voxel grids, label values that are neither foreground nor background.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import torch
from nibabel.filebasedimages import ImageFileError
from nibabel.spatialimages import HeaderDataError

from kdcore.errors import ConfigError

# Smallest volume that is sliced: at least one axial slice of MIN_INPLANE x MIN_INPLANE
# voxels. Fewer voxels cannot outline an organ (and would be upsampled more than 32x to
# the default 256 image size); 8 is also the smallest allowed SliceSettings.image_size.
MIN_INPLANE = 8
MIN_SLICES = 1

# What reading a damaged or non-NIfTI file raises: nibabel's file-type and header
# errors, gzip / zlib errors and short reads (OSError, EOFError), numpy's errors on
# impossible header sizes (ValueError) and MONAI's "no suitable reader" (RuntimeError).
READ_ERRORS = (
    ImageFileError,
    HeaderDataError,
    OSError,
    EOFError,
    zlib.error,
    ValueError,
    RuntimeError,
)

AFFINE_ATOL = 1e-3  # mm (and direction cosines): float round-off, not a real mismatch


def read_volume(loader: Callable[[Path], torch.Tensor], path: Path, role: str) -> torch.Tensor:
    """``loader(path)``, with read errors turned into a ConfigError naming ``role`` and file."""
    try:
        return loader(path)
    except FileNotFoundError:
        raise ConfigError(f"{role} {path} does not exist; restore it or fix dataset.json") from None
    except READ_ERRORS as err:
        raise ConfigError(
            f"{role} {path} cannot be read as NIfTI: {_short_reason(err)}; "
            "re-download or re-export it"
        ) from None


def check_image(image: torch.Tensor, path: Path, modalities: tuple[str, ...] = ()) -> None:
    """A 3D (X, Y, Z) volume, or (X, Y, Z, M) with one channel per modality when the
    dataset.json names M > 1 ``modalities``, with voxels, all finite (its size:
    ``check_slice_size``)."""
    shape = tuple(image.shape)
    if image.numel() == 0:
        # MONAI flattens an empty volume; its header still has the shape, e.g. (512, 512, 0)
        header = getattr(image, "meta", {}).get("spatial_shape", shape)
        raise ConfigError(
            f"image {path} holds no voxels (shape {tuple(int(n) for n in header)}, "
            "e.g. zero slices); re-export it as a 3D (X, Y, Z) volume or remove the case "
            "from dataset.json"
        )
    if len(modalities) > 1:
        if image.ndim != 4 or image.shape[3] != len(modalities):
            found = image.shape[3] if image.ndim == 4 else 1
            raise ConfigError(
                f"image {path} has shape {shape}: {found} modality channel(s), but the "
                f"dataset.json names {len(modalities)} ({', '.join(modalities)}); every "
                "image must hold each modality on its 4th axis: re-export it or fix the "
                "'modality' block of dataset.json"
            )
    elif image.ndim == 4 and image.shape[3] > 1:
        raise ConfigError(
            f"image {path} has shape {shape}: {image.shape[3]} channels on its 4th axis, but "
            "the dataset.json names one modality; list each in its 'modality' block "
            '({"0": "T2", "1": "ADC"}) or re-export the image as 3D'
        )
    elif image.ndim != 3:
        raise ConfigError(
            f"image {path} has shape {shape}; expected a 3D (X, Y, Z) volume of axial "
            "slices: re-export it as 3D or remove the case from dataset.json"
        )
    finite = torch.isfinite(image)
    if not bool(finite.all()):
        bad = (~finite).nonzero()
        first = tuple(int(i) for i in bad[0])
        raise ConfigError(
            f"image {path} has {len(bad)} non-finite voxel{'s' if len(bad) > 1 else ''} "
            f"(NaN or inf), the first at "
            f"voxel {first}; they would make every loss NaN: fix or re-export the image"
        )


def check_slice_size(
    image: torch.Tensor, path: Path, stored_shape: tuple[int, ...] | None = None
) -> None:
    """Axial slices of at least MIN_INPLANE^2 voxels, and at least MIN_SLICES of them.

    ``image`` is the volume as it is sliced (reoriented to RAS); ``stored_shape``, the
    shape in the file, is named in the message when it differs.
    """
    shape = tuple(int(n) for n in image.shape)
    if min(shape[:2]) >= MIN_INPLANE and shape[2] >= MIN_SLICES:
        return
    stored = tuple(int(n) for n in stored_shape) if stored_shape is not None else shape
    where = f" after reorienting to RAS (stored as {stored})" if stored != shape else ""
    raise ConfigError(
        f"image {path} has shape {shape}{where}, too small to slice: need at least "
        f"{MIN_INPLANE}x{MIN_INPLANE} voxels in-plane and {MIN_SLICES} slice(s); "
        "check the file (is it a thumbnail or wrongly oriented?) or remove the case "
        "from dataset.json"
    )


def check_pair(image: torch.Tensor, label: torch.Tensor, image_path: Path, label_path: Path):
    """The label covers the image voxel for voxel: same shape and same affine."""
    if tuple(image.shape) != tuple(label.shape):
        raise ConfigError(
            f"label {label_path} has shape {tuple(label.shape)} but its image "
            f"{image_path} has shape {tuple(image.shape)}; they must match voxel for voxel"
        )
    a_img, a_lab = _affine(image), _affine(label)
    if a_img is None or a_lab is None or np.allclose(a_img, a_lab, atol=AFFINE_ATOL):
        return
    differs = _affine_differences(a_lab, a_img) or [
        f"affine {_fmt_matrix(a_lab)} vs {_fmt_matrix(a_img)}"
    ]
    raise ConfigError(
        f"label {label_path} is not on the voxel grid of its image {image_path}: "
        f"{'; '.join(differs)} (label vs image); re-export the label with the image's "
        "affine or resample it onto the image"
    )


def label_mask(
    label: torch.Tensor,
    foreground: Iterable[int],
    background: Iterable[int],
    source: str | Path | None = None,
) -> torch.Tensor:
    """Label values -> uint8 mask: ``foreground`` values 1, ``background`` values 0.

    Any other value (or a non-integer one) raises a ConfigError naming ``source`` (the
    label file) and listing the unexpected values.
    """
    fg = torch.tensor(sorted(foreground), dtype=label.dtype, device=label.device)
    bg = torch.tensor(sorted(background), dtype=label.dtype, device=label.device)
    is_fg = torch.isin(label, fg)
    known = is_fg | torch.isin(label, bg)
    if not bool(known.all()):
        values = torch.unique(torch.as_tensor(label)[~known]).tolist()
        shown = ", ".join(f"{v:g}" for v in values[:10]) + (", ..." if len(values) > 10 else "")
        name = f"label {source}" if source is not None else "label"
        raise ConfigError(
            f"{name} has values {{{shown}}} that are neither foreground "
            f"{_fmt_ints(foreground)} nor background {_fmt_ints(background)}; set "
            "data.foreground=[...] and data.background=[...] to say which label values "
            "are the organ and which are not (e.g. a multi-organ label map: "
            "data.foreground=[1] data.background=[0,2,3])"
        )
    return is_fg.to(torch.uint8)


def _short_reason(err: BaseException) -> str:
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    reason = lines[0] if lines else type(err).__name__
    return reason if len(reason) <= 160 else reason[:157] + "..."


def _affine(volume: torch.Tensor) -> np.ndarray | None:
    affine = getattr(volume, "affine", None)
    return None if affine is None else np.asarray(torch.as_tensor(affine), dtype=np.float64)


def _affine_differences(label: np.ndarray, image: np.ndarray) -> list[str]:
    """What differs between two 4x4 affines: spacing, origin, orientation."""
    out = []
    sp_l, sp_i = np.linalg.norm(label[:3, :3], axis=0), np.linalg.norm(image[:3, :3], axis=0)
    if not np.allclose(sp_l, sp_i, atol=AFFINE_ATOL):
        out.append(f"spacing {_fmt_vec(sp_l)} mm vs {_fmt_vec(sp_i)} mm")
    if not np.allclose(label[:3, 3], image[:3, 3], atol=AFFINE_ATOL):
        out.append(f"origin {_fmt_vec(label[:3, 3])} mm vs {_fmt_vec(image[:3, 3])} mm")
    with np.errstate(divide="ignore", invalid="ignore"):
        dir_l, dir_i = label[:3, :3] / sp_l, image[:3, :3] / sp_i
    if not np.allclose(dir_l, dir_i, atol=AFFINE_ATOL):
        out.append(f"orientation {_fmt_matrix(dir_l)} vs {_fmt_matrix(dir_i)}")
    return out


def _fmt_vec(v: np.ndarray) -> str:
    return "(" + ", ".join(f"{x:g}" for x in np.round(v, 4)) + ")"


def _fmt_matrix(m: np.ndarray) -> str:
    return "[" + ", ".join(_fmt_vec(row) for row in m) + "]"


def _fmt_ints(values: Iterable[int]) -> str:
    return "[" + ",".join(str(v) for v in values) + "]"
