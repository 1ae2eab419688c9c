"""U-Net teacher (multi-task) and students (U-Net-S, U-Net) of the thesis.

Every network returns a dict of named feature taps so that distillation can read
any scale without hooks:

- ``enc``: encoder output after the second pooling,
- ``bottleneck``: the deepest features,
- ``dec``: the last decoder features (before the 1x1 head),
- ``logits``: the segmentation logits (1 channel for one class, else background and
  each class),
- ``recon`` (teacher only, when asked for): the 3-channel reconstruction.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

FEATURE_TAPS = ("enc", "bottleneck", "dec")  # feature maps of every network
TAPS = (*FEATURE_TAPS, "logits")  # what distillation reads from a teacher


def conv_bn_relu(c_in: int, c_out: int) -> nn.Sequential:
    """3x3 convolution (with bias, as in the reference) + batch norm + ReLU."""
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, padding=1), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)
    )


def conv_block(c_in: int, c_out: int, convs: int) -> nn.Sequential:
    """``convs`` stacked conv+BN+ReLU layers (2 in the teacher, 1 in the students)."""
    layers = [conv_bn_relu(c_in if i == 0 else c_out, c_out) for i in range(convs)]
    return nn.Sequential(*layers)


class Decoder(nn.Module):
    """Transposed-conv upsampling, skip concatenation and conv blocks, then a 1x1 head."""

    def __init__(self, widths: list[int], bottleneck: int, convs: int, out_channels: int):
        super().__init__()
        self.ups = nn.ModuleList()
        self.blocks = nn.ModuleList()
        c = bottleneck
        for w in reversed(widths):
            self.ups.append(nn.ConvTranspose2d(c, w, 2, stride=2))
            self.blocks.append(conv_block(2 * w, w, convs))
            c = w
        self.head = nn.Conv2d(widths[0], out_channels, 1)

    def forward(self, x: Tensor, skips: list[Tensor]) -> tuple[Tensor, Tensor]:
        """x: (B, C_bottleneck, h, w); skips: encoder features, shallow first.

        Returns (last decoder features (B, widths[0], H, W), head output (B, out, H, W)).
        """
        for up, block, skip in zip(self.ups, self.blocks, reversed(skips), strict=True):
            x = block(torch.cat([up(x), skip], dim=1))
        return x, self.head(x)


class UNet(nn.Module):
    """A U-Net with named taps and an optional second (reconstruction) decoder.

    Args:
        widths: channels of the encoder levels, shallow first (teacher T1: 64-128-256-512).
        bottleneck: channels of the bottleneck (T1: 1024).
        convs: conv+BN+ReLU layers per block (T1: 2, students: 1).
        reconstruction: add a decoder of identical shape ending in a 3-channel head.
        in_channels: input channels (3: the grey slice repeated; else one per modality).
        out_channels: logit channels (1: one class; else background and each class).

    Input spatial size must be divisible by ``2 ** len(widths)``.
    """

    def __init__(
        self,
        widths: list[int],
        bottleneck: int,
        convs: int,
        reconstruction: bool = False,
        in_channels: int = 3,
        out_channels: int = 1,
    ):
        super().__init__()
        if len(widths) < 2:
            raise ValueError("a U-Net needs at least 2 encoder levels (the enc tap is level 2)")
        self.widths = list(widths)
        self.encoder = nn.ModuleList()
        c = in_channels
        for w in widths:
            self.encoder.append(conv_block(c, w, convs))
            c = w
        self.pool = nn.MaxPool2d(2)
        self.bottleneck = conv_block(c, bottleneck, convs)
        self.seg_decoder = Decoder(widths, bottleneck, convs, out_channels)
        self.recon_decoder = (
            Decoder(widths, bottleneck, convs, out_channels=in_channels) if reconstruction else None
        )

    @property
    def tap_channels(self) -> dict[str, int]:
        """Channels of each feature tap."""
        return {
            "enc": self.widths[1],
            "bottleneck": self.bottleneck[0][0].out_channels,
            "dec": self.widths[0],
        }

    def forward(self, x: Tensor, with_recon: bool = True) -> dict[str, Tensor]:
        """x: (B, 3, H, W) -> taps. ``with_recon=False`` skips the reconstruction decoder."""
        skips = []
        taps: dict[str, Tensor] = {}
        for level, block in enumerate(self.encoder):
            x = block(x)
            skips.append(x)
            x = self.pool(x)
            if level == 1:
                taps["enc"] = x  # output of the 2nd pooling
        x = self.bottleneck(x)
        taps["bottleneck"] = x
        taps["dec"], taps["logits"] = self.seg_decoder(x, skips)
        if with_recon and self.recon_decoder is not None:
            taps["recon"] = self.recon_decoder(x, skips)[1]
        return taps


def build_teacher(
    width: int = 64, depth: int = 4, in_channels: int = 3, out_channels: int = 1
) -> UNet:
    """Multi-task teacher T1: widths width*(1, 2, 4, ...) over ``depth`` levels, two decoders.

    ``width=64, depth=4`` (3 input channels, 1 class) is the thesis's T1 (43,236,036
    parameters).
    """
    widths = [width * 2**i for i in range(depth)]
    return UNet(widths, width * 2**depth, 2, True, in_channels, out_channels)


def build_student(width: int = 16, in_channels: int = 3, out_channels: int = 1) -> UNet:
    """Student of the thesis's shape: 2 levels, one conv per block, bottleneck 4x width.

    ``width=16`` is S1 "U-Net-S" (57,297 parameters), ``width=32`` is S2 "U-Net" (227,233),
    both with 3 input channels and 1 class.
    """
    return UNet([width, 2 * width], 4 * width, 1, False, in_channels, out_channels)


def count_parameters(model: nn.Module) -> int:
    """Number of parameters (trainable or not)."""
    return sum(p.numel() for p in model.parameters())
