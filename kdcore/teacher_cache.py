"""The teacher-output cache: a frozen teacher's taps of every slice, written once and read
by every trial instead of running the teacher at every step.

Without augmentation a teacher's taps for a slice never change, so a grid can read them
from disk: memory-mapped float16 arrays in the teacher's folder (keyed by teacher and
data, so a new teacher gets a new cache). One writer (``write_outputs``) serves the
one-process teacher and the sharded one; ``TeacherOutputs`` reads. The folder is written
aside and renamed into place with a manifest of its files' sizes and checksums
(``kdcore.io.verified_dir``); ``cache_problem`` checks it before use.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from kdcore.data.slices import SliceData
from kdcore.errors import DamagedCacheError
from kdcore.io import verified_dir, verify_dir
from kdcore.models import TAPS


def write_outputs(
    folder: Path, data: SliceData, parts: Iterable[tuple[np.ndarray, dict[str, np.ndarray]]]
) -> None:
    """Write the cache of ``data`` into ``folder`` (aside, then renamed into place) from
    ``parts``: (slice indices, {tap: array of those slices}) in any order, covering every
    slice once."""
    n = len(data)
    with verified_dir(folder) as tmp:
        arrays: dict[str, np.memmap] = {}
        for idx, taps in parts:
            for name in TAPS:
                if name not in arrays:
                    arrays[name] = np.lib.format.open_memmap(
                        tmp / f"{name}.npy",
                        mode="w+",
                        dtype=np.float16,
                        shape=(n, *taps[name].shape[1:]),
                    )
                arrays[name][idx] = taps[name]
        for array in arrays.values():
            array.flush()
        meta = {
            "data": data.key,
            "slices": n,
            "bytes_per_slice": sum(a[0].nbytes for a in arrays.values()),
        }
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1))


def cache_problem(folder: Path, data: SliceData, checksums: bool = False) -> str | None:
    """Why the cache in ``folder`` cannot be used for ``data`` (missing, damaged: a file
    missing, cut short or, with ``checksums``, changed; or made for other data), or None
    when it can."""
    if not folder.is_dir():
        return "it does not exist"
    try:
        verify_dir(folder, checksums)
        meta = json.loads((folder / "meta.json").read_text())
    except DamagedCacheError as err:
        return f"{err.file} is damaged ({err.why})"
    except (OSError, ValueError) as err:
        return f"its meta.json cannot be read ({err})"
    if meta.get("data") != data.key or meta.get("slices") != len(data):
        return "it was made for other data"
    return None


class TeacherOutputs:
    """Read-only view of a teacher-output cache: ``outputs(idx, device)`` -> tap dict."""

    def __init__(self, folder: Path, data: SliceData):
        problem = cache_problem(folder, data)
        if problem is not None:
            raise ValueError(f"teacher-output cache {folder} cannot be used: {problem}")
        meta = json.loads((folder / "meta.json").read_text())
        self.bytes_per_slice = meta["bytes_per_slice"]
        self.arrays = {name: np.load(folder / f"{name}.npy", mmap_mode="r") for name in TAPS}

    def __call__(self, idx: np.ndarray, device: torch.device | str = "cpu") -> dict[str, Tensor]:
        """Taps of slices ``idx`` (sorted) as float32 tensors on ``device``.

        float16 is moved first (half the bytes to a GPU) and widened there; torch also
        widens faster than numpy on CPU.
        """
        return {
            name: torch.from_numpy(a[idx]).to(device).float() for name, a in self.arrays.items()
        }
