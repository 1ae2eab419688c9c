"""Run the benchmarks: results/bench/<group>.json per group, and results/bench/summary.md.

    python bench/perf.py                 # every group: step, loss, memory (~8 min on 2 cores)
    python bench/perf.py step            # one group (perf/test_<group>.py)
    python bench/perf.py --summary       # only rebuild summary.md from the JSON files

Figures, not tests: nothing asserts a speed. The summary is rebuilt from every group's
JSON as pytest-benchmark wrote it; each group records its own command, commit and time.
"""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import torch

from kdcore.io import write_text_atomic
from kdcore.provenance import git_commit

OUT = REPO / "results" / "bench"


GROUPS = ("step", "loss", "memory")


def ratios(rows: dict[str, dict]) -> list[str]:
    """Compiled vs eager per loss case; KD, reference, cached and NHWC vs NCHW student steps."""
    lines = []
    mean = {name: b["stats"]["mean"] for name, b in rows.items()}
    for name in mean:
        if name.startswith("test_kd_loss") and name.endswith("-compiled]"):
            case = name[name.index("[") + 1 : -len("-compiled]")]
            speedup = mean[name.replace("-compiled]", "-eager]")] / mean[name]
            lines.append(f"- loss {case}: eager time / compiled time = {speedup:.2f}")
    for setting in ("paper-256", "quick-64"):
        # step kind (perf/test_step.py's names) -> mean time, for this setting
        head, tail = "test_training_step[", f"-{setting}]"
        step = {
            name[len(head) : -len(tail)]: t
            for name, t in mean.items()
            if name.startswith(head) and name.endswith(tail)
        }
        if step.get("student") and step.get("kd") and step.get("reference"):
            line = (
                f"- step {setting}: KD = {step['kd'] / step['student']:.2f}x a student step, "
                f"the reference's way = {step['reference'] / step['student']:.2f}x; ours is "
                f"{step['reference'] / step['kd']:.2f}x faster than the reference's"
            )
            if step.get("kd-cached"):
                line += f"; with the teacher cache {step['kd-cached'] / step['student']:.2f}x"
            if step.get("kd-cached-compiled"):
                cached_compiled = step["kd-cached-compiled"] / step["student"]
                line += f", and with the loss compiled too {cached_compiled:.2f}x"
            lines.append(line)
        for k in ("student", "kd-cached"):
            if step.get(k) and step.get(f"{k}-nhwc"):
                lines.append(
                    f"- step {setting}, {k}: channels_last is "
                    f"{step[k] / step[f'{k}-nhwc']:.2f}x faster than the default layout"
                )
    return lines


def summarize(groups: dict[str, dict]) -> str:
    """Markdown of every group: provenance, one line per benchmark, ratios."""
    lines = [
        "# Benchmarks",
        "",
        "Written by `python bench/perf.py` from the JSON beside"
        " this file. Ratios compare numbers of the same run on the same machine.",
        "",
    ]
    for group, data in groups.items():
        machine = data["machine_info"]
        lines += [
            f"## {group}",
            "",
            f"- Command: `{data['command']}`, at {data['datetime']}",
            f"- Git commit: {data['commit']}",
            f"- Machine: {machine.get('cpu', {}).get('brand_raw', machine['processor'])}, "
            f"{machine['cpu'].get('count', '?')} cores, torch {torch.__version__}, "
            f"{torch.get_num_threads()} threads",
            "",
            "| benchmark | mean s | std s | rounds | first call s | other |",
            "|---|---|---|---|---|---|",
        ]
        rows = {b["name"]: b for b in data["benchmarks"]}
        for name, b in rows.items():
            s, extra = b["stats"], b.get("extra_info", {})
            first = f"{extra['first_call_s']:.2f}" if "first_call_s" in extra else ""
            other = ", ".join(
                f"{k} {v:.1f}" if isinstance(v, float) else f"{k} {v}"
                for k, v in extra.items()
                if k != "first_call_s" and isinstance(v, int | float) and not isinstance(v, bool)
            )
            lines.append(
                f"| {name} | {s['mean']:.4f} | {s['stddev']:.4f} | {s['rounds']} | {first} "
                f"| {other} |"
            )
        lines += ["", *ratios(rows), ""]
    return "\n".join(lines)


def main(groups: list[str]) -> int:
    if groups == ["--summary"]:
        return write_summary()
    unknown = [g for g in groups if g not in GROUPS]
    if unknown:
        print(
            f"error: unknown group {unknown[0]!r}; choose from {', '.join(GROUPS)}", file=sys.stderr
        )
        return 2
    OUT.mkdir(parents=True, exist_ok=True)
    commit = git_commit()
    for group in groups or GROUPS:
        raw = OUT / f".{group}.json.partial"
        cmd = [
            sys.executable,
            "-m",
            "pytest",
            str(REPO / "perf" / f"test_{group}.py"),
            "-q",
            "-p",
            "no:cacheprovider",
            f"--benchmark-json={raw}",
        ]
        code = subprocess.call(cmd, cwd=REPO)
        if code != 0:
            raw.unlink(missing_ok=True)
            return code
        data = json.loads(raw.read_text())
        data["command"] = shlex.join(["python", "bench/perf.py", group])
        data["commit"] = commit
        write_text_atomic(OUT / f"{group}.json", json.dumps(data, indent=1))
        raw.unlink()
    return write_summary()


def write_summary() -> int:
    """Rebuild summary.md from every group's JSON."""
    found = {
        g: json.loads((OUT / f"{g}.json").read_text())
        for g in GROUPS
        if (OUT / f"{g}.json").is_file()
    }
    summary = summarize(found)
    write_text_atomic(OUT / "summary.md", summary)
    print(summary)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
