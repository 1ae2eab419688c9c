"""The student's objective: weighted segmentation loss plus the selected KD terms."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import torch
from torch import Tensor, nn

from kdcore.errors import ConfigError
from kdcore.losses.contrastive import ContrastiveTapLoss
from kdcore.losses.prediction_map import PredictionMapLoss
from kdcore.losses.segmentation import build_seg_loss
from kdcore.models.unet import TAPS

KD_TERMS = (*TAPS, "pmd")  # enc, bottleneck, dec (InfoNCE) and pmd (prediction map)

# Thesis weights: 0.4 seg, 0.2 bottleneck, 0.2 prediction map, 0.1 enc, 0.1 dec.
THESIS_WEIGHTS = {"seg": 0.4, "enc": 0.1, "bottleneck": 0.2, "dec": 0.1, "pmd": 0.2}


def parse_variant(variant: str) -> tuple[str, ...]:
    """'baseline' -> (); 'all' -> every term; 'bottleneck+pmd' -> ('bottleneck', 'pmd').

    Terms come back in canonical order, so 'pmd+enc' and 'enc+pmd' are the same variant.
    """
    if variant == "baseline":
        return ()
    if variant == "all":
        return KD_TERMS
    terms = variant.split("+")
    unknown = [t for t in terms if t not in KD_TERMS]
    if unknown or not variant:
        raise ConfigError(
            f"unknown KD term {unknown[0] if unknown else variant!r} in variant {variant!r}; a "
            f"variant is 'baseline', 'all', or terms joined by '+' from {', '.join(KD_TERMS)}"
        )
    return tuple(t for t in KD_TERMS if t in terms)


class DistillationLoss(nn.Module):
    """``w_seg * seg + sum_k w_k * kd_k`` over the enabled KD terms.

    With no KD terms this is the baseline objective, so a baseline and its KD runs differ
    only in the KD terms. The projection heads of the contrastive terms are parameters of
    this module: optimise them together with the student.

    Args:
        terms: enabled KD terms, a subset of ``KD_TERMS``.
        weights: weight per term name, plus ``seg``.
        student_channels / teacher_channels: channels of the taps (``UNet.tap_channels``).
        seg_loss: ``dice`` or ``dicebce``.
        temperature: InfoNCE temperature (thesis 0.4).
        pmd_temperature: prediction-map temperature (thesis 4).
    """

    def __init__(
        self,
        terms: Iterable[str],
        weights: Mapping[str, float],
        student_channels: Mapping[str, int] | None = None,
        teacher_channels: Mapping[str, int] | None = None,
        seg_loss: str = "dice",
        temperature: float = 0.4,
        pmd_temperature: float = 4.0,
    ):
        super().__init__()
        self.terms = tuple(terms)
        self.weights = {k: float(weights[k]) for k in ("seg", *self.terms)}
        self.seg = build_seg_loss(seg_loss)
        self.kd = nn.ModuleDict()
        for term in self.terms:
            if term == "pmd":
                self.kd[term] = PredictionMapLoss(pmd_temperature)
            else:
                self.kd[term] = ContrastiveTapLoss(
                    teacher_channels[term], student_channels[term], temperature
                )

    @property
    def needs_teacher(self) -> bool:
        """True when any KD term is enabled."""
        return bool(self.terms)

    @property
    def contrastive(self) -> bool:
        """True when any InfoNCE term is enabled (these need batches of 2 or more)."""
        return any(t in TAPS for t in self.terms)

    def formula(self) -> str:
        """The objective as text, e.g. '0.4*seg + 0.2*bottleneck + 0.2*pmd'."""
        return " + ".join(f"{w:g}*{name}" for name, w in self.weights.items())

    def forward(
        self,
        student: Mapping[str, Tensor],
        target: Tensor,
        teacher: Mapping[str, Tensor] | None = None,
    ) -> tuple[Tensor, dict[str, float]]:
        """student/teacher: tap dicts from ``UNet.forward``; target: (B, 1, H, W) in {0, 1}.

        Returns the total loss and the unweighted value of each term (for logging).
        """
        parts = {"seg": self.seg(student["logits"], target)}
        for term, loss in self.kd.items():
            key = "logits" if term == "pmd" else term
            parts[term] = loss(student[key], teacher[key])
        total = torch.stack([self.weights[k] * v for k, v in parts.items()]).sum()
        return total, {k: float(v.detach()) for k, v in parts.items()}
