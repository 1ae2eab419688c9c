"""Index batches of slices, and slices as tensors."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
from torch import Tensor

from kdcore.data.slices import SliceData


def batches(
    indices: np.ndarray, batch_size: int, rng: np.random.Generator | None
) -> Iterator[np.ndarray]:
    """Sorted index batches of ``indices`` (shuffled when ``rng`` is given).

    A last batch of a single sample is folded into the previous one: InfoNCE needs
    at least 2 samples, and baseline and KD runs must see the same batches.
    """
    order = rng.permutation(indices) if rng is not None else np.asarray(indices)
    starts = list(range(0, len(order), batch_size))
    if len(starts) > 1 and len(order) - starts[-1] == 1:
        starts.pop()
    for i, start in enumerate(starts):
        end = starts[i + 1] if i + 1 < len(starts) else len(order)
        yield np.sort(order[start:end])


def rank_share(idx: np.ndarray, rank: int, world: int) -> np.ndarray:
    """Rank ``rank``'s contiguous share of batch ``idx`` among ``world`` data-parallel
    workers (shares differ in size by at most one)."""
    return np.array_split(np.asarray(idx), world)[rank]


def to_tensors(
    data: SliceData, idx: np.ndarray, device: torch.device | str = "cpu"
) -> tuple[Tensor, Tensor]:
    """Slices ``idx`` -> images (B, 3, H, W) (one grey modality, repeated; with M > 1
    modalities (B, M, H, W)) and masks (B, 1, H, W) of class indices, float32."""
    x = torch.from_numpy(np.asarray(data.images[idx], dtype=np.float32))
    y = torch.from_numpy(np.asarray(data.masks[idx], dtype=np.float32))[:, None]
    if x.ndim == 4:
        return x.to(device), y.to(device)
    return x[:, None].to(device).expand(-1, 3, -1, -1), y.to(device)
