"""The Markdown report of a table (``table.md``): the setup as each grid cell had it, the
statistics used, the summary table (``kdcore.summary``) with the thesis's own rows marked
beside their published numbers, the figures, the published numbers, the time a trial
took, and provenance.

What differs between the cells of a grid (the split, so the test set and what the
teacher and students were trained on) is stated per cell, from the trial data: each
trial's ``split`` and each cell's test patients in ``cases``. Needs pandas only (no torch).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from kdcore.rows import BASELINE, cell_text, one_line
from kdcore.stats import minimum_detectable_effect, seeds_needed
from kdcore.summary import StatsSettings, in_cell, summary_markdown

SPLIT_TEXT = {
    "patient": "patient split (no patient in two of train, validation and test)",
    "slice": "SLICE split (leaky, as the thesis: a patient's slices in both train and test)",
}
# How kdcore.names.dataset_label words the split, removed when the split varies by cell.
_DATASET_SPLIT = re.compile(r", (?:patient|SLICE|slice) split(?: \([^)]*\))?")
_KD_ROW = re.compile(r"KD\((T\d+),(S\d+)\)")
_STUDENT_ROW = re.compile(r"(S\d+)\b")
_TEACHER_FAMILY = re.compile(r"T\d+")


def cells_of(trials: pd.DataFrame, axes: Sequence[str]) -> list[dict[str, Any]]:
    """The grid's cells (axis values) in table order; one empty cell without axes."""
    if not axes:
        return [{}]
    return trials.drop_duplicates(list(axes))[list(axes)].to_dict("records")


def _per_cell(
    head: str, trials: pd.DataFrame, axes: Sequence[str], describe: Callable[[Any], str]
) -> list[str]:
    """A setup line: ``head`` and ``describe(cell)``; when the description differs between
    cells, one sub-item per description with the cells it holds for."""
    groups: dict[str, list[str]] = {}
    for cell in cells_of(trials, axes):
        groups.setdefault(describe(cell), []).append(cell_text(cell))
    if len(groups) == 1:
        return [f"- {head} {next(iter(groups))}"]
    return [f"- {head}", *(f"  - {text}: {'; '.join(c)}" for text, c in groups.items())]


def _test_set(split: str, patients: int) -> str:
    if split == "slice":
        return (
            f"the test slices of {patients} patients, whose other slices were in training "
            "(slice split)"
        )
    return f"{patients} test patients"


def _test_patients(cases: pd.DataFrame, cell: Mapping[str, Any], axes: Sequence[str]) -> int:
    counts = in_cell(cases, cell, axes).groupby(["variant", "seed"])["case"].nunique()
    return int(counts.min())


def _split_of(trials: pd.DataFrame, cell: Mapping[str, Any], axes: Sequence[str]) -> str:
    return "/".join(map(str, in_cell(trials, cell, axes)["split"].unique()))


def _teacher_cells(meta: dict[str, Any], trials: pd.DataFrame) -> pd.DataFrame:
    """The trials of the cells a teacher served. A cell names the teacher axis by its label
    (e.g. 'T1') and a trial by the teacher's name (e.g. 'T1(w16,d4)'); both match."""
    rows = []
    for cell in meta.get("cells") or []:
        mask = pd.Series(True, index=trials.index)
        for k, v in cell.items():
            if k not in trials:
                continue
            same = trials[k].astype(str) == str(v)
            if k == "teacher":
                same |= trials[k] == meta["name"]
            mask &= same
        rows.append(trials[mask])
    served = pd.concat(rows) if rows else trials.iloc[:0]
    return served if len(served) else trials


def _teacher_line(
    meta: dict[str, Any],
    trials: pd.DataFrame,
    cases: pd.DataFrame,
    axes: Sequence[str],
    n_cells: int,
) -> str:
    """A teacher, what it was trained on, its test metrics, and the grid cells it serves
    unless it serves all."""
    t = meta["test"]
    cells = ""
    if len(meta["cells"]) < n_cells:
        cells = " (for " + "; ".join(cell_text(c) for c in meta["cells"]) + ")"
    served = _teacher_cells(meta, trials)
    splits = sorted(set(served["split"]))
    if splits == ["slice"]:
        own = cases.merge(served[list(axes)].drop_duplicates()) if axes else cases
        trained = (
            f"the training slices, drawn from the same {own['case'].nunique()} patients as "
            "the test slices (slice split)"
        )
    elif splits == ["patient"]:
        trained = "all training patients (none of the test patients)"
    else:
        trained = f"the training set of each of its cells ({' and '.join(splits)} split)"
    return (
        f"- Teacher{cells}: {meta['name']}, {meta['params']:,} parameters, trained on "
        f"{trained}; test Dice {t['dice']:.3f}, IoU {t['iou']:.3f}, recall "
        f"{t['recall']:.3f}, precision {t['precision']:.3f}, 3D Dice {t['dice_3d']:.3f} "
        f"(checkpoint of epoch {meta['best_epoch']}, chosen on validation)"
    )


