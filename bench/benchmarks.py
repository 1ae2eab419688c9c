"""Run the benchmarks and write results/bench/benchmarks.json and results/bench/summary.md.

    python bench/benchmarks.py                 # everything (about an hour on 2 CPU cores)
    python bench/benchmarks.py -k step         # extra arguments go to pytest

Figures, not tests: nothing asserts a speed. Each number in the summary comes from the
JSON that pytest-benchmark wrote in the same run.
"""

from __future__ import annotations

import json
import platform
import shlex
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import torch

from kdcore.io import write_text_atomic
from kdcore.report import git_commit

OUT = REPO / "results" / "bench"


def summarize(data: dict, command: str, commit: str) -> str:
    """Markdown: one line per benchmark (mean, std, rounds, first call) and the ratios."""
    rows = {b["name"]: b for b in data["benchmarks"]}
    lines = [
        "# Benchmarks",
        "",
        f"- Command: `{command}`",
        f"- Git commit: {commit}",
        f"- Machine: {platform.platform()}, {platform.processor() or 'cpu'}, "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads",
        "",
        "| benchmark | mean s | std s | rounds | first call s |",
        "|---|---|---|---|---|",
    ]
    for name, b in rows.items():
        s, extra = b["stats"], b.get("extra_info", {})
        first = f"{extra['first_call_s']:.2f}" if "first_call_s" in extra else ""
        lines.append(f"| {name} | {s['mean']:.4f} | {s['stddev']:.4f} | {s['rounds']} | {first} |")
    lines += ["", "## Ratios (same run, same machine)", ""]
    for name, b in rows.items():
        if "[" in name and "-compiled]" in name:
            eager = rows.get(name.replace("-compiled]", "-eager]"))
            if eager:
                ratio = eager["stats"]["mean"] / b["stats"]["mean"]
                lines.append(f"- {name.split('[')[1][:-10]}: compiled is {ratio:.2f}x eager")
    for setting in ("paper-256", "quick-64"):
        get = {
            k: rows.get(f"test_training_step[{k}-{setting}]")
            for k in ("student", "kd", "reference")
        }
        if all(get.values()):
            mean = {k: v["stats"]["mean"] for k, v in get.items()}
            lines.append(
                f"- {setting}: KD step = {mean['kd'] / mean['student']:.2f}x a student step; "
                f"the reference's way = {mean['reference'] / mean['student']:.2f}x; "
                f"ours is {mean['reference'] / mean['kd']:.2f}x faster than the reference's"
            )
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
    OUT.mkdir(parents=True, exist_ok=True)
    raw = OUT / "benchmarks.json.partial"
    cmd = [
        sys.executable,
        "-m",
        "pytest",
        str(REPO / "benchmarks"),
        "-q",
        "-p",
        "no:cacheprovider",
        f"--benchmark-json={raw}",
        *argv,
    ]
    code = subprocess.call(cmd, cwd=REPO)
    if code != 0:
        raw.unlink(missing_ok=True)
        return code
    data = json.loads(raw.read_text())
    write_text_atomic(OUT / "benchmarks.json", json.dumps(data, indent=1))
    raw.unlink()
    command = shlex.join(["python", "bench/benchmarks.py", *argv])
    summary = summarize(data, command, git_commit())
    write_text_atomic(OUT / "summary.md", summary)
    print(summary)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
