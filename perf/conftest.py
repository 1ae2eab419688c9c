"""Shared shapes for the benchmarks (figures, not timed tests: nothing here asserts speed)."""

import os

import torch

# Stable timings on small machines (compile workers compete with the timed code otherwise).
os.environ.setdefault("TORCHINDUCTOR_COMPILE_THREADS", "1")
torch.manual_seed(0)
