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
    available (no compiler, unsupported platform) the first failure is logged and the
    eager module is used from then on.

    Making one resets Dynamo's caches: every objective compiles the same
    ``DistillationLoss.forward``, and once a process (a reused Ray actor, a benchmark
    session) has compiled it for 8 term sets or shapes, Dynamo silently runs it eagerly.
    One compiled objective per process at a time is what a trial needs.
    """

    def __init__(self, module: nn.Module):
        torch._dynamo.reset()
        self.module = module
        self.compiled = torch.compile(module, dynamic=False)
        self.eager = False

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if not self.eager:
            try:
                return self.compiled(*args, **kwargs)
            except Exception as err:  # any compiler failure means: run eagerly
                logger.warning("torch.compile failed, running the loss eagerly: %s", err)
                self.eager = True
        return self.module(*args, **kwargs)


def maybe_compile(module: nn.Module, enabled: bool) -> nn.Module | CompiledLoss:
    """``CompiledLoss(module)`` when ``enabled``, else the module itself (eager)."""
    return CompiledLoss(module) if enabled else module
