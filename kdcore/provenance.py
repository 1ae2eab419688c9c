"""Where a table came from: the commit of the code and the time it was written, and the
line a re-rendered table adds to its provenance. Needs git on PATH, nothing else."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
from pathlib import Path

RERENDERED_BY = "bench/rerender.py"


def git_commit(repo: Path | None = None) -> str:
    """HEAD's commit, marked when the work tree has uncommitted changes to tracked files.

    Outside a git checkout (e.g. the upload of ``ray job submit``) the KDBENCH_GIT_COMMIT
    environment variable names it.
    """
    if os.environ.get("KDBENCH_GIT_COMMIT"):
        return f"{os.environ['KDBENCH_GIT_COMMIT']} (from KDBENCH_GIT_COMMIT)"
    repo = repo or Path(__file__).resolve().parent.parent

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=repo, capture_output=True, text=True, check=True
        ).stdout.strip()

    try:
        commit = git("rev-parse", "HEAD")
        # results/ holds outputs (tables, the index), not code
        dirty = git("status", "--porcelain", "--untracked-files=no", "--", ".", ":!results")
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not a git checkout)"
    return f"{commit} (with uncommitted changes)" if dirty else commit


def utc_now() -> str:
    """The current time as 'YYYY-MM-DD HH:MM:SS UTC' (sorts as text)."""
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def rerender_line(commit: str, date: str) -> str:
    """The provenance line of a table re-rendered from its committed trial data."""
    return f"Re-rendered at {commit} on {date} by {RERENDERED_BY} from the committed trial data"


def machine() -> dict[str, str | int]:
    """What made a number: the CPU model and its widest vector instructions, cores and
    torch threads, torch and CUDA versions, and the GPU (none: 'none'). Floats differ
    across CPUs (instruction sets change reduction order), so every table records this."""
    import platform

    import torch

    cpu, flags = platform.processor() or platform.machine(), set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                cpu = value.strip()
            elif key.strip() == "flags":
                flags = set(value.split())
            if cpu and flags:
                break
    except OSError:  # not Linux: the platform's own name
        pass
    widest = next((f for f in ("avx512f", "avx2", "avx", "sse4_2") if f in flags), "unknown")
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    return {
        "cpu": cpu,
        "isa": {"avx512f": "AVX-512", "avx2": "AVX2", "avx": "AVX", "sse4_2": "SSE4.2"}.get(
            widest, widest
        ),
        "cores": os.cpu_count() or 0,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda or "none",
        "gpu": gpu,
    }


def machine_text(m: dict[str, str | int]) -> str:
    """One line, e.g. 'AMD EPYC 7B13 (AVX2), 2 cores, 1 torch threads, torch 2.13.0, CUDA
    none, GPU none'."""
    return (
        f"{m['cpu']} ({m['isa']}), {m['cores']} cores, {m['threads']} torch threads, torch "
        f"{m['torch']}, CUDA {m['cuda']}, GPU {m['gpu']}"
    )