def thesis_rows(
    summary: pd.DataFrame,
    trials: pd.DataFrame,
    axes: Sequence[str],
    reference: dict[str, Any] | None,
) -> list[str]:
    """Per summary row, the published row of ``reference`` it reproduces with its Dice,
    e.g. 'KD(T1,S1): 0.772', else ''.

    A published 'KD(Tt,Ss)' row is variant ``kd-TtSs`` in a cell whose teacher is of
    family Tt (its name starts with it) and whose student is Ss; a published 'Ss: ...'
    row is the baseline of a cell whose student is Ss.
    """
    if not reference or "teacher" not in trials or "student" not in trials:
        return [""] * len(summary)
    kd, students = {}, {}
    for r in reference.get("rows", []):
        method = str(r.get("method", ""))
        if "dice" not in r:
            continue
        if m := _KD_ROW.fullmatch(method.replace(" ", "")):
            kd[(f"kd-{m[1]}{m[2]}", m[1], m[2])] = f"{method}: {r['dice']:.3f}"
        elif m := _STUDENT_ROW.match(method):
            students[m[1]] = f"{m[1]}: {r['dice']:.3f}"
    out = []
    for _, row in summary.iterrows():
        cell = in_cell(trials, row, axes)
        student = str(cell["student"].iloc[0])
        family = _TEACHER_FAMILY.match(str(cell["teacher"].iloc[0]))
        if row["variant"] == BASELINE:
            out.append(students.get(student, ""))
        else:
            out.append(kd.get((row["variant"], family and family[0], student), ""))
    return out


