"""Equal tuning for every method (``tune=true``).

Niemann et al. (2023, "Towards Comparable Knowledge Distillation in Semantic Image
Segmentation") found that most segmentation-KD gains vanish once the baseline gets the
same hyperparameter tuning as each method. So before the grid, every variant of every
cell gets the same number of random-search trials per knob of its own (a method with
more knobs gets more trials, so that none is held back by a search too small for it):

- the learning rate, for every variant (the baseline's own under the thesis protocol);
- each KD term's weight, and each KD method's temperature, for the variants that use them.

The configured settings are always one of the samples, so a search too small to find a
better setting keeps the configured one instead of a worse one.

Knobs are factors on the configured values, drawn log-uniformly from ``tuning.*_factor``.
Each sample trains on every seed of ``tuning.seeds`` and is judged on its validation Dice
averaged over them (no test metrics are computed), which tempers the winner's curse of
one lucky seed; the best setting of each variant then runs every seed of the grid and is
evaluated on test once. Tables show the chosen settings' validation Dice beside the
grid's test Dice.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
from omegaconf import DictConfig

from kdcore.axes import cell_labels
from kdcore.losses import METHODS, parse_term, parse_variant, term_weight
from kdcore.settings import stable_hash


def cell_key(cell: dict[str, Any], variant: str) -> str:
    """The key of a (cell, variant) pair in the tuned settings."""
    return json.dumps([cell_labels(cell), variant], sort_keys=True)


def knob_count(variant: str) -> int:
    """A variant's knobs: the learning rate, each KD term's weight, each temperature."""
    terms = parse_variant(variant).terms
    return 1 + len(terms) + len(_temperature_keys(terms))


def draw_samples(cfg: DictConfig, cell: dict[str, Any], variant: str) -> list[dict[str, Any]]:
    """The random-search samples of one (cell, variant): first the configured settings
    (every factor 1), so that tuning never chooses a setting worse on validation than the
    untuned one, then ``tuning.trials_per_knob`` times its knobs (``knob_count``) draws,
    each a factor drawn log-uniformly per knob; the draws depend only on ``tuning.seed``,
    the cell and the variant."""
    t = cfg.tuning
    terms = parse_variant(variant).terms
    rng = np.random.default_rng([t.seed, int(stable_hash(cell_key(cell, variant)), 16)])
    temperatures = _temperature_keys(terms)

    def factor(bounds) -> float:
        return float(np.exp(rng.uniform(np.log(bounds[0]), np.log(bounds[1]))))

    configured = {
        "lr": 1.0,
        "weights": {term: 1.0 for term in terms},
        "temperatures": {k: 1.0 for k in temperatures},
    }
    return [configured] + [
        {
            "lr": factor(t.lr_factor),
            "weights": {term: factor(t.weight_factor) for term in terms},
            "temperatures": {k: factor(t.temperature_factor) for k in temperatures},
        }
        for _ in range(sample_count(cfg, variant) - 1)
    ]


def sample_count(cfg: DictConfig, variant: str) -> int:
    """How many tuning samples a variant gets: the configured settings and
    ``tuning.trials_per_knob`` draws per knob."""
    return 1 + cfg.tuning.trials_per_knob * knob_count(variant)


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
    """The best tuning sample of each (cell, variant) by validation Dice averaged over the
    tuning seeds (the first of equals): {cell_key: {"settings", "val_dice", "trials",
    "seeds"}}. Each result is one sample (``sample``: its index) on one seed; a sample
    whose loss went non-finite has validation Dice -1, so it is chosen only if every
    sample failed."""
    scores: dict[tuple[str, int], dict[str, Any]] = {}
    for r in results:
        key = cell_key(r["cell"], r["variant"])
        entry = scores.setdefault((key, r["sample"]), {"dice": [], "r": r})
        entry["dice"].append(r["val_dice"])
    best: dict[str, dict[str, Any]] = {}
    for (key, _), entry in scores.items():
        mean = float(np.mean(entry["dice"]))
        chosen = best.setdefault(key, {"settings": None, "val_dice": -2.0, "trials": 0})
        chosen["trials"] += 1
        chosen["seeds"] = len(entry["dice"])
        if mean > chosen["val_dice"]:
            chosen.update(settings=entry["r"]["settings"], val_dice=mean)
    return best
