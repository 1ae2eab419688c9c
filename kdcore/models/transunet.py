"""Multi-task TransUNet teacher T2: a ResNet encoder, a Vision Transformer over the patch
tokens of its 1/16 feature map, and the two decoders of T1 (segmentation, reconstruction).

Chen et al. 2021 (TransUNet), R50-ViT-B/16 hybrid: at ``width=16`` the encoder's
channels are TransUNet's (64 at 1/2, 256 at 1/4, 512 at 1/8, 1024 at 1/16, ResNet-50
stages of 3, 4 and 9 bottleneck blocks), the transformer is ViT-B (768 wide, 12 pre-norm
blocks of 12 heads, MLP 3072) over one token per 1/16 pixel: 256 tokens at 256x256. The
reference's ViT saw a single token (its attention was degenerate); this one attends over
``(image_size / 16) ** 2`` tokens with learned position embeddings.

Departures from TransUNet, for the taps and decoders T1 has: a full-resolution stem
(``width`` channels) gives the decoders a skip at full resolution, and the decoders are
T1's (transposed-conv upsampling, two conv+BN+ReLU per level) rather than the cascaded
upsampler. Taps as T1: ``enc`` (1/4), ``bottleneck`` (the transformer's output map,
1/16), ``dec``, ``logits``, ``recon``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kdcore.models.unet import Decoder, conv_block

PATCH_STRIDE = 16  # the 1/16 feature map: one token per pixel of it


class Bottleneck(nn.Module):
    """ResNet bottleneck block (1x1, 3x3 with the stride, 1x1; projection shortcut)."""

    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        mid = c_out // 4
        self.body = nn.Sequential(
            nn.Conv2d(c_in, mid, 1, bias=False),
            nn.BatchNorm2d(mid),
            nn.ReLU(inplace=True),
            nn.Conv2d(mid, mid, 3, stride=stride, padding=1, bias=False),
            nn.BatchNorm2d(mid),
            nn.ReLU(inplace=True),
            nn.Conv2d(mid, c_out, 1, bias=False),
            nn.BatchNorm2d(c_out),
        )
        self.shortcut = (
            nn.Identity()
            if stride == 1 and c_in == c_out
            else nn.Sequential(
                nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), nn.BatchNorm2d(c_out)
            )
        )

    def forward(self, x: Tensor) -> Tensor:
        """x: (B, c_in, H, W) -> (B, c_out, H / stride, W / stride)."""
        return F.relu(self.body(x) + self.shortcut(x))


def resnet_stage(c_in: int, c_out: int, blocks: int, stride: int) -> nn.Sequential:
    """``blocks`` bottleneck blocks, the first with ``stride``."""
    return nn.Sequential(
        *(
            Bottleneck(c_in if i == 0 else c_out, c_out, stride if i == 0 else 1)
            for i in range(blocks)
        )
    )


class TransformerBlock(nn.Module):
    """Pre-norm Transformer block: x + MHSA(LN(x)), then x + MLP(LN(x))."""

    def __init__(self, dim: int, heads: int, mlp: int):
        super().__init__()
        if dim % heads:
            raise ValueError(f"transformer width {dim} is not divisible by {heads} heads")
        self.heads = heads
        self.norm1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, mlp), nn.GELU(), nn.Linear(mlp, dim))

    def attention_weights(self, x: Tensor) -> Tensor:
        """The block's attention probabilities (B, heads, N, N) for tokens ``x`` (B, N, D)."""
        q, k, _ = self._qkv(self.norm1(x))
        return (q @ k.transpose(-2, -1) * q.shape[-1] ** -0.5).softmax(-1)

    def _qkv(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        b, n, d = x.shape
        qkv = self.qkv(x).view(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        return qkv[0], qkv[1], qkv[2]

    def forward(self, x: Tensor) -> Tensor:
        """x: (B, N, D) tokens -> (B, N, D)."""
        q, k, v = self._qkv(self.norm1(x))
        attended = F.scaled_dot_product_attention(q, k, v)  # (B, heads, N, D / heads)
        x = x + self.proj(attended.transpose(1, 2).flatten(2))
        return x + self.mlp(self.norm2(x))


class TransUNet(nn.Module):
    """T2 with named taps (see the module docstring).

    Args:
        width: stem channels; the encoder has 4, 16, 32 and 64 times as many at 1/2 to
            1/16 (16: TransUNet's R50 channels).
        blocks: bottleneck blocks of the three ResNet stages (R50: 3, 4, 9).
        hidden, layers, heads, mlp: the transformer (ViT-B: 768, 12, 12, 3072).
        image_size: input side, divisible by 16; fixes the number of position embeddings.
        in_channels: input channels (3: the grey slice repeated; else one per modality).
        out_channels: logit channels (1: one class; else background and each class).
    """

    def __init__(
        self,
        width: int,
        blocks: tuple[int, int, int],
        hidden: int,
        layers: int,
        heads: int,
        mlp: int,
        image_size: int,
        in_channels: int = 3,
        out_channels: int = 1,
    ):
        super().__init__()
        if image_size % PATCH_STRIDE:
            raise ValueError(f"T2 needs image_size divisible by {PATCH_STRIDE}, got {image_size}")
        c = [width, 4 * width, 16 * width, 32 * width, 64 * width]
        self.stem = conv_block(in_channels, c[0], 2)  # full resolution
        self.root = nn.Sequential(  # 1/2, as ResNet's 7x7 stride-2 root
            nn.Conv2d(c[0], c[1], 7, stride=2, padding=3, bias=False),
            nn.BatchNorm2d(c[1]),
            nn.ReLU(inplace=True),
        )
        self.stages = nn.ModuleList(
            [
                nn.Sequential(nn.MaxPool2d(3, 2, 1), resnet_stage(c[1], c[2], blocks[0], 1)),
                resnet_stage(c[2], c[3], blocks[1], 2),
                resnet_stage(c[3], c[4], blocks[2], 2),
            ]
        )
        self.tokens = (image_size // PATCH_STRIDE) ** 2
        self.embed = nn.Conv2d(c[4], hidden, 1)  # patch size 1 on the 1/16 map
        self.position = nn.Parameter(torch.zeros(1, self.tokens, hidden))
        nn.init.trunc_normal_(self.position, std=0.02)
        self.blocks = nn.ModuleList(TransformerBlock(hidden, heads, mlp) for _ in range(layers))
        self.norm = nn.LayerNorm(hidden)
        widths = c[:4]  # skips at 1/1, 1/2, 1/4, 1/8
        self.seg_decoder = Decoder(widths, hidden, 2, out_channels=out_channels)
        self.recon_decoder = Decoder(widths, hidden, 2, out_channels=in_channels)
        self.enc_channels, self.hidden = c[2], hidden

    @property
    def tap_channels(self) -> dict[str, int]:
        """Channels of each feature tap."""
        return {
            "enc": self.enc_channels,
            "bottleneck": self.hidden,
            "dec": self.stem[0][0].out_channels,
        }

    def encode(self, x: Tensor) -> tuple[Tensor, list[Tensor], Tensor]:
        """x: (B, 3, H, W) -> (patch tokens (B, N, hidden), skips shallow first, enc tap)."""
        skips = [self.stem(x)]
        skips.append(self.root(skips[0]))
        x = skips[1]
        for i, stage in enumerate(self.stages):
            x = stage(x)
            if i < 2:
                skips.append(x)
        tokens = self.embed(x).flatten(2).transpose(1, 2)  # (B, N, hidden)
        return tokens, skips, skips[2]

    def transform(self, tokens: Tensor, side: int) -> Tensor:
        """Patch tokens (B, N, hidden), in raster order -> the transformer's map
        (B, hidden, side, side). Each token's learned position embedding is added here."""
        tokens = tokens + self.position
        for block in self.blocks:
            tokens = block(tokens)
        return self.norm(tokens).transpose(1, 2).unflatten(2, (side, side))

    def forward(self, x: Tensor, with_recon: bool = True) -> dict[str, Tensor]:
        """x: (B, 3, H, W) -> taps. ``with_recon=False`` skips the reconstruction decoder."""
        side = x.shape[-1] // PATCH_STRIDE
        tokens, skips, enc = self.encode(x)
        bottleneck = self.transform(tokens, side)
        taps = {"enc": enc, "bottleneck": bottleneck}
        taps["dec"], taps["logits"] = self.seg_decoder(bottleneck, skips)
        if with_recon:
            taps["recon"] = self.recon_decoder(bottleneck, skips)[1]
        return taps
