"""The teacher registry: each architecture's builder, the settings that shape what it
learns (its cache key), and its display name. ``teacher.arch`` names one of ``TEACHERS``;
an unknown name is refused with the list of known ones."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from omegaconf import DictConfig, OmegaConf
from torch import nn

from kdcore.data.prepare import classes_of, modalities_of
from kdcore.errors import ConfigError, registry_entry
from kdcore.models.transunet import TransUNet
from kdcore.models.unet import build_teacher

T2_PAPER = {"width": 16, "blocks": [3, 4, 9], "hidden": 768, "layers": 12, "heads": 12}


@dataclass(frozen=True)
class TeacherArch:
    """One teacher architecture: ``build(cfg)`` a new network, its ``settings(cfg)`` (what
    keys its cache and table names), its ``name(cfg)`` in tables, and ``check(cfg)``, which
    raises ConfigError when the config's sizes do not fit it."""

    build: Callable[[DictConfig], nn.Module]
    settings: Callable[[DictConfig], dict[str, Any]]
    name: Callable[[DictConfig], str]
    check: Callable[[DictConfig], None]


def _section(cfg: DictConfig) -> dict[str, Any]:
    return OmegaConf.to_container(cfg.teacher, resolve=True)


def _t1_settings(cfg: DictConfig) -> dict[str, Any]:
    # the keys T1 always had, so its caches and table names did not change with T2
    settings = _section(cfg)
    for key in ("arch", "t2", "workers", "zero_stage"):
        settings.pop(key, None)
    return settings


def _t2_settings(cfg: DictConfig) -> dict[str, Any]:
    settings = _section(cfg)
    for key in ("width", "depth", "workers", "zero_stage"):
        settings.pop(key, None)
    settings["image_size"] = cfg.image_size  # T2's position embeddings
    return settings


def _t1_name(cfg: DictConfig) -> str:
    t = cfg.teacher
    return "T1" if (t.width, t.depth) == (64, 4) else f"T1(w{t.width},d{t.depth})"


def _t2_name(cfg: DictConfig) -> str:
    t2 = cfg.teacher.t2
    paper = all(OmegaConf.to_container(t2)[k] == v for k, v in T2_PAPER.items())
    return "T2" if paper else f"T2(w{t2.width},h{t2.hidden},L{t2.layers})"


def network_channels(cfg: DictConfig) -> tuple[int, int]:
    """(input, logit) channels of the config's networks: 3 input channels for one
    modality (the grey slice repeated, as the thesis) or one per modality, and 1 logit
    for one class or background + each class."""
    modalities = len(modalities_of(cfg))
    return (3 if modalities <= 1 else modalities), classes_of(cfg).out_channels


def _t1_build(cfg: DictConfig) -> nn.Module:
    return build_teacher(cfg.teacher.width, cfg.teacher.depth, *network_channels(cfg))


def _t2_build(cfg: DictConfig) -> nn.Module:
    t2 = cfg.teacher.t2
    return TransUNet(
        t2.width,
        tuple(t2.blocks),
        t2.hidden,
        t2.layers,
        t2.heads,
        t2.mlp,
        cfg.image_size,
        *network_channels(cfg),
    )


def _t1_check(cfg: DictConfig) -> None:
    if cfg.image_size % 2**cfg.teacher.depth:
        raise ConfigError(
            f"image_size {cfg.image_size} must be divisible by 2**teacher.depth "
            f"= {2**cfg.teacher.depth}"
        )


def _t2_check(cfg: DictConfig) -> None:
    if cfg.image_size % 16:
        raise ConfigError(
            f"teacher.arch=t2 needs image_size divisible by 16 (one token per 1/16 "
            f"pixel), got {cfg.image_size}"
        )
    if cfg.teacher.t2.hidden % cfg.teacher.t2.heads:
        raise ConfigError(
            f"teacher.t2.hidden ({cfg.teacher.t2.hidden}) must be divisible by "
            f"teacher.t2.heads ({cfg.teacher.t2.heads})"
        )


TEACHERS: dict[str, TeacherArch] = {
    # the thesis's multi-task U-Net of teacher.width and teacher.depth
    "t1": TeacherArch(
        _t1_build,
        _t1_settings,
        _t1_name,
        _t1_check,
    ),
    # the multi-task TransUNet of teacher.t2 for image_size inputs
    "t2": TeacherArch(_t2_build, _t2_settings, _t2_name, _t2_check),
}


def teacher_arch(cfg: DictConfig) -> TeacherArch:
    """The registry entry of ``teacher.arch``."""
    return registry_entry(TEACHERS, "teacher.arch", cfg.teacher.arch, "teacher")


def teacher_network(cfg: DictConfig) -> nn.Module:
    """A new (untrained) teacher of ``teacher.arch``."""
    return teacher_arch(cfg).build(cfg)


def teacher_settings(cfg: DictConfig) -> dict[str, Any]:
    """The teacher's settings that shape what it learns (not how many workers train it)."""
    return teacher_arch(cfg).settings(cfg)


def teacher_name(cfg: DictConfig) -> str:
    """'T1' / 'T2' at the thesis's sizes, else e.g. 'T1(w16,d4)' or 'T2(w8,h128,L4)'."""
    return teacher_arch(cfg).name(cfg)


def student_name(cfg: DictConfig) -> str:
    """'S1' / 'S2' at the thesis's sizes, else e.g. 'S(w8)'."""
    return {16: "S1", 32: "S2"}.get(cfg.student.width, f"S(w{cfg.student.width})")
