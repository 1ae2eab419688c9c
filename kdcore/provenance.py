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
