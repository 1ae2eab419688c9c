"""Equal tuning for every method (``tune=true``).

Niemann et al. (2023, "Towards Comparable Knowledge Distillation in Semantic Image
Segmentation") found that most segmentation-KD gains vanish once the baseline gets the
same hyperparameter tuning as each method. So before the grid, every variant of every
cell gets the same number of random-search trials over its own knobs:

- the learning rate, for every variant (the baseline's own under the thesis protocol);
- each KD term's weight, and each KD method's temperature, for the variants that use them.

Knobs are factors on the configured values, drawn log-uniformly from ``tuning.*_factor``.
Tuning trials train on the ``tuning.seed`` seed and are judged on validation Dice alone
(no test metrics are computed); the best setting of each variant then runs every seed of
the grid and is evaluated on test once.
"""

from __future__ import annotations

import json
from typing import Any

from omegaconf import DictConfig
from ray import tune

from kdcore.axes import cell_labels
from kdcore.losses import METHODS, parse_term, parse_variant, term_weight


def cell_key(cell: dict[str, Any], variant: str) -> str:
    """The key of a (cell, variant) pair in the tuned settings."""
    return json.dumps([cell_labels(cell), variant], sort_keys=True)


def search_space(cfg: DictConfig) -> dict[str, Any]:
    """Ray Tune's space of knob factors: one for the learning rate, one per KD term and
    one per temperature key of any variant (each trial uses the ones its variant has)."""
    terms = sorted({t for v in cfg.variants for t in parse_variant(v).terms})
    t = cfg.tuning
    return {
        "lr": tune.loguniform(*t.lr_factor),
        "weights": {term: tune.loguniform(*t.weight_factor) for term in terms},
        "temperatures": {
            key: tune.loguniform(*t.temperature_factor) for key in _temperature_keys(terms)
        },
    }


def _temperature_keys(terms: list[str] | tuple[str, ...]) -> list[str]:
    keys = {METHODS[parse_term(term)[0]].temperature for term in terms}
    return sorted(k for k in keys if k)


def knob_settings(cfg: DictConfig, variant: str, knobs: dict[str, Any]) -> dict[str, Any]:
    """The config settings {dotted key: value} of one tuning sample for ``variant``."""
    terms = parse_variant(variant).terms
    baseline_fit = cfg.protocol.baseline_fit
    lr_key = (
        "protocol.baseline_fit.lr"
        if not terms and baseline_fit and "lr" in baseline_fit
        else "student.fit.lr"
    )
    lr = baseline_fit.lr if lr_key.startswith("protocol") else cfg.student.fit.lr
    settings = {lr_key: lr * knobs["lr"]}
    for term in terms:
        settings[f"kd.weights.{term}"] = term_weight(cfg.kd.weights, term) * knobs["weights"][term]
    for key in _temperature_keys(terms):
        settings[f"kd.{key}"] = float(cfg.kd[key]) * knobs["temperatures"][key]
    return settings


def choose(results: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The best tuning sample of each (cell, variant) by validation Dice (the first of
    equals): {cell_key: {"settings", "val_dice", "trials"}}. A sample whose loss went
    non-finite has validation Dice -1 and is chosen only if every sample failed."""
    best: dict[str, dict[str, Any]] = {}
    for r in results:
        key = cell_key(r["cell"], r["variant"])
        entry = best.setdefault(key, {"settings": None, "val_dice": -2.0, "trials": 0})
        entry["trials"] += 1
        if r["val_dice"] > entry["val_dice"]:
            entry.update(settings=r["settings"], val_dice=r["val_dice"])
    return best