def render_report(
    title: str,
    summary: pd.DataFrame,
    trials: pd.DataFrame,
    cases: pd.DataFrame,
    axes: list[str],
    teachers: list[dict[str, Any]],
    dataset: str,
    replicates: str,
    protocol: str,
    command: str,
    config_yaml: str,
    commit: str,
    written: str,
    reference: dict[str, Any] | None = None,
    figures: list[str] = (),
    sections: list[str] = (),
    rerendered: Sequence[str] = (),
    budget: str = "",
    stats: StatsSettings | None = None,
) -> str:
    """The Markdown report of a grid: setup, statistics used, the summary table (from
    ``summarize``) with the reference's own rows marked (``thesis_rows``) and its figures
    (file names beside the report), further ``sections`` (Markdown lines), published
    numbers, provenance (with a line per re-rendering, ``rerendered``). ``budget``: the
    line saying how long each run trained (``kdcore.names.budget_label``); ``stats``: how
    the rows were judged."""
    stats = stats or StatsSettings()
    students = trials.drop_duplicates(["student", "params"])
    student = ", ".join(
        f"{r.student} ({int(r.params):,} parameters)" for r in students.itertuples()
    )
    seeds = sorted(trials["seed"].unique())
    grid = " x ".join(
        [f"{k} ({', '.join(map(str, trials[k].unique()))})" for k in axes]
        + [f"variant ({trials['variant'].nunique()})", f"seed ({len(seeds)})"]
    )
    n_kd = int(summary["delta"].notna().sum()) if "delta" in summary else 0
    n_cells = len(cells_of(trials, axes))
    split_varies = trials["split"].nunique() > 1
    if split_varies:
        dataset = _DATASET_SPLIT.sub("", dataset)

    def training(cell: Mapping[str, Any]) -> str:
        unit = "patients" if _split_of(trials, cell, axes) == "patient" else "slices"
        if "data_fraction" in axes:
            return f"the data fraction of its row of the training {unit}"
        fraction = in_cell(trials, cell, axes)["data_fraction"].iloc[0]
        return f"{fraction:.0%} of the training {unit}"

    def test_set(cell: Mapping[str, Any]) -> str:
        return _test_set(_split_of(trials, cell, axes), _test_patients(cases, cell, axes))

    lines = [f"# {title}", "", f"- Dataset: {dataset}"]
    if split_varies:
        lines += _per_cell(
            "Split:", trials, axes, lambda c: SPLIT_TEXT.get(_split_of(trials, c, axes), "?")
        )
    lines += [_teacher_line(meta, trials, cases, axes, n_cells) for meta in teachers]
    lines += _per_cell(f"Student: {student}, trained on", trials, axes, training)
    lines += [
        f"- Grid: {grid}; rows are the axis values and variants.",
        f"- Seeds: {', '.join(map(str, seeds))}. {replicates}",
    ]
    lines += _per_cell("Test set:", trials, axes, test_set)
    lines += [
        "- Metrics: dice / iou / recall / precision pooled over all test slices (as the "
        "thesis); dice_3d: mean per-volume 3D Dice.",
        "- Each cell: mean over seeds [95% t-interval, clipped to the metrics' range [0, 1]]. "
        "KD rows, against the baseline of the "
        "same cell and seeds: the per-seed paired Dice difference in points [95% "
        "t-interval], the seeds it won, the 95% percentile interval of a paired bootstrap "
        "over the test patients (2,000 resamples), and the paired t-test p-value adjusted "
        f"with Holm's method over the {n_kd} KD rows of this table. The intervals are not "
        "corrected for multiple comparisons. MDE: the smallest true difference a paired "
        f"t-test detects with {stats.power:.0%} power from the row's own paired spread, at "
        f"alpha {stats.alpha:g} (in brackets: at alpha / {n_kd}, Holm's strictest step). "
        "verdict: budget-limited when fewer than "
        f"{stats.converged_share:.0%} of either arm's runs converged; else gain or loss "
        f"when the Holm-adjusted p is below {stats.alpha:g}; else unstable when either arm "
        "mixes collapsed and working runs (collapsed: test Dice below "
        f"{stats.collapse:g} x the cell's baseline mean); else within noise.",
        f"- {protocol}",
        *([f"- {budget}"] if budget else []),
        *power_lines(summary, trials, stats),
    ]
    published = thesis_rows(summary, trials, axes, reference)
    if any(published):
        lines.append(
            "- Rows in bold are the published table's own rows (the same teacher, student "
            "and KD terms); its Dice stands beside theirs."
        )
    lines += [
        "",
        summary_markdown(summary, axes, published),
        "",
        *[f"![{Path(name).stem}]({name})\n" for name in figures],
        *sections,
        *_reference_lines(reference),
        "Objective per variant: "
        + "; ".join(
            f"{v}: `{o}`"
            for v, o in trials.drop_duplicates("variant")[["variant", "objective"]].itertuples(
                index=False
            )
        ),
        "",
        "## Provenance",
        "",
        f"- Command: `{one_line(command)}`",
        f"- Git commit: {commit}",
        f"- Written: {written}",
        *[f"- {line}" for line in rerendered],
        "- Per-trial rows: `trials.csv`; per-patient test counts: `cases.csv`; per-epoch "
        "losses of each trial: `history/`",
        "",
        "Resolved config:",
        "",
        "```yaml",
        config_yaml.rstrip(),
        "```",
        "",
    ]
    return "\n".join(lines)


CLASS_HEADING = "## Per class"  # the per-class section of a multi-class table
TIME_PREFIX = "- Time per trial (mean seconds):"  # the time line's start


def class_lines(classes: pd.DataFrame, axes: Sequence[str] = ()) -> list[str]:
    """The per-class section of a multi-class table (``summarize_classes``), or none."""
    if classes.empty:
        return []
    lines = [
        CLASS_HEADING,
        "",
        "The table above scores the mean over classes: each class is scored as its own "
        "binary task (its pixels against all others; dice_3d over the test patients whose "
        "truth holds it) and the scores are averaged over the classes (the patient "
        "bootstrap resamples patients and averages the classes' pooled Dice). Below, each "
        "class with the same statistics, Holm's correction over its own KD rows.",
        "",
    ]
    for name in classes["class"].drop_duplicates():
        own = classes[classes["class"] == name].drop(columns="class")
        lines += [f"### {name}", "", summary_markdown(own, list(axes)), ""]
    return lines


