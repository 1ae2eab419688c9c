"""The student's objective: weighted segmentation loss plus the selected KD terms.

A KD term is one of
- ``enc``, ``bottleneck``, ``dec``: the thesis's InfoNCE at that scale (MTMS);
- ``pmd``: the thesis's prediction-map KL; ``hinton``: Hinton's soft-target loss;
- ``<method>@<scale>`` for a peer feature method at a scale: ``mse`` (FitNets), ``at``
  (attention transfer), ``cwd`` (channel-wise), ``imd`` / ``rad`` (EMKD's importance-map
  and region-affinity terms), e.g. ``at@dec``.

A variant joins terms with ``+`` (``bottleneck+pmd``), is ``baseline`` (no KD term) or
``all`` (the four MTMS terms), and may carry a label: ``fitnets:mse@enc+mse@dec``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import NamedTuple

from torch import Tensor, nn

from kdcore.errors import ConfigError
from kdcore.losses.attention import AttentionTransferLoss
from kdcore.losses.channel_wise import ChannelWiseLoss
from kdcore.losses.contrastive import ContrastiveTapLoss
from kdcore.losses.emkd import RegionAffinityLoss
from kdcore.losses.feature_mse import FeatureMSELoss
from kdcore.losses.hinton import HintonLoss
from kdcore.losses.prediction_map import PredictionMapLoss
from kdcore.losses.segmentation import build_seg_loss
from kdcore.models.unet import TAPS

MTMS_TERMS = (*TAPS, "pmd")  # enc, bottleneck, dec (InfoNCE) and pmd (prediction map)
LOGIT_TERMS = ("pmd", "hinton")
FEATURE_METHODS = ("mse", "at", "cwd", "imd", "rad")  # used as <method>@<scale>

# Thesis weights: 0.4 seg, 0.2 bottleneck, 0.2 prediction map, 0.1 enc, 0.1 dec.
THESIS_WEIGHTS = {"seg": 0.4, "enc": 0.1, "bottleneck": 0.2, "dec": 0.1, "pmd": 0.2}


class Variant(NamedTuple):
    """A grid entry: its label (for tables) and its KD terms (empty for the baseline)."""

    label: str
    terms: tuple[str, ...]


def parse_term(term: str) -> tuple[str, str]:
    """'bottleneck' -> ('infonce', 'bottleneck'); 'pmd' -> ('pmd', 'logits');
    'at@dec' -> ('at', 'dec'). Unknown names raise ConfigError listing the valid ones."""
    if term in TAPS:
        return "infonce", term
    if term in LOGIT_TERMS:
        return term, "logits"
    method, _, scale = term.partition("@")
    if method in FEATURE_METHODS and scale in TAPS:
        return method, scale
    raise ConfigError(
        f"unknown KD term {term!r}; a term is a scale ({', '.join(TAPS)}: InfoNCE), "
        f"{' or '.join(LOGIT_TERMS)}, or <method>@<scale> with method in "
        f"{', '.join(FEATURE_METHODS)} (e.g. at@dec)"
    )


def parse_variant(variant: str) -> Variant:
    """'baseline' -> no terms; 'all' -> the MTMS terms; 'label:t1+t2' -> labelled terms."""
    label, _, spec = variant.rpartition(":")
    label = label or spec
    if spec == "baseline":
        return Variant(label, ())
    if spec == "all":
        return Variant(label, MTMS_TERMS)
    terms = tuple(dict.fromkeys(spec.split("+")))  # drop repeats, keep order
    for term in terms:
        parse_term(term)
    return Variant(label, terms)


def term_weight(weights: Mapping[str, float], term: str) -> float:
    """The weight of ``term``: ``weights[term]``, else the weight of its method."""
    if term in weights:
        return float(weights[term])
    method = parse_term(term)[0]
    if method in weights:
        return float(weights[method])
    raise ConfigError(f"kd.weights has no weight for {term!r} (nor for {method!r})")


def build_term(
    method: str, teacher_channels: int, student_channels: int, temperatures: Mapping[str, float]
) -> nn.Module:
    """The loss module of one KD method."""
    if method == "infonce":
        return ContrastiveTapLoss(teacher_channels, student_channels, temperatures["infonce"])
    if method == "mse":
        return FeatureMSELoss(teacher_channels, student_channels)
    if method == "cwd":
        return ChannelWiseLoss(teacher_channels, student_channels, temperatures["cwd"])
    if method in ("at", "imd"):  # EMKD's importance maps are attention-transfer maps
        return AttentionTransferLoss()
    if method == "rad":
        return RegionAffinityLoss()
    if method == "pmd":
        return PredictionMapLoss(temperatures["logits"])
    return HintonLoss(temperatures["logits"])


class DistillationLoss(nn.Module):
    """``w_seg * seg + sum_k w_k * kd_k`` over the enabled KD terms.

    With no KD terms this is the baseline objective, so a baseline and its KD runs differ
    only in the KD terms. Projection heads / regressors of the terms are parameters of
    this module: optimise them together with the student.

    Args:
        terms: enabled KD terms (see the module docstring).
        weights: weight per term (or per method), plus ``seg``.
        student_channels / teacher_channels: channels of the taps (``UNet.tap_channels``).
        seg_loss: ``dice`` or ``dicebce``.
        temperature: InfoNCE temperature (thesis 0.4).
        pmd_temperature: temperature of the logit terms (thesis 4).
        cwd_temperature: temperature of channel-wise distillation (paper: 4).
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
        cwd_temperature: float = 4.0,
    ):
        super().__init__()
        self.terms = tuple(terms)
        self.weights = {"seg": float(weights["seg"])}
        self.weights.update({t: term_weight(weights, t) for t in self.terms})
        self.seg = build_seg_loss(seg_loss)
        temps = {"infonce": temperature, "logits": pmd_temperature, "cwd": cwd_temperature}
        self.kd = nn.ModuleDict()
        self.taps: dict[str, str] = {}
        for term in self.terms:
            method, scale = parse_term(term)
            self.taps[term] = scale
            channels = (teacher_channels or {}).get(scale), (student_channels or {}).get(scale)
            self.kd[term] = build_term(method, *channels, temps)

    @property
    def needs_teacher(self) -> bool:
        """True when any KD term is enabled."""
        return bool(self.terms)

    def formula(self) -> str:
        """The objective as text, e.g. '0.4*seg + 0.2*bottleneck + 0.2*pmd'."""
        return " + ".join(f"{w:g}*{name}" for name, w in self.weights.items())

    def forward(
        self,
        student: Mapping[str, Tensor],
        target: Tensor,
        teacher: Mapping[str, Tensor] | None = None,
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """student/teacher: tap dicts from ``UNet.forward``; target: (B, 1, H, W) in {0, 1}.

        Returns the total loss and the unweighted, detached value of each term (for logging;
        kept as tensors so that a compiled graph does not break on ``.item()``).
        """
        parts = {"seg": self.seg(student["logits"], target)}
        for term, loss in self.kd.items():
            tap = self.taps[term]
            extra = (target,) if getattr(loss, "uses_target", False) else ()
            parts[term] = loss(student[tap], teacher[tap], *extra)
        total = sum(self.weights[k] * v for k, v in parts.items())
        return total, {k: v.detach() for k, v in parts.items()}


def needs_pairs(terms: Iterable[str]) -> bool:
    """True when a term uses in-batch negatives (InfoNCE), which need batches of 2+."""
    return any(parse_term(t)[0] == "infonce" for t in terms)
