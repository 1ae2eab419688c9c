"""The student's objective: weighted segmentation loss plus the selected KD terms.

A KD term is ``<method>@<scale>`` for a registered method (``kdcore.losses.registry``)
and one of the taps it reads, e.g. ``at@dec``; a method that reads one tap only is
written alone (``pmd``, ``hinton``). The thesis's InfoNCE at a scale is written as the
scale alone: ``enc``, ``bottleneck``, ``dec`` (MTMS).

A variant joins terms with ``+`` (``bottleneck+pmd``), is ``baseline`` (no KD term) or
``all`` (the four MTMS terms), and may carry a label: ``fitnets:mse@enc+mse@dec``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, NamedTuple

from torch import Tensor, nn

from kdcore.errors import ConfigError
from kdcore.losses.registry import FEATURE_SCALES, METHODS
from kdcore.losses.segmentation import build_seg_loss
from kdcore.rows import BASELINE

MTMS_TERMS = (*FEATURE_SCALES, "pmd")  # enc, bottleneck, dec (InfoNCE) and pmd (prediction map)
SCALE_METHOD = "infonce"  # the method of a term that is a scale alone

# Thesis weights: 0.4 seg, 0.2 bottleneck, 0.2 prediction map, 0.1 enc, 0.1 dec.
THESIS_WEIGHTS = {"seg": 0.4, "enc": 0.1, "bottleneck": 0.2, "dec": 0.1, "pmd": 0.2}
# The methods' ``kd`` settings. Thesis temperatures: InfoNCE 0.4, prediction map 4;
# channel-wise distillation's paper: 4. Modes: trained heads and the Bernoulli KL (this
# suite); the reference code's untrained heads and zero prediction-map loss are modes too.
DEFAULT_SETTINGS = {
    "temperature": 0.4,
    "pmd_temperature": 4.0,
    "cwd_temperature": 4.0,
    "heads": "trained",
    "pmd_mode": "kl",
}


class Variant(NamedTuple):
    """A grid entry, parsed once (``parse_variant``): its label (for tables) and its KD
    terms (empty for the baseline)."""

    label: str
    terms: tuple[str, ...]

    @property
    def is_baseline(self) -> bool:
        """True for the variant without KD terms, which every KD row is compared with."""
        return not self.terms


def _unknown_term(term: str) -> ConfigError:
    single = sorted(n for n, m in METHODS.items() if len(m.scales) == 1)
    multi = sorted(n for n, m in METHODS.items() if len(m.scales) > 1)
    return ConfigError(
        f"unknown KD term {term!r}; a term is a scale ({', '.join(FEATURE_SCALES)}: the "
        f"thesis's InfoNCE), one of {', '.join(single)}, or <method>@<scale> with method in "
        f"{', '.join(multi)} and scale in {', '.join(FEATURE_SCALES)} (e.g. at@dec)"
    )


def parse_term(term: str) -> tuple[str, str]:
    """'bottleneck' -> ('infonce', 'bottleneck'); 'pmd' -> ('pmd', 'logits');
    'at@dec' -> ('at', 'dec'). Unknown names raise ConfigError listing the valid ones."""
    if term in FEATURE_SCALES:
        return SCALE_METHOD, term
    name, at, scale = term.partition("@")
    method = METHODS.get(name)
    if method is None or (at and scale not in method.scales):
        raise _unknown_term(term)
    if not at:
        if len(method.scales) > 1:
            raise ConfigError(
                f"KD term {term!r} needs a scale: {term}@<scale> with scale in "
                f"{', '.join(method.scales)}"
            )
        scale = method.scales[0]
    return name, scale


def canonical_term(term: str) -> str:
    """The one spelling of a term: 'infonce@enc' -> 'enc', 'pmd@logits' -> 'pmd'."""
    name, scale = parse_term(term)
    if name == SCALE_METHOD:
        return scale
    return name if len(METHODS[name].scales) == 1 else f"{name}@{scale}"


def parse_variant(variant: str) -> Variant:
    """'baseline' -> no terms; 'all' -> the MTMS terms; 'label:t1+t2' -> labelled terms.

    The baseline is always labelled 'baseline' (tables compare every KD row with it), and
    no KD variant may be: either is refused with a ConfigError.
    """
    label, _, spec = variant.rpartition(":")
    label = label or spec
    if spec == BASELINE:
        terms: tuple[str, ...] = ()
    elif spec == "all":
        terms = MTMS_TERMS
    else:
        terms = tuple(dict.fromkeys(canonical_term(t) for t in spec.split("+")))  # no repeats
    if not terms and label != BASELINE:
        raise ConfigError(
            f"variant {variant!r}: the variant without KD terms is the baseline and keeps "
            f"the label {BASELINE!r} (tables compare every KD row with it): write 'baseline'"
        )
    if terms and label == BASELINE:
        raise ConfigError(
            f"variant {variant!r} has KD terms but the label {BASELINE!r}, which names the "
            "variant without them: give it another label"
        )
    return Variant(label, terms)


def term_weight(weights: Mapping[str, float], term: str) -> float:
    """The weight of ``term``: ``weights[term]``, else the weight of its method."""
    if term in weights:
        return float(weights[term])
    method = parse_term(term)[0]
    if method in weights:
        return float(weights[method])
    raise ConfigError(f"kd.weights has no weight for {term!r} (nor for {method!r})")


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
        out_channels: logit channels (1: one class; else background and each class).
        settings: the methods' temperatures and modes by ``kd`` config key
            (``DEFAULT_SETTINGS``); a ``kd`` config section can be passed as it is.
    """

    def __init__(
        self,
        terms: Iterable[str],
        weights: Mapping[str, float],
        student_channels: Mapping[str, int] | None = None,
        teacher_channels: Mapping[str, int] | None = None,
        seg_loss: str = "dice",
        settings: Mapping[str, Any] = DEFAULT_SETTINGS,
        out_channels: int = 1,
    ):
        super().__init__()
        self.terms = tuple(terms)
        self.weights = {"seg": float(weights["seg"])}
        self.weights.update({t: term_weight(weights, t) for t in self.terms})
        self.seg = build_seg_loss(seg_loss, out_channels)
        self.kd = nn.ModuleDict()
        self.taps: dict[str, str] = {}
        self.uses_target: dict[str, bool] = {}
        for term in self.terms:
            name, scale = parse_term(term)
            method = METHODS[name]
            self.taps[term] = scale
            self.uses_target[term] = method.uses_target
            channels = (teacher_channels or {}).get(scale), (student_channels or {}).get(scale)
            self.kd[term] = method.build(*channels, settings)

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
        """student/teacher: tap dicts from ``UNet.forward``; target: (B, 1, H, W) class
        indices ({0, 1} for one class).

        Returns the total loss and the unweighted, detached value of each term (for logging;
        kept as tensors so that a compiled graph does not break on ``.item()``).
        """
        parts = {"seg": self.seg(student["logits"], target)}
        for term, loss in self.kd.items():
            tap = self.taps[term]
            extra = (target,) if self.uses_target[term] else ()
            parts[term] = loss(student[tap], teacher[tap], *extra)
        total = sum(self.weights[k] * v for k, v in parts.items())
        return total, {k: v.detach() for k, v in parts.items()}


def needs_pairs(terms: Iterable[str]) -> bool:
    """True when a term uses in-batch negatives (InfoNCE), which need batches of 2+."""
    return any(METHODS[parse_term(t)[0]].pairs for t in terms)
