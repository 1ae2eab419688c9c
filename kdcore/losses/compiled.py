"""The distillation objective as compiled graphs (torch.compile), with an eager fallback."""

from __future__ import annotations

import logging
from typing import Any

import torch
from torch import nn

logger = logging.getLogger(__name__)


class CompiledLoss:
    """Call ``torch.compile(module)`` (inductor: C++ on CPU, Triton on CUDA).

    ``dynamic=False``: one graph per input shape, so a trial compiles once for the full
    batch and once for the short last batch, then never again. Where compilation is not
    available (no compiler, unsupported platform) the first failure is logged once, with
    its reason, and the eager module is used from then on. Hitting Dynamo's recompile limit
    counts as a failure: Dynamo would otherwise run the objective eagerly without a word.

    What ran is observable: ``last_call_compiled`` says whether the last call went through
    the compiled module, ``compiled_calls`` and ``eager_calls`` count calls of each kind,
    and ``fallback_reason`` holds the failure that switched to eager (``None`` while
    compiling works).

    Making one resets Dynamo's caches: every objective compiles the same
    ``DistillationLoss.forward``, and once a process (a reused Ray actor, a benchmark
    session) has compiled it for 8 term sets or shapes, it would hit the limit. One
    compiled objective per process at a time is what a trial needs.
    """

    def __init__(self, module: nn.Module):
        torch._dynamo.reset()
        self.module = module
        self.compiled = torch.compile(module, dynamic=False)
        self.fallback_reason: str | None = None
        self.last_call_compiled = False
        self.compiled_calls = 0
        self.eager_calls = 0

    @property
    def eager(self) -> bool:
        """True once compilation failed and every call runs the eager module."""
        return self.fallback_reason is not None

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if not self.eager:
            try:
                with torch._dynamo.config.patch(fail_on_recompile_limit_hit=True):
                    out = self.compiled(*args, **kwargs)
            except Exception as err:  # any compiler failure means: run eagerly
                self.fallback_reason = f"{type(err).__name__}: {err}"
                logger.warning(
                    "torch.compile failed, running the loss eagerly: %s", self.fallback_reason
                )
            else:
                self.compiled_calls += 1
                self.last_call_compiled = True
                return out
        self.eager_calls += 1
        self.last_call_compiled = False
        return self.module(*args, **kwargs)


def maybe_compile(module: nn.Module, enabled: bool) -> nn.Module | CompiledLoss:
    """``CompiledLoss(module)`` when ``enabled``, else the module itself (eager)."""
    return CompiledLoss(module) if enabled else module
