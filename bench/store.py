"""Put the trials of committed tables into a trial store, so that grids reuse them.

    python bench/store.py results/students/*/                    # into .kdbench/ray/trials
    python bench/store.py results/scales/*/ work_dir=/data/kd      # the store of this config
    python bench/store.py results/scales/*/ ray.storage=s3://bucket/kd

Every table folder keeps its trials' store entries (``store.jsonl.gz``, keyed as
``kdcore.trial_store`` keys them). Once imported, a grid that needs one of these trials
reuses it instead of training it, and its table marks it reused, with the machine and
commit that trained it. So a clone can extend a committed table (more seeds, another
axis value) without training its trials again, and a grid too long for one sitting can
be run in parts on machines that do not share a disk. Entries the store already holds
are kept. Runs are deterministic on one machine, not across CPUs: a table whose trials
come from several machines lists each.

Arguments with ``=`` are Hydra overrides of ``bench/run.py`` (they name the store:
``work_dir`` or ``ray.storage``); the others are table folders. A folder written before
tables kept their entries is named and skipped; none with entries is an error (exit 2),
and so is a damaged one; a store that cannot be written (full disk, no permission) exits
with 74. Either is one line on stderr.
"""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from hydra.errors import HydraException  # noqa: E402

from kdcore.errors import BAD_INPUT, DISK_ERROR, storage_message  # noqa: E402
from kdcore.runtime import storage_root  # noqa: E402
from kdcore.settings import compose_config  # noqa: E402
from kdcore.table_folder import STORE_NAME  # noqa: E402
from kdcore.trial_store import FOLDER, TrialStore, import_entries, read_entries  # noqa: E402


def write_problem(err: OSError, root: str) -> str:
    """One line for a store that cannot be written. The object-store layer (pyarrow)
    often names no file, so the line names the store."""
    if err.filename is not None and (message := storage_message(err)):
        return message
    return (
        f"cannot write the trial store {root}/{FOLDER} ({err}): free space, fix its "
        "permissions or choose another work_dir/ray.storage"
    )


def main(args: list[str]) -> int:
    overrides = [a for a in args if "=" in a]
    folders = [Path(a) for a in args if "=" not in a]
    if not folders:
        print(__doc__.strip().splitlines()[0], file=sys.stderr)
        print("error: name at least one table folder (e.g. results/scales/*/)", file=sys.stderr)
        return BAD_INPUT
    try:
        root = storage_root(compose_config(overrides))
    except HydraException as e:  # Hydra's message may span lines: one line here
        print(f"error: {' '.join(str(e).split())}", file=sys.stderr)
        return BAD_INPUT
    store = TrialStore(root)
    read, added = 0, 0
    for folder in folders:
        path = folder / STORE_NAME
        if not path.is_file():
            print(f"{folder}: no {STORE_NAME} (written before tables kept their trials): skipped")
            continue
        try:
            entries = read_entries(path)
        except (OSError, EOFError, ValueError, KeyError) as e:
            print(f"error: {path} is damaged ({e}): restore it from git", file=sys.stderr)
            return BAD_INPUT
        try:
            new = import_entries(store, entries)
        except OSError as e:
            print(f"error: {write_problem(e, root)}", file=sys.stderr)
            return DISK_ERROR
        read, added = read + len(entries), added + new
        print(f"{folder}: {len(entries)} trials, {new} new to the store")
    if not read:
        print(f"error: none of the {len(folders)} folders holds {STORE_NAME}", file=sys.stderr)
        return BAD_INPUT
    print(f"{added} of {read} trials added to {root}/{FOLDER} (the others were there)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
