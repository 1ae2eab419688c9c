"""Memory the KD objective holds for its backward pass at the thesis's shapes.

Counted with ``torch.autograd.graph.saved_tensors_hooks``: the bytes of every distinct
storage saved for backward during one forward (eager, or the compiled graphs' saved
tensors), i.e. what the loss materialises beyond its inputs until ``backward``. The
inputs themselves (taps of batch 20 at 256x256) are excluded.
"""

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
    benchmark.extra_info["saved_for_backward_mib"] = nbytes / 2**20
    benchmark.extra_info["inputs_mib"] = (
        sum(t.nbytes for t in (*s_taps.values(), *t_taps.values(), target)) / 2**20
    )
