"""Re-render committed tables from their trial data, without running anything.

    python bench/rerender.py                      # every table folder under results/
    python bench/rerender.py results/thesis/*/    # these table folders

For each table folder the summary, ``table.md`` and the figures are drawn again by the
current code from ``trials.csv``, ``cases.csv``, ``history/`` and ``provenance.json``.
What trial data cannot tell is carried over from the committed ``table.md``: the title,
the teachers' test metrics, the replicates and protocol wording, the sections after the
figures (time per trial, equal tuning) and the resolved config. ``examples.png`` is drawn
again from ``examples.npz`` where the folder has one (the predictions are not in the
trial data), else left as committed. The table keeps its command, commit and date;
``provenance.json`` and ``table.md`` gain the line "Re-rendered at <commit> on <date> by
bench/rerender.py from the committed trial data". ``results/bench`` holds benchmarks,
not tables, and is never touched.

    python bench/rerender.py --cost               # also measure missing cost cards

A table folder's ``cost.json`` (the cost card of each network, ``kdcore.cost``) gives
its cost section, its student cost columns and, with several students,
``dice_vs_latency.png``. With ``--cost`` a table without one gets its cards measured on
this machine from its config (each card names the machine and the time); without, such
a table is re-rendered without cost.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from kdcore.cost import table_cards  # noqa: E402
from kdcore.errors import ConfigError  # noqa: E402
from kdcore.io import write_text_atomic  # noqa: E402
from kdcore.per_class import summarize_classes  # noqa: E402
from kdcore.plots import (  # noqa: E402
    figures_for,
    plot_classes,
    plot_examples,
    plot_frontier,
    plot_learning_curves,
)
from kdcore.provenance import git_commit, rerender_line, utc_now  # noqa: E402
from kdcore.report import (  # noqa: E402
    CLASS_HEADING,
    COST_HEADING,
    TIME_PREFIX,
    cells_of,
    class_lines,
    cost_lines,
    frontier,
    render_report,
    with_costs,
)
from kdcore.settings import compose_config, with_defaults  # noqa: E402
from kdcore.summary import StatsSettings, summarize  # noqa: E402
from kdcore.table_folder import (  # noqa: E402
    EXAMPLES_NAME,
    read_cards,
    read_examples,
    read_table,
    write_cards,
    write_index,
)

RESULTS = REPO / "results"
EXAMPLES_PNG = "examples.png"
# A teacher line of kdcore.report (its training wording varies by split).
_TEACHER = re.compile(
    r"- Teacher(?: \(for (?P<cells>.*)\))?: (?P<name>.+?), (?P<params>[\d,]+) parameters, "
    r"trained on .*; test Dice (?P<dice>[\d.]+), IoU (?P<iou>[\d.]+), recall "
    r"(?P<recall>[\d.]+), precision (?P<precision>[\d.]+), 3D Dice (?P<dice_3d>[\d.]+) "
    r"\(checkpoint of epoch (?P<best_epoch>\d+), chosen on validation\)$"
)
_SECTIONS_END = ("## Published numbers", "Objective per variant:")


def table_folders(paths: list[str]) -> list[Path]:
    """The table folders named, or every one under results/ (not results/bench)."""
    if paths:
        return [Path(p) for p in paths]
    return sorted(
        p.parent for p in RESULTS.glob("*/*/provenance.json") if p.parent.parent.name != "bench"
    )


def teachers_of(markdown: str) -> list[dict[str, Any]]:
    """The teachers a committed ``table.md`` lists: name, parameters, test metrics (to
    the three decimals shown), best epoch and the cells it served (as written; [] when
    it served every cell)."""
    teachers = []
    for line in markdown.splitlines():
        if not line.startswith("- Teacher"):
            continue
        m = _TEACHER.match(line)
        if not m:
            raise ConfigError(f"cannot read the teacher line of table.md: {line!r}")
        cells = [
            dict(item.split("=", 1) for item in cell.split(", "))
            for cell in (m["cells"].split("; ") if m["cells"] else [])
        ]
        teachers.append(
            {
                "name": m["name"],
                "params": int(m["params"].replace(",", "")),
                "test": {k: float(m[k]) for k in ("dice", "iou", "recall", "precision", "dice_3d")},
                "best_epoch": int(m["best_epoch"]),
                "cells": cells,
            }
        )
    return teachers


def carried(markdown: str) -> dict[str, Any]:
    """What a committed ``table.md`` states that its trial data cannot: the title, the
    replicates and protocol wording, the sections after the figures and the config."""
    lines = markdown.splitlines()

    def line_after(prefix: str) -> str:
        for line in lines:
            if line.startswith(prefix):
                return line[len(prefix) :]
        raise ConfigError(f"table.md has no line starting {prefix!r}")

    figures = [i for i, line in enumerate(lines) if line.startswith("![")]
    if not figures:
        raise ConfigError("table.md embeds no figure: cannot find its sections")
    start = figures[-1] + 1
    start += lines[start] == ""  # the blank line that closes the last figure
    end = next(i for i in range(start, len(lines)) if lines[i].startswith(_SECTIONS_END))
    fence = lines.index("```yaml")
    closing = max(i for i, line in enumerate(lines) if line == "```")
    return {
        "title": line_after("# "),
        "replicates": line_after("- Seeds: ").split(". ", 1)[1],
        "protocol": "Protocol: " + line_after("- Protocol: "),
        "sections": lines[start:end],
        "config_yaml": "\n".join(lines[fence + 1 : closing]),
        "budget": next((line[2:] for line in lines if line.startswith("- Budget: ")), ""),
    }


def without_recomputed(sections: list[str]) -> list[str]:
    """The carried sections without those that are recomputed: the per-class one
    (``class_lines``) and the cost one (``cost_lines``), which run from the first of
    their headings to the time line."""
    starts = [sections.index(h) for h in (CLASS_HEADING, COST_HEADING) if h in sections]
    if not starts:
        return sections
    start = min(starts)
    end = next(i for i in range(start, len(sections)) if sections[i].startswith(TIME_PREFIX))
    return sections[:start] + sections[end:]


def table_costs(
    folder: Path, config: dict[str, Any], measure: bool, measured: dict | None = None
) -> list[dict[str, Any]]:
    """The table's cost cards: its ``cost.json``, or with ``measure`` (and none there)
    measured now on this machine from the table's config and written to ``cost.json``
    (a network measured for another table of this run is not measured again:
    ``measured``)."""
    cards = read_cards(folder)
    if cards or not measure:
        return cards
    if not config:
        raise ConfigError(f"{folder}/provenance.json has no config: cannot build its networks")
    full = with_defaults(config, compose_config())
    cards = table_cards(full, lambda line: print(f"{folder.name}: {line}"), measured)
    write_cards(folder, cards)
    return cards


def rerender(
    folder: Path, commit: str, written: str, measure: bool = False, measured: dict | None = None
) -> list[Path]:
    """Re-render one table folder in place (see the module docstring); return the files
    written. ``measure``: give a table without cost cards its cards (``table_costs``)."""
    table = read_table(folder)
    p = table.provenance
    axes = table.axes
    config = p.get("config") or {}
    stats = StatsSettings(**config["stats"]) if "stats" in config else StatsSettings()
    cards = table_costs(folder, config, measure, measured)
    summary = with_costs(
        summarize(table.trials, table.cases, axes, stats), table.trials, axes, cards
    )
    kept = carried(table.markdown)
    teachers = teachers_of(table.markdown)
    for meta in teachers:
        meta["cells"] = meta["cells"] or cells_of(table.trials, axes)
    figures = figures_for(summary, table.trials, table.axis_values, folder)
    if frontier(cards):
        figures.append(plot_frontier(summary, cards, teachers, folder))
    if table.histories and all("step" in h[0] for h in table.histories.values() if h):
        figures.append(plot_learning_curves(table.trials, table.histories, folder, axes))
    if (folder / EXAMPLES_NAME).is_file():
        figures.append(plot_examples(**read_examples(folder / EXAMPLES_NAME), folder=folder))
    elif (folder / EXAMPLES_PNG).is_file():
        figures.append(folder / EXAMPLES_PNG)  # predictions not stored: kept as committed
    classes = summarize_classes(table.trials, table.cases, axes, stats)
    if len(classes):
        figures.append(plot_classes(classes, folder, axes))
    for stale in set(folder.glob("*.png")) - set(figures):
        stale.unlink()
    rerendered = [*p.get("rerendered", []), rerender_line(commit, written)]
    markdown = render_report(
        kept["title"],
        summary,
        table.trials,
        table.cases,
        axes,
        teachers,
        p["dataset"],
        kept["replicates"],
        kept["protocol"],
        p["command"],
        kept["config_yaml"],
        p["commit"],
        p["written"],
        (p.get("config") or {}).get("reference_table"),
        [f.name for f in figures],
        [*class_lines(classes, axes), *cost_lines(cards), *without_recomputed(kept["sections"])],
        rerendered,
        budget=kept["budget"],
        stats=stats,
    )
    write_text_atomic(folder / "table.md", markdown)
    write_text_atomic(
        folder / "provenance.json", json.dumps({**p, "rerendered": rerendered}, indent=1)
    )
    return [folder / "table.md", folder / "provenance.json", *figures]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folders", nargs="*", help="table folders (default: all under results/)")
    parser.add_argument(
        "--cost",
        action="store_true",
        help="measure the cost cards of tables that have none, on this machine",
    )
    args = parser.parse_args(argv)
    commit, written = git_commit(), utc_now()
    folders = table_folders(args.folders)
    measured: dict = {}  # each network measured once for every table that uses it
    for folder in folders:
        files = rerender(folder, commit, written, args.cost, measured)
        print(f"re-rendered {folder}: {', '.join(f.name for f in files)}")
    for results_dir in sorted({f.parent.parent for f in folders}):
        write_index(results_dir)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
