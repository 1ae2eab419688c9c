"""Segmentation and distillation losses.

Importing this package registers every KD method (``registry.METHODS``): each method's
module is imported here.
"""

from kdcore.losses.attention import AttentionTransferLoss, attention_map
from kdcore.losses.channel_wise import ChannelWiseLoss, channel_wise_kl
from kdcore.losses.compiled import CompiledLoss, maybe_compile
from kdcore.losses.contrastive import ContrastiveTapLoss, info_nce
from kdcore.losses.distillation import (
    BASELINE,
    DEFAULT_SETTINGS,
    MTMS_TERMS,
    THESIS_WEIGHTS,
    DistillationLoss,
    Variant,
    canonical_term,
    needs_pairs,
    parse_term,
    parse_variant,
    term_weight,
)
from kdcore.losses.emkd import RegionAffinityLoss, region_affinity
from kdcore.losses.feature_mse import FeatureMSELoss
from kdcore.losses.hinton import HintonLoss
from kdcore.losses.multitask import MultiTaskLoss
from kdcore.losses.prediction_map import PredictionMapLoss, bernoulli_kl_with_logits
from kdcore.losses.registry import METHODS, KDMethod, register_method, temperature_keys
from kdcore.losses.segmentation import SEG_LOSSES, build_seg_loss

__all__ = [
    "BASELINE",
    "DEFAULT_SETTINGS",
    "METHODS",
    "MTMS_TERMS",
    "SEG_LOSSES",
    "THESIS_WEIGHTS",
    "AttentionTransferLoss",
    "ChannelWiseLoss",
    "CompiledLoss",
    "ContrastiveTapLoss",
    "DistillationLoss",
    "FeatureMSELoss",
    "HintonLoss",
    "KDMethod",
    "MultiTaskLoss",
    "PredictionMapLoss",
    "RegionAffinityLoss",
    "Variant",
    "attention_map",
    "bernoulli_kl_with_logits",
    "build_seg_loss",
    "canonical_term",
    "channel_wise_kl",
    "info_nce",
    "maybe_compile",
    "needs_pairs",
    "parse_term",
    "parse_variant",
    "register_method",
    "region_affinity",
    "temperature_keys",
    "term_weight",
]
