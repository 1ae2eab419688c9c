"""Cost cards of every network the committed tables use: results/bench/cost.md and
cost.json.

    python bench/cost.py                              # the networks of results/*/*/
    python bench/cost.py profile=paper ablation=thesis   # those of one config's table
    python bench/cost.py --runs 50                    # more timed runs per latency

Per network (``kdcore.cost.cost_card``): parameters, MACs and FLOPs, CPU latency at batch
1 and the training batch with 1 thread and every core, CPU peak memory, and GPU latency
and memory on a CUDA machine. Per student, beside eager PyTorch: the latency of its
TorchScript and ONNX Runtime exports, and their parity with eager (largest absolute
logit difference on random images in [0, 1]; the test suite checks it on real slices).
Run it on an otherwise idle machine: it times wall clock. Figures, not tests.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import tempfile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import pandas as pd

from kdcore.cost import ModelSpec, all_cores, cost_card, cpu_latency, table_models
from kdcore.errors import ConfigError
from kdcore.export import (
    PARITY_ATOL,
    export_onnx,
    export_torchscript,
    load_torchscript,
    onnx_available,
    onnx_latency,
    parity,
)
from kdcore.io import write_text_atomic
from kdcore.provenance import git_commit, machine, machine_text, utc_now
from kdcore.report import cost_table
from kdcore.settings import compose_config, with_defaults

OUT = REPO / "results" / "bench"


def committed_specs(results: Path) -> list[tuple[ModelSpec, list[str]]]:
    """Each distinct network of the tables under ``results``, with the tables using it."""
    defaults = compose_config()
    found: dict[str, tuple[ModelSpec, list[str]]] = {}
    for path in sorted(results.glob("*/*/provenance.json")):
        if path.parent.parent.name == "bench":
            continue
        config = json.loads(path.read_text()).get("config")
        if not config:
            continue
        table = f"{path.parent.parent.name}/{path.parent.name}"
        for spec, _ in table_models(with_defaults(config, defaults)):
            found.setdefault(spec.key, (spec, []))
            if table not in found[spec.key][1]:
                found[spec.key][1].append(table)
    return list(found.values())


def config_specs(overrides: list[str]) -> list[tuple[ModelSpec, list[str]]]:
    """The networks of the table that ``overrides`` (Hydra syntax) would write."""
    cfg = compose_config(overrides)
    specs: dict[str, ModelSpec] = {}
    for spec, _ in table_models(cfg):
        specs.setdefault(spec.key, spec)
    return [(s, [" ".join(overrides)]) for s in specs.values()]


def exported_timings(spec: ModelSpec, runs: int, warmup: int) -> dict[str, Any]:
    """Latency of a student's TorchScript and ONNX Runtime exports beside eager PyTorch,
    at batch 1 and its training batch, 1 thread and every core, and their parity."""
    model = spec.build()
    out: dict[str, Any] = {"model": spec.name, "input": spec.key.split(" ")[2]}
    with tempfile.TemporaryDirectory() as folder:
        files = {"torchscript": export_torchscript(model, spec.example(2), Path(folder) / "s.pt")}
        if onnx_available():
            files["onnx"] = export_onnx(model, spec.example(2), Path(folder) / "s.onnx")
        traced = load_torchscript(files["torchscript"])
        for batch in sorted({1, spec.batch_size}):
            x = spec.example(batch)
            for threads in sorted({1, all_cores()}):
                key = f"b{batch}-t{threads}"
                out[f"eager {key}"] = cpu_latency(model, x, threads, runs, warmup)["median_ms"]
                out[f"torchscript {key}"] = cpu_latency(traced, x, threads, runs, warmup)[
                    "median_ms"
                ]
                if "onnx" in files:
                    out[f"onnx {key}"] = onnx_latency(files["onnx"], x, threads, runs, warmup)[
                        "median_ms"
                    ]
        out["parity"] = parity(model, files, spec.example(16))
    return out


def export_table(rows: list[dict[str, Any]]) -> str:
    """Median ms of eager, TorchScript and ONNX Runtime per student and setting."""
    lines = []
    for r in rows:
        for key in [k[len("eager ") :] for k in r if k.startswith("eager ")]:
            batch, threads = (int(p[1:]) for p in key.split("-"))
            eager = r[f"eager {key}"]
            line = {
                "student": r["model"],
                "input": r["input"],
                "batch": batch,
                "threads": threads,
                "eager ms": f"{eager:.2f}",
                "TorchScript ms": f"{r[f'torchscript {key}']:.2f}",
            }
            if f"onnx {key}" in r:
                line["ONNX Runtime ms"] = f"{r[f'onnx {key}']:.2f}"
                line["eager / ONNX Runtime"] = f"{eager / r[f'onnx {key}']:.2f}"
            lines.append(line)
    return pd.DataFrame(lines).to_markdown(index=False)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("overrides", nargs="*", help="Hydra overrides of one table's config")
    parser.add_argument("--runs", type=int, default=20, help="timed runs per latency")
    parser.add_argument("--warmup", type=int, default=5, help="untimed runs before them")
    parser.add_argument("--out", type=Path, default=OUT, help="folder of cost.md and cost.json")
    args = parser.parse_args(argv)
    if args.runs < 3:
        raise ConfigError(f"--runs must be at least 3 (quartiles need them), got {args.runs}")
    command = shlex.join(["python", "bench/cost.py", *(argv if argv is not None else sys.argv[1:])])
    specs = config_specs(args.overrides) if args.overrides else committed_specs(REPO / "results")
    if not specs:
        raise ConfigError("no table with a recorded config under results/: nothing to measure")
    cards, exports = [], []
    for spec, tables in specs:
        print(f"cost: {spec.key} ({len(tables)} table(s))", flush=True)
        cards.append({**cost_card(spec, args.runs, args.warmup), "tables": tables})
        if spec.role == "student":
            exports.append(exported_timings(spec, args.runs, args.warmup))
    report = {
        "command": command,
        "commit": git_commit(),
        "written": utc_now(),
        "machine": machine_text(machine()),
        "cards": cards,
        "exports": exports,
    }
    parity_lines = [
        f"- {e['model']} ({e['input']}): "
        + ", ".join(f"{k} {v:.1e}" for k, v in e["parity"].items())
        for e in exports
    ]
    text = "\n".join(
        [
            "# What each network costs to run",
            "",
            f"Written by `{command}` at {report['written']}, commit {report['commit']}.",
            f"Machine: {report['machine']}.",
            "",
            f"{cards[0]['convention']}. Inference (logits only; a teacher's reconstruction "
            "decoder is left out), eval mode, random weights. Latency: median [quartiles] "
            f"of {args.runs} timed calls after {args.warmup} warm-up calls. CPU peak memory: "
            "growth of the resident set during one forward in a fresh process. Ratios "
            "compare numbers of this run on this machine; absolute times differ between "
            "machines.",
            "",
            cost_table(cards),
            "",
            "Tables that use each network: "
            + "; ".join(
                f"{c['model']} {'x'.join(map(str, c['input']))}: {len(c['tables'])}" for c in cards
            ),
            "",
            "## Exported students",
            "",
            "Median ms of each student as eager PyTorch, TorchScript (`torch.jit.trace`) and "
            "ONNX Runtime (CPU execution provider; the model exported by `torch.onnx.export`"
            ", dynamo), same inputs, same threads."
            + ("" if onnx_available() else " ONNX packages not installed: no ONNX column."),
            "",
            export_table(exports),
            "",
            f"Largest absolute logit difference from eager PyTorch on 16 random images in "
            f"[0, 1] (bound {PARITY_ATOL:.0e}; the tests check it on phantom test slices):",
            "",
            *parity_lines,
            "",
        ]
    )
    args.out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(args.out / "cost.json", json.dumps(report, indent=1) + "\n")
    write_text_atomic(args.out / "cost.md", text)
    print(f"wrote {args.out / 'cost.md'} and cost.json")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