def time_line(
    trials: pd.DataFrame, histories: dict[str, list[dict]], grid_s: float, slots: int
) -> str:
    """Where a trial's time goes, on average: data, training steps, validation,
    checkpoints, models and test; and what the grid's wall time on ``slots`` parallel
    trials makes of each trial (the rest is Ray's scheduling and idle slots)."""
    steps = np.mean([sum(h["train_s"] for h in rows) for rows in histories.values()])
    parts = {
        "data": trials["data_s"].mean(),
        "training steps": steps,
        "validation": trials["fit_s"].mean() - steps,
        "checkpoints": trials["checkpoint_s"].mean(),
        "models and test": (trials["wall_s"] - trials["data_s"] - trials["fit_s"]).mean(),
    }
    shown = ", ".join(f"{k} {v:.1f}" for k, v in parts.items())
    trained = int((~trials["reused"].astype(bool)).sum()) if "reused" in trials else len(trials)
    grid = (
        f"The grid took {grid_s:.0f} s for the {trained} trials it trained, {slots} at a "
        f"time: {grid_s * slots / trained:.1f} s of a slot per trial."
        if trained
        else "Every trial came from the trial store: this grid trained none."
    )
    return f"{TIME_PREFIX} {shown}; as Ray Tune measured it {trials['trial_s'].mean():.1f}. {grid}"


def _reference_lines(reference: dict[str, Any] | None) -> list[str]:
    """Published numbers shown beside the table (``reference_table``), with their source."""
    if not reference:
        return []
    return [
        "## Published numbers",
        "",
        reference["source"],
        "",
        pd.DataFrame(reference["rows"]).to_markdown(index=False),
        "",
    ]


def power_lines(summary: pd.DataFrame, trials: pd.DataFrame, stats: StatsSettings) -> list[str]:
    """What the table can see, how its runs ended, and where they came from: the median
    paired SD of its KD rows with the minimum detectable effect it gives at the table's
    seeds (before and after Holm) and the seeds a 1-point effect needs; converged, early
    stopped and collapsed runs; runs reused from the trial store; the machines."""
    lines = []
    kd = summary[summary["variant"] != BASELINE]
    sds = kd["sd"].dropna() if "sd" in kd else []
    if len(sds):
        sd, n, m = float(sds.median()), int(kd["seeds"].median()), len(kd)
        strict = stats.alpha / m
        need = seeds_needed(sd, 1.0, strict, stats.power)
        mde = minimum_detectable_effect(sd, n, stats.alpha, stats.power)
        mde_holm = minimum_detectable_effect(sd, n, strict, stats.power)
        lines.append(
            f"- Power: the per-seed paired differences have an SD of {sd:.2f} Dice points "
            f"(median over the {m} KD rows). With {n} seeds the minimum detectable effect "
            f"at {stats.power:.0%} power is {mde:.2f} points (alpha {stats.alpha:g}), "
            f"{mde_holm:.2f} "
            f"after Holm over {m} rows; a 1-point effect would need "
            f"{need if need else 'more than 100,000'} seeds after Holm."
        )
    if "converged" in trials:
        n = len(trials)
        done = int(trials["converged"].astype(bool).sum())
        early = int(trials["stopped_early"].astype(bool).sum())
        collapsed = int(summary["collapsed"].fillna(0).sum()) if "collapsed" in summary else 0
        lines.append(
            f"- Runs: {done} of {n} converged, {early} stopped early, {collapsed} collapsed "
            f"(test Dice below {stats.collapse:g} x their cell's baseline mean; counted, "
            "not removed from the intervals). Learning curves: `learning_curves.png`."
        )
    if "reused" in trials:
        reused = int(trials["reused"].astype(bool).sum())
        lines.append(
            f"- Trials: {len(trials) - reused} trained for this table, {reused} reused from "
            "the trial store (trained earlier, by this or another table's grid, with "
            "identical settings; `trials.csv` says which and when)."
        )
    if "machine" in trials:
        machines = trials["machine"].dropna().unique()
        lines.append(f"- Machine{'s' if len(machines) > 1 else ''}: " + "; ".join(machines))
    return lines


COST_HEADING = "## What each network costs to run"


def _ms(t: Mapping[str, float]) -> str:
    return f"{t['median_ms']:.2f} [{t['q1_ms']:.2f}, {t['q3_ms']:.2f}]"


