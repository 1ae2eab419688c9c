"""Memory of the KD objective's forward+backward at the thesis's shapes, eager vs compiled.

- saved_for_backward_mib: counted with ``torch.autograd.graph.saved_tensors_hooks``, the
  bytes of every distinct storage saved for backward during one forward (eager, or the
  compiled graphs' saved tensors), i.e. what the loss keeps beyond its inputs until
  ``backward``. The inputs themselves (taps of batch 20 at 256x256) are excluded.
- peak_mib: the peak of the process's resident memory during one forward+backward above
  what was resident before it (Linux: VmHWM reset through /proc/self/clear_refs). glibc
  is told to mmap every allocation of 64 KiB or more, so freed tensors leave the resident
  set and this is the loss's peak working set: saved tensors, temporaries and the
  gradients of the student taps.
"""

import ctypes
from pathlib import Path

import pytest
import torch

from kdcore.losses import MTMS_TERMS

from .test_loss import kd_case


def saved_bytes(fn, *args) -> tuple[int, torch.Tensor]:
    inputs = {t.untyped_storage().data_ptr() for a in args for t in _tensors(a)}
    seen: dict[int, int] = {}

    def pack(t):
        storage = t.untyped_storage()
        if storage.data_ptr() not in inputs:
            seen[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        total, _ = fn(*args)
    return sum(seen.values()), total


def _tensors(a):
    return a.values() if isinstance(a, dict) else [a]


def _status_bytes(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(key)


try:  # fixed mmap threshold (glibc raises it to 32 MiB on its own, then reuses heap pages)
    ctypes.CDLL("libc.so.6").mallopt(-3, 64 * 1024)  # M_MMAP_THRESHOLD
except OSError:
    pass


def peak_rss_growth(step) -> int | None:
    """Peak resident bytes during ``step()`` above the resident bytes before it (Linux)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")  # peak := current
        before = _status_bytes("VmRSS")
    except OSError:
        return None
    step()
    return _status_bytes("VmHWM") - before


@pytest.mark.parametrize("mode", ["eager", "compiled"])
@pytest.mark.parametrize("terms", ["+".join(MTMS_TERMS), "bottleneck", "dec"])
@pytest.mark.parametrize("student", ["S1", "S2"])
def test_saved_for_backward(benchmark, student, terms, mode):
    fn, s_taps, target, t_taps = kd_case(student, terms, mode)
    fn(s_taps, target, t_taps)[0].backward()  # compile first: count steady-state graphs
    nbytes, total = benchmark.pedantic(
        saved_bytes, args=(fn, s_taps, target, t_taps), rounds=1, iterations=1
    )
    total.backward()

    def step():
        for tap in s_taps.values():
            tap.grad = None
        fn(s_taps, target, t_taps)[0].backward()

    peak = peak_rss_growth(step)
    benchmark.extra_info["saved_for_backward_mib"] = nbytes / 2**20
    benchmark.extra_info["peak_mib"] = None if peak is None else round(peak / 2**20)
    benchmark.extra_info["inputs_mib"] = (
        sum(t.nbytes for t in (*s_taps.values(), *t_taps.values(), target)) / 2**20
    )
