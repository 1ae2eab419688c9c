"""What a network costs to run: parameters, FLOPs, latency and peak memory of inference.

A cost card measures one network at one input size: the segmentation path a deployed
model runs (logits only; a teacher's reconstruction decoder is left out), in eval mode
under ``torch.inference_mode``, on random weights (cost does not depend on them).

- FLOPs: ``torch.utils.flop_counter``, which counts 2 FLOPs per multiply-add of
  convolutions, transposed convolutions and matrix products, and nothing for
  element-wise ops, pooling, normalisation or activations. MACs are half of it: the
  number that thop and ptflops print (under the name FLOPs); fvcore's "flops" are MACs too.
- Latency: median and quartiles of ``runs`` timed calls after ``warmup`` untimed ones, at
  batch 1 and at the training batch size, with 1 thread and with every core; on CUDA,
  timed with CUDA events.
- Peak memory: CPU: growth of the resident set over the built model during one forward,
  measured in a fresh process (Linux: the kernel's high-water mark, reset before the
  forward; elsewhere the growth of the peak RSS, which understates the forward's when
  building the model peaked higher); CUDA: the largest allocation above the model's own.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from torch import Tensor, nn

from kdcore.axes import axis_cells, cell_config, cell_labels
from kdcore.losses import parse_variant
from kdcore.models.teachers import network_channels, student_name, teacher_name, teacher_network
from kdcore.models.unet import build_student, count_parameters
from kdcore.provenance import machine, machine_text, utc_now
from kdcore.settings import as_dict

ROOT = Path(__file__).resolve().parent.parent  # the folder that holds kdcore
FLOP_CONVENTION = (
    "FLOPs counted by torch.utils.flop_counter (2 per multiply-add of convolutions and "
    "matrix products; element-wise ops, pooling and norms not counted); MACs = FLOPs / 2, "
    "the number thop and ptflops report"
)


class Logits(nn.Module):
    """A teacher or student as deployed: image (B, C, H, W) -> logits (B, K, H, W)."""

    def __init__(self, network: nn.Module):
        super().__init__()
        self.network = network

    def forward(self, x: Tensor) -> Tensor:
        return self.network(x, with_recon=False)["logits"]


@dataclass(frozen=True)
class ModelSpec:
    """A network a table uses, and the input it is measured at.

    ``config``: the (plain dict) config of a grid cell that uses it, which builds it."""

    role: str  # "teacher" or "student"
    name: str
    in_channels: int
    out_channels: int
    image_size: int
    batch_size: int  # the training batch size (students' for a student, teacher's else)
    config: dict[str, Any] = field(compare=False, hash=False, repr=False)

    @property
    def key(self) -> str:
        """Unique per network and input, e.g. 'student S1 3x64x64 -> 1'."""
        size = f"{self.in_channels}x{self.image_size}x{self.image_size}"
        return f"{self.role} {self.name} {size} -> {self.out_channels}"

    def build(self) -> Logits:
        """The network (random weights) in eval mode."""
        return build_network(self.role, self.config).eval()

    def example(self, batch: int) -> Tensor:
        """A random input of ``batch`` images."""
        size = self.image_size
        return torch.rand(batch, self.in_channels, size, size)


def build_network(role: str, config: dict[str, Any] | DictConfig) -> Logits:
    """The teacher or student of ``config`` (a grid cell's config), logits only."""
    cfg = config if isinstance(config, DictConfig) else OmegaConf.create(config)
    if role == "teacher":
        return Logits(teacher_network(cfg))
    return Logits(build_student(cfg.student.width, *network_channels(cfg)))


def table_models(cfg: DictConfig) -> list[tuple[ModelSpec, dict[str, Any]]]:
    """Every network the table of ``cfg`` uses, with the cell (axis labels) that uses it:
    each cell's teacher where a variant distils, then its student."""
    distils = any(parse_variant(v).terms for v in cfg.variants)
    out = []
    for cell in axis_cells(cfg):
        c = cell_config(cfg, cell)
        channels, size, plain = network_channels(c), int(c.image_size), as_dict(c)
        labels = cell_labels(cell)
        if distils:
            name = teacher_name(c)
            t = ModelSpec("teacher", name, *channels, size, int(c.teacher.fit.batch_size), plain)
            out.append((t, labels))
        name = student_name(c)
        s = ModelSpec("student", name, *channels, size, int(c.student.fit.batch_size), plain)
        out.append((s, labels))
    return out


def table_cards(
    cfg: DictConfig,
    log: Callable[[str], None] = print,
    measured: dict[str, dict[str, Any]] | None = None,
) -> list[dict[str, Any]]:
    """The cost card of each distinct network of the table of ``cfg`` (``cost.runs`` and
    ``cost.warmup``), each with the ``cells`` that use it; teachers first. ``measured``:
    cards by ``ModelSpec.key`` already measured (by this process, for other tables),
    used as they are; each new card is added to it."""
    cost = cfg.get("cost") or {}
    runs, warmup = int(cost.get("runs", 20)), int(cost.get("warmup", 5))
    measured = {} if measured is None else measured
    cards: dict[str, dict[str, Any]] = {}
    for spec, cell in table_models(cfg):
        if spec.key not in cards:
            if spec.key not in measured:
                log(f"cost: measuring {spec.key}")
                measured[spec.key] = cost_card(spec, runs, warmup)
            cards[spec.key] = {**measured[spec.key], "cells": []}
        cards[spec.key]["cells"].append(cell)
    return sorted(cards.values(), key=lambda c: c["role"] != "teacher")


def count_flops(model: nn.Module, x: Tensor) -> int:
    """FLOPs of one forward of ``model`` on ``x`` (see ``FLOP_CONVENTION``)."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter, torch.inference_mode():
        model(x)
    return int(counter.get_total_flops())


def all_cores() -> int:
    """The cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


@contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run the block with ``n`` intra-op threads."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def spread(seconds: list[float]) -> dict[str, float]:
    """Median and quartiles of timed runs, in milliseconds, and how many runs."""
    q1, median, q3 = statistics.quantiles(seconds, n=4, method="inclusive")
    return {"median_ms": 1e3 * median, "q1_ms": 1e3 * q1, "q3_ms": 1e3 * q3, "runs": len(seconds)}


def time_calls(call: Callable[[], Any], runs: int, warmup: int) -> dict[str, float]:
    """``spread`` of ``runs`` wall-clock timings of ``call`` after ``warmup`` calls."""
    for _ in range(warmup):
        call()
    seconds = []
    for _ in range(runs):
        start = time.perf_counter()
        call()
        seconds.append(time.perf_counter() - start)
    return spread(seconds)


def cpu_latency(
    model: nn.Module, x: Tensor, threads: int, runs: int = 20, warmup: int = 5
) -> dict[str, float]:
    """Eager CPU latency of ``model(x)`` with ``threads`` intra-op threads."""
    with torch_threads(threads), torch.inference_mode():
        return time_calls(lambda: model(x), runs, warmup)


def cuda_latency(model: nn.Module, x: Tensor, runs: int = 20, warmup: int = 5) -> dict[str, Any]:
    """CUDA latency (CUDA events around each call) and peak memory above the model's."""
    device = torch.device("cuda")
    model, x = model.to(device), x.to(device)
    seconds = []
    with torch.inference_mode():
        for _ in range(warmup):
            model(x)
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        resident = torch.cuda.memory_allocated()
        for _ in range(runs):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            model(x)
            end.record()
            torch.cuda.synchronize()
            seconds.append(start.elapsed_time(end) / 1e3)
    peak = torch.cuda.max_memory_allocated() - resident
    model.cpu()
    return {**spread(seconds), "peak_mib": peak / 2**20}


def _resident_kib(field_name: str) -> int | None:
    try:
        for line in open("/proc/self/status"):
            if line.startswith(field_name + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def _forward_memory(role: str, config: dict[str, Any], shape: tuple[int, ...]) -> float:
    """In a fresh process: MiB the resident set grew by during one forward."""
    import gc
    import resource

    torch.set_num_threads(all_cores())
    model = build_network(role, config).eval()
    x = torch.rand(*shape)
    gc.collect()
    try:  # Linux: reset the high-water mark to the current resident set
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        before = _resident_kib("VmRSS")
    except OSError:
        before = None
    if before is None:  # the peak so far: the growth can only be understated by it
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        with torch.inference_mode():
            model(x)
        after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        scale = 1 if os.uname().sysname == "Linux" else 1 / 1024  # macOS: bytes
        return max(0, after - before) * scale / 1024
    with torch.inference_mode():
        model(x)
    return max(0, (_resident_kib("VmHWM") or before) - before) / 1024


def cpu_peak_memory(spec: ModelSpec, batch: int) -> float:
    """MiB the resident set grows by in one CPU forward of ``spec`` at ``batch`` images,
    measured in a fresh Python process (nothing allocated before is there to be reused)."""
    shape = [batch, spec.in_channels, spec.image_size, spec.image_size]
    request = json.dumps({"role": spec.role, "config": spec.config, "shape": shape})
    code = "import sys; from kdcore.cost import _memory_main; _memory_main(sys.stdin.read())"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", code], input=request, capture_output=True, text=True, env=env
    )
    if done.returncode != 0:
        raise RuntimeError(f"measuring the memory of {spec.key} failed:\n{done.stderr}")
    return float(done.stdout.strip().splitlines()[-1])


def _memory_main(request: str) -> None:
    r = json.loads(request)
    print(_forward_memory(r["role"], r["config"], tuple(r["shape"])))


def cost_card(spec: ModelSpec, runs: int = 20, warmup: int = 5) -> dict[str, Any]:
    """The cost card of ``spec``: parameters, MACs and FLOPs per image, CPU latency at
    batch 1 and the training batch with 1 thread and every core, CPU peak memory, and
    on a CUDA machine GPU latency and memory."""
    model = spec.build()
    flops = count_flops(model, spec.example(1))
    cores = all_cores()
    card: dict[str, Any] = {
        "model": spec.name,
        "role": spec.role,
        "input": [spec.in_channels, spec.image_size, spec.image_size],
        "classes": spec.out_channels,
        "train_batch": spec.batch_size,
        "params": count_parameters(model),
        "macs": flops // 2,
        "flops": flops,
        "cores": cores,
        "convention": FLOP_CONVENTION,
        "runs": runs,
        "warmup": warmup,
        "machine": machine_text(machine()),
        "measured": utc_now(),
        "cpu": {},
        "cpu_peak_mib": {},
        "cuda": {},
    }
    for batch in sorted({1, spec.batch_size}):
        x = spec.example(batch)
        for threads in sorted({1, cores}):
            card["cpu"][f"b{batch}-t{threads}"] = cpu_latency(model, x, threads, runs, warmup)
        card["cpu_peak_mib"][f"b{batch}"] = cpu_peak_memory(spec, batch)
        if torch.cuda.is_available():
            card["cuda"][f"b{batch}"] = cuda_latency(model, x, runs, warmup)
    return card
