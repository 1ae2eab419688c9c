"""The compiled objective agrees with eager, compiles once per shape, and falls back."""

import copy
import itertools
import logging

import pytest
import torch
from torch import nn
from torch._dynamo.utils import counters

from kdcore.losses import MTMS_TERMS, THESIS_WEIGHTS, CompiledLoss, DistillationLoss
from kdcore.models import build_student, build_teacher

STUDENT, TEACHER = build_student(8), build_teacher(8, 3).eval()


def batch(size: int, seed: int = 0):
    """Images, masks and teacher taps. The taps are random, of the teacher's shapes: an
    untrained teacher's taps barely differ between samples, which leaves InfoNCE at
    chance and its gradients at rounding noise, a poor test of agreement."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(size, 3, 32, 32, generator=g)
    y = (torch.rand(size, 1, 32, 32, generator=g) > 0.7).float()
    with torch.no_grad():
        shapes = {k: v.shape for k, v in TEACHER(x, with_recon=False).items()}
    t = {k: 2 * torch.randn(shape, generator=g) for k, shape in shapes.items()}
    return x, y, t


def loss_and_grads(objective, call, x, y, t, device, bf16):
    student = copy.deepcopy(STUDENT).to(device)
    x, y, t = x.to(device), y.to(device), {k: v.to(device) for k, v in t.items()}
    with torch.autocast(device, torch.bfloat16, enabled=bf16):
        total, parts = call(student(x), y, t)
    total.backward()
    grads = [p.grad for p in (*student.parameters(), *objective.parameters())]
    return total.detach(), parts, grads


def check_agreement(terms, device="cpu", bf16=False, rtol=1e-5):
    """Compiled vs eager: losses to ``rtol``, gradients to ``rtol`` of their norm."""
    torch.manual_seed(0)
    eager = DistillationLoss(terms, THESIS_WEIGHTS, STUDENT.tap_channels, TEACHER.tap_channels)
    eager.to(device)
    twin = copy.deepcopy(eager)
    x, y, t = batch(4)
    e_total, e_parts, e_grads = loss_and_grads(eager, eager, x, y, t, device, bf16)
    compiled = CompiledLoss(twin)  # resets Dynamo, and with it its counters of graphs
    counters.clear()
    c_total, c_parts, c_grads = loss_and_grads(twin, compiled, x, y, t, device, bf16)
    # the comparison means something only if the compiled path ran (it compiles here: CPU
    # with gcc, or CUDA with Triton) and Dynamo made graphs rather than skipping the frames
    assert compiled.last_call_compiled, compiled.fallback_reason
    assert (compiled.compiled_calls, compiled.eager_calls) == (1, 0)
    assert counters["stats"]["unique_graphs"] >= 1
    assert torch.allclose(c_total, e_total, rtol=rtol, atol=1e-7)
    for k in e_parts:
        assert torch.allclose(c_parts[k], e_parts[k], rtol=rtol, atol=1e-7), k
    scale = max(float(b.norm()) for b in e_grads)
    for a, b in zip(c_grads, e_grads, strict=True):
        # relative to the tensor's norm; the small absolute part covers gradients that are
        # 0 in exact arithmetic (conv biases before batch norm), i.e. rounding noise
        assert (a - b).norm() <= rtol * b.norm() + rtol / 10 * scale


def test_compiled_matches_eager_for_all_mtms_terms():
    check_agreement(MTMS_TERMS)


SUBSETS = [s for r in range(1, 5) for s in itertools.combinations(MTMS_TERMS, r)]


@pytest.mark.slow
@pytest.mark.parametrize("terms", SUBSETS, ids="+".join)
def test_compiled_matches_eager_for_every_scale_subset(terms):
    check_agreement(terms)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("terms", [MTMS_TERMS, ("dec",), ("pmd",)], ids="+".join)
def test_compiled_matches_eager_in_bf16_autocast_on_gpu(terms):
    """bf16 keeps 8 bits of mantissa (relative step 2**-8 = 0.4%); eager and Triton kernels
    round and accumulate in different orders, so the documented tolerance is 2%."""
    check_agreement(terms, device="cuda", bf16=True, rtol=2e-2)


def test_one_compile_per_shape_and_no_recompile_in_later_epochs():
    torch._dynamo.reset()
    counters.clear()
    objective = DistillationLoss(
        MTMS_TERMS, THESIS_WEIGHTS, STUDENT.tap_channels, TEACHER.tap_channels
    )
    compiled = CompiledLoss(objective)
    epoch = [batch(4, 1), batch(4, 2), batch(3, 3)]  # the last batch is short

    def run(batches):
        for x, y, t in batches:
            compiled(STUDENT(x), y, t)[0].backward()
        return counters["stats"]["unique_graphs"]

    # MONAI's Dice splits a graph in pieces (a .tolist()), so count pieces per shape
    per_shape = run(epoch[:1])
    assert per_shape >= 1
    assert run(epoch) == 2 * per_shape  # one compilation for the short last batch
    assert run(epoch) == run(epoch) == 2 * per_shape  # later epochs: no recompiles
    assert not compiled.eager
    assert (compiled.compiled_calls, compiled.eager_calls) == (10, 0)


def test_later_objectives_still_compile_after_many_others():
    # past Dynamo's recompile limit (8; 2 here, to keep the test short) an objective
    # would silently run eagerly
    counters.clear()
    with torch._dynamo.config.patch(recompile_limit=2):
        for size in (2, 3, 4):  # trials of other batch sizes: new graphs each
            before = counters["stats"]["unique_graphs"]
            objective = DistillationLoss(("pmd",), THESIS_WEIGHTS)
            x, y, t = batch(size)
            compiled = CompiledLoss(objective)
            compiled(STUDENT(x), y, t)[0].backward()
            assert compiled.last_call_compiled, (size, compiled.fallback_reason)
            assert counters["stats"]["unique_graphs"] > before, size


def test_compile_failure_falls_back_to_eager_with_one_warning(caplog):
    objective = DistillationLoss(("pmd",), THESIS_WEIGHTS)
    compiled = CompiledLoss(objective)
    assert not compiled.eager and compiled.fallback_reason is None

    def broken(*_):
        raise RuntimeError("no C++ compiler")

    compiled.compiled = broken
    x, y, t = batch(2)
    with caplog.at_level(logging.WARNING, logger="kdcore.losses.compiled"):
        total, _ = compiled(STUDENT(x), y, t)
        compiled(STUDENT(x), y, t)
    assert compiled.eager and not compiled.last_call_compiled
    assert compiled.fallback_reason == "RuntimeError: no C++ compiler"
    assert (compiled.compiled_calls, compiled.eager_calls) == (0, 2)
    assert [r.getMessage() for r in caplog.records] == [
        "torch.compile failed, running the loss eagerly: RuntimeError: no C++ compiler"
    ]
    assert torch.allclose(total, objective(STUDENT(x), y, t)[0])


def test_agreement_check_fails_when_the_compiled_path_did_not_run(monkeypatch):
    def no_compiler(module, **_):
        def broken(*_, **__):
            raise RuntimeError("no C++ compiler")

        return broken

    monkeypatch.setattr(torch, "compile", no_compiler)
    with pytest.raises(AssertionError, match="no C\\+\\+ compiler"):
        check_agreement(("pmd",))


class Doubled(nn.Module):
    def forward(self, x):
        return 2 * x


def test_hitting_the_recompile_limit_is_a_logged_fallback_not_a_silent_eager(caplog):
    # without the fallback Dynamo would run the new shape eagerly and say nothing
    compiled = CompiledLoss(Doubled())
    with torch._dynamo.config.patch(recompile_limit=1):
        compiled(torch.ones(2))
        assert compiled.last_call_compiled
        with caplog.at_level(logging.WARNING, logger="kdcore.losses.compiled"):
            out = compiled(torch.ones(3))
    assert torch.equal(out, torch.full((3,), 2.0))
    assert compiled.eager and not compiled.last_call_compiled
    assert compiled.fallback_reason.startswith("FailOnRecompileLimitHit")
    assert (compiled.compiled_calls, compiled.eager_calls) == (1, 1)
    assert "FailOnRecompileLimitHit" in caplog.text
