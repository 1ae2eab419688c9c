"""Segmentation and distillation losses."""

from kdcore.losses.contrastive import ContrastiveTapLoss, info_nce
from kdcore.losses.distillation import (
    KD_TERMS,
    THESIS_WEIGHTS,
    DistillationLoss,
    parse_variant,
)
from kdcore.losses.multitask import MultiTaskLoss
from kdcore.losses.prediction_map import PredictionMapLoss, bernoulli_kl_with_logits
from kdcore.losses.segmentation import SEG_LOSSES, build_seg_loss

__all__ = [
    "KD_TERMS",
    "SEG_LOSSES",
    "THESIS_WEIGHTS",
    "ContrastiveTapLoss",
    "DistillationLoss",
    "MultiTaskLoss",
    "PredictionMapLoss",
    "bernoulli_kl_with_logits",
    "build_seg_loss",
    "info_nce",
    "parse_variant",
]
