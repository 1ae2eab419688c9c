"""KD methods by name: what each one reads, and how to build its loss.

A method registers itself in its own file with ``@register_method``; ``kdcore.losses``
imports every such file, so the registry is complete once the package is imported.
Adding a method is one file (its loss class and registration), its import in
``kdcore/losses/__init__.py`` and its weight in ``configs/config.yaml``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from kdcore.models.unet import FEATURE_TAPS

FEATURE_SCALES = FEATURE_TAPS  # enc, bottleneck, dec: feature maps of teacher and student
LOGITS = ("logits",)  # the prediction map


@dataclass(frozen=True)
class KDMethod:
    """A registered KD method.

    Attributes:
        name: the method's name in terms (``<name>@<scale>``, or ``<name>`` alone when it
            reads one tap only).
        loss: its loss class; ``forward(student_tap, teacher_tap[, mask]) -> scalar``.
        scales: the taps it may read.
        channels: the class takes ``(teacher_channels, student_channels)`` first
            (projection heads, regressors).
        temperature: the ``kd`` config key of its temperature, passed to the class last.
        modes: keyword argument -> ``kd`` config key of the class's mode flags, where the
            thesis's reference code and the thesis differ (e.g. untrained heads).
        uses_target: ``forward`` also takes the ground-truth mask (B, 1, H, W).
        pairs: it uses in-batch negatives, so batches need 2 or more samples.
    """

    name: str
    loss: type[nn.Module]
    scales: tuple[str, ...]
    channels: bool = False
    temperature: str | None = None
    uses_target: bool = False
    pairs: bool = False
    modes: Mapping[str, str] = field(default_factory=dict)

    def build(
        self,
        teacher_channels: int | None,
        student_channels: int | None,
        settings: Mapping[str, Any],
    ) -> nn.Module:
        """The loss module of this method for taps with the given channel counts;
        ``settings`` holds the ``kd`` config values its temperature and modes name."""
        args: list = [teacher_channels, student_channels] if self.channels else []
        if self.temperature is not None:
            args.append(float(settings[self.temperature]))
        return self.loss(*args, **{kw: settings[key] for kw, key in self.modes.items()})


METHODS: dict[str, KDMethod] = {}


def register_method(
    name: str,
    scales: tuple[str, ...],
    *,
    channels: bool = False,
    temperature: str | None = None,
    uses_target: bool = False,
    pairs: bool = False,
    modes: Mapping[str, str] | None = None,
) -> Callable[[type[nn.Module]], type[nn.Module]]:
    """Class decorator: register the loss class under ``name`` (see ``KDMethod``)."""

    def add(cls: type[nn.Module]) -> type[nn.Module]:
        if name in METHODS:
            raise ValueError(f"KD method {name!r} is registered twice")
        METHODS[name] = KDMethod(
            name, cls, tuple(scales), channels, temperature, uses_target, pairs, dict(modes or {})
        )
        return cls

    return add


def temperature_keys() -> list[str]:
    """The ``kd`` config keys of every registered method's temperature."""
    return sorted({m.temperature for m in METHODS.values() if m.temperature})