def cost_table(cards: Sequence[Mapping[str, Any]]) -> str:
    """Cost cards (``kdcore.cost.cost_card``) as one Markdown table: a row per network,
    latencies as median [quartiles] in ms per batch size and thread count."""
    rows = []
    for c in cards:
        row = {
            "model": c["model"],
            "role": c["role"],
            "input": "x".join(map(str, c["input"])),
            "params": f"{c['params']:,}",
            "MMACs": f"{c['macs'] / 1e6:,.1f}",
            "MFLOPs": f"{c['flops'] / 1e6:,.1f}",
        }
        for key, t in c["cpu"].items():
            batch, threads = (int(part[1:]) for part in key.split("-"))
            row[f"CPU ms, batch {batch}, {threads} thread{'s' if threads > 1 else ''}"] = _ms(t)
        for key, mib in c["cpu_peak_mib"].items():
            row[f"CPU peak MiB, batch {key[1:]}"] = f"{mib:.1f}"
        for key, t in c["cuda"].items():
            row[f"GPU ms, batch {key[1:]}"] = _ms(t)
            row[f"GPU peak MiB, batch {key[1:]}"] = f"{t['peak_mib']:.1f}"
        rows.append(row)
    return pd.DataFrame(rows).fillna("—").to_markdown(index=False)


def cost_lines(cards: Sequence[Mapping[str, Any]]) -> list[str]:
    """The report's cost section: the cards' table, how they were measured and where."""
    if not cards:
        return []
    c = cards[0]
    gpu = (
        "; GPU: CUDA events around each call, peak memory above the model's own"
        if any(card["cuda"] for card in cards)
        else "; no GPU on this machine"
    )
    return [
        COST_HEADING,
        "",
        f"Inference of each network on one {c['input'][1]}x{c['input'][2]} input (logits "
        "only: a teacher's reconstruction decoder is left out), eval mode. "
        f"{c['convention']}. CPU latency: median [quartiles] of {c['runs']} timed calls "
        f"after {c['warmup']} warm-up call{'s' if c['warmup'] != 1 else ''}, eager "
        "PyTorch, at batch 1 and the training batch, with 1 thread and every core; CPU "
        "peak memory: growth of the resident set "
        f"during one forward, in a fresh process{gpu}. Measured on {c['machine']} at "
        f"{c['measured']}. The table's 'student MFLOPs' and 'student CPU ms' columns are "
        "the row's student (batch 1, 1 thread).",
        "",
        cost_table(cards),
        "",
    ]


def with_costs(
    summary: pd.DataFrame,
    trials: pd.DataFrame,
    axes: Sequence[str],
    cards: Sequence[Mapping[str, Any]],
) -> pd.DataFrame:
    """``summary`` with each row's student's MFLOPs and CPU ms (batch 1, 1 thread): the
    cost card named by the row's trials' ``student``, or where several cards share that
    name (an image-size axis), the one whose ``cells`` hold the row's cell. No cards:
    unchanged."""
    students = [c for c in cards if c["role"] == "student"]
    if not students:
        return summary
    out = summary.copy()
    mflops, ms = [], []
    for _, r in summary.iterrows():
        cell = {k: r[k] for k in axes}
        names = set(in_cell(trials, cell, axes)["student"]) if "student" in trials else set()
        named = [c for c in students if c["model"] in names]
        card = (
            named[0]
            if len(named) == 1
            else next((c for c in named or students if cell in c["cells"]), None)
        )
        mflops.append(card["flops"] / 1e6 if card else np.nan)
        ms.append(card["cpu"]["b1-t1"]["median_ms"] if card else np.nan)
    out["student_mflops"], out["student_cpu_ms"] = mflops, ms
    return out


def frontier(cards: Sequence[Mapping[str, Any]]) -> bool:
    """Whether a table gets the Dice-against-latency figure: it has several students."""
    return sum(c["role"] == "student" for c in cards) > 1


def export_lines(students: Sequence[Mapping[str, Any]]) -> list[str]:
    """The report's lines on the exported students (``kdcore.export``), if any."""
    if not students:
        return []
    lines = [
        "## Exported students",
        "",
        f"The student of seed {students[0]['seed']} (the first seed) of each variant and "
        "cell, in `students/<cell>-<variant>/`: `student.pt` (TorchScript), `student.onnx` "
        "(ONNX) where the export extra is installed, and `student.json` (input, HU window, "
        "orientation, decision rule, classes). Largest absolute difference of logits from "
        "eager PyTorch on test slices:",
        "",
    ]
    for s in students:
        diffs = ", ".join(f"{k} {v:.1e}" for k, v in s["parity_max_abs_logit_diff"].items())
        lines.append(f"- `{s['folder']}`: {diffs} (bound {s['parity_bound']:.0e})")
    return [*lines, ""]
