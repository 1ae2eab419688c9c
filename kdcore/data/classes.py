"""What a network segments: its classes, the label values each one holds, and how many
output channels that takes.

One class is the binary task (one sigmoid logit, ``data.foreground``); two or more are
a softmax over the background and the classes (channel 0 the background, channel k the
k-th class). A label map becomes a class map: 0 for background values, k for the values
of class k, and an error for any other value.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from kdcore.errors import ConfigError


@dataclass(frozen=True)
class LabelClasses:
    """The segmented classes: ``names[k - 1]`` holds the label values ``values[k - 1]``
    (its class index is k); label values in ``background`` are class 0."""

    names: tuple[str, ...]
    values: tuple[tuple[int, ...], ...]
    background: tuple[int, ...] = (0,)

    def __post_init__(self):
        if not self.names:
            raise ConfigError("no class to segment: name at least one in data.labels")
        if len(self.names) != len(self.values):
            raise ValueError("one tuple of label values per class name")
        if len(set(self.names)) != len(self.names):
            raise ConfigError(f"data.labels names a class twice: {list(self.names)}")
        for name, values in zip(self.names, self.values, strict=True):
            if not values:
                raise ConfigError(f"class {name!r} has no label value: list its values")
            both = sorted(set(values) & set(self.background))
            if both:
                where = "data.foreground" if self.binary else f"data.labels.{name}"
                raise ConfigError(
                    f"label values {both} are in both {where}={list(values)} and "
                    f"data.background={list(self.background)}; put each value in one of them"
                )
        seen: dict[int, str] = {}
        for name, values in zip(self.names, self.values, strict=True):
            for v in values:
                if v in seen:
                    raise ConfigError(
                        f"label value {v} is in both classes {seen[v]!r} and {name!r} of "
                        "data.labels; put each value in one class"
                    )
                seen[v] = name

    @property
    def binary(self) -> bool:
        """One class: the sigmoid path."""
        return len(self.names) == 1

    @property
    def out_channels(self) -> int:
        """Logit channels of a network: 1 for one class, else background + each class."""
        return 1 if self.binary else len(self.names) + 1

    def class_map(self, label: Tensor, source: str | Path | None = None) -> Tensor:
        """Label values -> uint8 class indices (0 background, k the k-th class).

        Any other value (or a non-integer one) raises a ConfigError naming ``source`` (the
        label file) and listing the unexpected values.
        """
        out = torch.zeros(label.shape, dtype=torch.uint8, device=label.device)
        known = torch.isin(label, torch.tensor(self.background, dtype=label.dtype))
        for k, values in enumerate(self.values, start=1):
            inside = torch.isin(label, torch.tensor(values, dtype=label.dtype))
            out[inside] = k
            known |= inside
        if not bool(known.all()):
            found = torch.unique(torch.as_tensor(label)[~known]).tolist()
            shown = ", ".join(f"{v:g}" for v in found[:10]) + (", ..." if len(found) > 10 else "")
            name = f"label {source}" if source is not None else "label"
            raise ConfigError(f"{name} has values {{{shown}}} that {self._fix()}")
        return out

    def _fix(self) -> str:
        if self.binary:
            return (
                f"are neither foreground {_ints(self.values[0])} nor background "
                f"{_ints(self.background)}; set data.foreground=[...] and "
                "data.background=[...] to say which label values are the organ and which "
                "are not (e.g. a multi-organ label map: data.foreground=[1] "
                "data.background=[0,2,3])"
            )
        listed = ", ".join(f"{n} {_ints(v)}" for n, v in zip(self.names, self.values, strict=True))
        return (
            f"belong to no class of data.labels ({listed}) nor to data.background "
            f"{_ints(self.background)}; add each value to a class or to data.background"
        )


BINARY = LabelClasses(("foreground",), ((1,),))  # the binary task of label value 1


def label_classes(data: Mapping[str, Any], manifest: Mapping[str, Any] | None = None):
    """The ``LabelClasses`` of a ``data`` config section.

    - ``labels`` null and ``foreground`` set: the binary task (``foreground`` against
      ``background``).
    - ``labels`` a mapping of class name to a label value or a list of them (a merge,
      e.g. ``{liver: [1, 2]}``): those classes, ``background`` the other label values
      (default [0]).
    - ``labels`` and ``foreground`` both null: every non-zero label of the dataset's own
      ``manifest`` (its dataset.json ``labels`` block), 0 the background.
    """
    background = tuple(int(v) for v in (data.get("background") or [0]))
    labels = data.get("labels")
    if labels is None and data.get("foreground") is not None:
        return LabelClasses(BINARY.names, (_values(data["foreground"], "foreground"),), background)
    if labels is None:
        return manifest_classes(manifest)
    if not isinstance(labels, Mapping) or not labels:
        raise ConfigError(
            f"data.labels must map class names to label values, e.g. "
            f"{{liver: [1, 2], spleen: 3}}, got {labels!r}"
        )
    names = tuple(str(n) for n in labels)
    return LabelClasses(names, tuple(_values(labels[n], f"labels.{n}") for n in labels), background)


def manifest_classes(manifest: Mapping[str, Any] | None) -> LabelClasses:
    """Every non-zero label of an MSD dataset.json (``{"labels": {"0": "background",
    "1": "liver", ...}}``) as its own class, 0 the background."""
    labels = (manifest or {}).get("labels")
    if not isinstance(labels, Mapping):
        raise ConfigError(
            "the dataset.json has no 'labels' block naming the label values: set "
            "data.labels={name: value, ...} (or data.foreground=[...] for one organ)"
        )
    try:
        pairs = sorted((int(v), str(n)) for v, n in labels.items())
    except ValueError:
        raise ConfigError(
            f'the dataset.json \'labels\' keys must be label values ("0", "1", ...), got '
            f"{sorted(labels)}"
        ) from None
    named = [(v, n) for v, n in pairs if v != 0]
    if not named:
        raise ConfigError("the dataset.json 'labels' block names no label besides 0")
    return LabelClasses(tuple(n for _, n in named), tuple((v,) for v, _ in named), (0,))


def predicted_classes(logits: Tensor) -> Tensor:
    """(B, C, H, W) logits -> (B, H, W) uint8 class indices: sigmoid > 0.5 for one
    channel (the binary task), the most probable channel for more."""
    if logits.shape[1] == 1:
        return (logits[:, 0].sigmoid() > 0.5).to(torch.uint8)
    return logits.argmax(1).to(torch.uint8)


def _values(value: Any, where: str) -> tuple[int, ...]:
    values = value if isinstance(value, list | tuple) or hasattr(value, "__len__") else [value]
    if isinstance(values, str | bytes) or not all(
        isinstance(v, int | np.integer) and not isinstance(v, bool) for v in values
    ):
        raise ConfigError(f"data.{where} must be a label value or a list of them, got {value!r}")
    return tuple(int(v) for v in values)


def _ints(values) -> str:
    return "[" + ",".join(str(v) for v in values) + "]"
