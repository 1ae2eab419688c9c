"""A small smoke job whose numbers are pinned (``smoke_pin.json``): the same code gives
the same table, to the last bit, on one CPU. Floats differ across CPUs, so each pin is
keyed by the CPU it was made on, and the test compares only there."""

from __future__ import annotations

import platform
from pathlib import Path

import pandas as pd

from kdcore.settings import compose_config

PIN = Path(__file__).with_name("smoke_pin.json")
OVERRIDES = ["profile=smoke", "variants=[baseline,pmd,bottleneck+dec]", "seeds=[0]"]
COLUMNS = ("dice", "iou", "recall", "precision", "dice_3d", "val_dice", "best_epoch")


def cpu_signature() -> str:
    """The CPU model and its vector extensions (what float results depend on)."""
    import torch

    model, flags = platform.processor(), ""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name") and not model:
                model = line.split(":", 1)[1].strip()
            if line.startswith("flags"):
                flags = " ".join(sorted(f for f in line.split() if f.startswith("avx")))
                break
    return f"{model} [{flags}] torch {torch.__version__} {torch.backends.cpu.get_cpu_capability()}"


def smoke_numbers(tmp: Path) -> dict[str, dict[str, float]]:
    """Run the pinned smoke job under ``tmp``; every trial's metrics and last-epoch losses."""
    import ray

    import kdcore

    cfg = compose_config([*OVERRIDES, f"results_dir={tmp / 'results'}", f"work_dir={tmp / 'work'}"])
    try:
        paths = kdcore.run_job(cfg, "pinned smoke job", lambda _: None)
    finally:
        ray.shutdown()
    trials = pd.read_csv(paths[1])
    out = {}
    for row in trials.to_dict("records"):
        name = f"{row['variant']}-seed{row['seed']}"
        history = pd.read_csv(paths[0].parent / "history" / f"{name}.csv")
        last = history.iloc[-1]
        losses = {k: float(last[k]) for k in history if k.startswith(("train_loss", "loss_"))}
        out[name] = {**{k: float(row[k]) for k in COLUMNS}, **losses}
    return out
