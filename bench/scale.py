"""Scale-out figures: the teacher sharded over workers, and the grid's parallel efficiency.

    python bench/scale.py         # results/bench/scale.json and scale.md

- memory: what each rank holds of the frozen teacher sharded by ZeRO-3 (parameter
  elements, measured from its shards) and its peak resident memory, at 1 and 2 workers,
  for T1 (width 64, depth 4) and T1 at width 128, filling the output cache of the smoke
  data (32x32 slices);
- throughput: slices per second of the cache fill at 1 and 2 workers, quick profile
  (its teacher and 64x64 data);
- grid: the same grid (baseline and pmd x 4 seeds) with 1 and with 2 concurrent trials,
  for smoke-sized trials (60 steps, about 2 s each) and quick-profile trials; parallel
  efficiency = time(1) / (2 x time(2)).

Figures, not tests: nothing asserts a speed. Workers get one CPU (and one thread) each.
"""

from __future__ import annotations

import json
import os
import shlex
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

import ray  # noqa: E402
import torch  # noqa: E402

from kdcore.data.prepare import prepare_data  # noqa: E402
from kdcore.grid import run_grid  # noqa: E402
from kdcore.io import write_text_atomic  # noqa: E402
from kdcore.job import prepare_teachers  # noqa: E402
from kdcore.models import build_teacher, count_parameters  # noqa: E402
from kdcore.provenance import git_commit, utc_now  # noqa: E402
from kdcore.settings import absolute_paths, compose_config, with_settings  # noqa: E402
from kdcore.teacher import write_outputs_on_workers  # noqa: E402

OUT = REPO / "results" / "bench"
MiB = 1024**2


def config(work: Path, *overrides: str):
    return absolute_paths(compose_config([f"work_dir={work}", *overrides]))


def fill(cfg, workers: int, width: int, folder: Path) -> dict:
    """One sharded cache fill of a randomly initialised teacher of ``width``."""
    cfg = with_settings(cfg, {"teacher.workers": workers, "teacher.width": width})
    data, _ = prepare_data(cfg, lambda _: None)
    torch.manual_seed(0)
    teacher = build_teacher(width, cfg.teacher.depth)
    weights = {k: v.detach().clone() for k, v in teacher.state_dict().items()}
    params = count_parameters(teacher)
    del teacher
    run = write_outputs_on_workers(cfg, weights, data, folder, lambda _: None)
    return {"width": width, "params": params, "slices": len(data), **run}


def memory_and_throughput(work: Path) -> list[dict]:
    rows = []
    smoke = config(work / "smoke", "profile=smoke", "teacher.depth=4")
    quick = config(work / "quick", "profile=quick")
    cases = [(smoke, "smoke", w, n) for w in (64, 128) for n in (1, 2)]
    cases += [(quick, "quick", quick.teacher.width, n) for n in (1, 2)]
    for cfg, profile, width, workers in cases:
        folder = Path(tempfile.mkdtemp(dir=work)) / "outputs"
        run = fill(cfg, workers, width, folder)
        rows.append({"profile": profile, **run})
        print(
            f"{profile} width {width} x {workers} workers: held "
            f"{[r['held'] for r in run['ranks']]} of {run['params']}, peak RSS MiB "
            f"{[round(r['rss_peak_bytes'] / MiB) for r in run['ranks']]}, "
            f"{run['slices'] / max(r['seconds'] for r in run['ranks']):.1f} slices/s",
            flush=True,
        )
    return rows


def grid_efficiency(work: Path, *overrides: str) -> dict:
    base = config(work, "variants=[baseline,pmd]", "seeds=[0,1,2,3]", *overrides)
    teachers, _ = prepare_teachers(base, lambda _: None)
    times = {}
    for concurrent in (1, 2):
        cfg = with_settings(
            base,
            {
                "ray.max_concurrent_trials": concurrent,
                "ray.storage": str(work / f"ray-{concurrent}"),
            },
        )
        start = time.perf_counter()
        rows, _ = run_grid(cfg, teachers, lambda _: None)
        times[concurrent] = time.perf_counter() - start
        print(f"grid of {len(rows)} trials, {concurrent} at a time: {times[concurrent]:.1f}s")
    return {
        "grid": " ".join(overrides),
        "trials": len(rows),
        "seconds_1": times[1],
        "seconds_2": times[2],
        "efficiency": times[1] / (2 * times[2]),
    }


def markdown(result: dict) -> str:
    lines = [
        "# Scale-out: the sharded teacher and the grid",
        "",
        f"- Command: `{result['command']}`",
        f"- Commit: {result['commit']}; written {result['written']}",
        f"- Machine: {result['machine']}",
        "",
        "## The frozen teacher sharded by ZeRO-3 (teacher-output cache fill)",
        "",
        "| data | teacher width | parameters | workers | held per rank (elements) | "
        "peak RSS per rank (MiB) | RSS at start (MiB) | slices/s |",
        "|:--|--:|--:|--:|:--|:--|:--|--:|",
    ]
    for r in result["fill"]:
        ranks = r["ranks"]
        held = ", ".join(f"{x['held']:,}" for x in ranks)
        peak = ", ".join(f"{x['rss_peak_bytes'] / MiB:.0f}" for x in ranks)
        start = ", ".join(f"{x['rss_start_bytes'] / MiB:.0f}" for x in ranks)
        speed = r["slices"] / max(x["seconds"] for x in ranks)
        lines.append(
            f"| {r['profile']} ({r['slices']} slices) | {r['width']} | {r['params']:,} | "
            f"{r['workers']} | {held} | {peak} | {start} | {speed:.1f} |"
        )
    lines += [
        "",
        "Peak RSS is the whole worker process (Python, torch, Ray and DeepSpeed included);",
        "RSS at start is the same process before the teacher was built. Rank 0 also holds",
        "the whole state dict it loads the shards from. slices/s: the cache's slices over",
        "the slowest rank's forward time.",
        "",
        "## Grid parallel efficiency",
        "",
        "The same grid (baseline and pmd x 4 seeds) with 1 and with 2 trials at a time;",
        "efficiency = time(1) / (2 x time(2)).",
        "",
        "| grid | trials | 1 at a time (s) | 2 at a time (s) | efficiency |",
        "|:--|--:|--:|--:|--:|",
    ]
    for g in result["grid"]:
        lines.append(
            f"| `{g['grid']}` | {g['trials']} | {g['seconds_1']:.1f} | {g['seconds_2']:.1f} | "
            f"{g['efficiency']:.2f} |"
        )
    lines.append("")
    return "\n".join(lines)


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="kdscale") as tmp:
        work = Path(tmp)
        ray.init(address="local", include_dashboard=False, configure_logging=False)
        try:
            result = {
                "command": shlex.join(["python", "bench/scale.py", *sys.argv[1:]]),
                "commit": git_commit(),
                "written": utc_now(),
                "machine": f"{os.cpu_count()} CPUs, no GPU"
                if not torch.cuda.is_available()
                else torch.cuda.get_device_name(),
                "fill": memory_and_throughput(work),
                "grid": [
                    grid_efficiency(work / "smoke", "profile=smoke", "budget.steps=60"),
                    grid_efficiency(work / "quick", "profile=quick"),
                ],
            }
        finally:
            ray.shutdown()
    OUT.mkdir(parents=True, exist_ok=True)
    write_text_atomic(OUT / "scale.json", json.dumps(result, indent=1))
    write_text_atomic(OUT / "scale.md", markdown(result))
    print(f"wrote {OUT / 'scale.md'}")


if __name__ == "__main__":
    main()
