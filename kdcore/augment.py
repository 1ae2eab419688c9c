"""Optional training augmentation: random flips and 90-degree rotations (MONAI).

Off by default, as in the thesis. With it on, a KD student's teacher sees the same
augmented slices (the live teacher runs on the batch), so the teacher-output cache,
which holds the taps of unaugmented slices, cannot be used with it.
"""

from __future__ import annotations

import torch
from monai.transforms import Compose, RandFlipd, RandRotate90d
from torch import Tensor

KEYS = ("image", "mask")


def augmenter(seed: int) -> Compose:
    """Flips along each axis (p=0.5 each) and a rotation by k*90 degrees (p=0.5), applied
    to image and mask together; the random state is fixed by ``seed``."""
    transform = Compose(
        [
            RandFlipd(KEYS, prob=0.5, spatial_axis=0),
            RandFlipd(KEYS, prob=0.5, spatial_axis=1),
            RandRotate90d(KEYS, prob=0.5, max_k=3),
        ]
    )
    transform.set_random_state(seed=seed)
    return transform


def augment_batch(transform: Compose, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    """Apply ``transform`` to each (image (C, H, W), mask (1, H, W)) pair of a batch."""
    pairs = [transform({"image": xi, "mask": yi}) for xi, yi in zip(x, y, strict=True)]
    return (
        torch.stack([torch.as_tensor(p["image"]) for p in pairs]),
        torch.stack([torch.as_tensor(p["mask"]) for p in pairs]),
    )
