"""Teacher-output cache: the frozen teacher's taps for every slice, computed once.

Without augmentation a teacher's taps for a slice never change, so a grid can read them
from disk instead of running the teacher at every step. They are stored as memory-mapped
float16 arrays beside the teacher's weights; the teacher's folder is keyed by its config
and the data, so a new teacher or new data gets a new cache.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from kdcore.data.slices import SliceData
from kdcore.io import atomic_dir
from kdcore.models import UNet, teacher_taps
from kdcore.training import batches, model_device, to_tensors

TAPS = ("enc", "bottleneck", "dec", "logits")


def write_teacher_outputs(
    teacher: UNet, data: SliceData, folder: Path, batch_size: int = 32
) -> None:
    """Run ``teacher`` once over every slice of ``data`` and store its taps in ``folder``."""
    device = model_device(teacher)
    n = len(data)
    with atomic_dir(folder) as tmp:
        arrays = {}
        for idx in batches(np.arange(n), batch_size, None):
            x, _ = to_tensors(data, idx, device)
            taps = teacher_taps(teacher, x)
            for name in TAPS:
                if name not in arrays:
                    shape = (n, *taps[name].shape[1:])
                    arrays[name] = np.lib.format.open_memmap(
                        tmp / f"{name}.npy", mode="w+", dtype=np.float16, shape=shape
                    )
                arrays[name][idx] = taps[name].cpu().numpy()
        for array in arrays.values():
            array.flush()
        per_slice = sum(a[0].nbytes for a in arrays.values())
        meta = {"data": data.key, "slices": n, "bytes_per_slice": per_slice}
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1))


class TeacherOutputs:
    """Read-only view of a teacher-output cache: ``outputs(idx, device)`` -> tap dict."""

    def __init__(self, folder: Path, data: SliceData):
        meta = json.loads((folder / "meta.json").read_text())
        if meta["data"] != data.key or meta["slices"] != len(data):
            raise ValueError(f"teacher-output cache {folder} was made for other data")
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


def teacher_outputs(teacher: UNet, data: SliceData, folder: Path) -> TeacherOutputs:
    """The cache in ``folder``, written first if it does not exist yet."""
    if not (folder / "meta.json").is_file():
        write_teacher_outputs(teacher, data, folder)
    return TeacherOutputs(folder, data)
