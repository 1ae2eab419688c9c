"""The frozen teacher during distillation: its fastest inference path, in one place."""

from __future__ import annotations

import torch
from torch import Tensor

from kdcore.models.unet import UNet


def freeze(teacher: UNet) -> UNet:
    """Eval mode, no parameter gradients, channels_last weights (faster convolutions on
    CPU and CUDA alike: 2.7 s -> 2.2 s for T1 at 256x256, batch 4, on a 2-core CPU)."""
    teacher.requires_grad_(False)
    return teacher.eval().to(memory_format=torch.channels_last)


def teacher_taps(teacher: UNet, x: Tensor) -> dict[str, Tensor]:
    """The frozen teacher's taps for ``x``, as contiguous float32 tensors.

    Runs under ``torch.inference_mode`` without the reconstruction decoder, on a
    channels_last input, in bf16 autocast on CUDA. The taps are copied out of inference
    mode once (inference tensors cannot be saved for the backward pass of the heads that
    read them); the copy also restores the contiguous layout the losses flatten.
    """
    cuda = x.device.type == "cuda"
    with torch.inference_mode(), torch.autocast(x.device.type, torch.bfloat16, enabled=cuda):
        taps = teacher(x.contiguous(memory_format=torch.channels_last), with_recon=False)
    return {
        k: torch.empty(v.shape, dtype=torch.float32, device=v.device).copy_(v)
        for k, v in taps.items()
    }
