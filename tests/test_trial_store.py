"""The trial store's key holds what changes a trial's result and nothing else; entries
are written whole."""

import errno
import importlib.util

from kdcore.errors import BAD_INPUT, DISK_ERROR
from kdcore.settings import compose_config
from kdcore.trial_store import (
    TrialStore,
    import_entries,
    read_entries,
    trial_key,
    write_entries,
)
from tests.conftest import REPO


def cfg_of(*overrides: str):
    return compose_config(["profile=smoke", *overrides])


def test_the_key_ignores_labels_grid_and_place_but_not_what_a_trial_does():
    base = cfg_of()
    key = trial_key(base, "mtms:all", 0)
    assert key == trial_key(base, "all", 0)  # the label is the table's, not the trial's
    for same in (
        "seeds=[0,7]",
        "ablation_name=other",
        "work_dir=/elsewhere",
        "ray.storage=/x",
        "stats.alpha=0.01",
        "budget.convergence.window=0.5",
        "tracking.mlflow=true",
    ):
        assert trial_key(cfg_of(same), "mtms:all", 0) == key, same
    for other in (
        "student.fit.lr=0.01",
        "budget.steps=9",
        "data_fraction=1.0",
        "kd.weights.enc=0.5",
        "teacher.width=4",
        "phantom.dose=[0.2,0.3]",
    ):
        assert trial_key(cfg_of(other), "mtms:all", 0) != key, other
    assert trial_key(base, "mtms:all", 1) != key
    assert trial_key(base, "enc", 0) != key


def test_a_baseline_does_not_depend_on_the_teacher_or_the_kd_settings():
    key = trial_key(cfg_of(), "baseline", 0)
    for same in ("teacher.arch=t2", "teacher.width=4", "kd.weights.pmd=1.0", "kd.heads=random"):
        assert trial_key(cfg_of(same), "baseline", 0) == key, same
    assert trial_key(cfg_of("protocol=thesis"), "baseline", 0) != key


def test_entries_round_trip_and_a_damaged_one_counts_as_missing(tmp_path):
    store = TrialStore(str(tmp_path))
    assert store.get("abc") is None
    store.put("abc", {"dice": 0.5, "history": [{"step": 1}]})
    assert store.get("abc") == {"dice": 0.5, "history": [{"step": 1}]}
    assert [p.name for p in (tmp_path / "trials").iterdir()] == ["abc.json"]  # no leftovers
    (tmp_path / "trials" / "abc.json").write_text('{"dice": 0.')
    assert store.get("abc") is None


def test_a_tables_entries_round_trip_without_weights_and_import_keeps_what_is_there(tmp_path):
    entries = {"b": {"dice": 0.5, "weights": "big"}, "a": {"dice": 0.25}}
    write_entries(tmp_path / "store.jsonl.gz", entries)
    first = (tmp_path / "store.jsonl.gz").read_bytes()
    write_entries(tmp_path / "store.jsonl.gz", entries)
    assert (tmp_path / "store.jsonl.gz").read_bytes() == first  # no time in the file
    assert read_entries(tmp_path / "store.jsonl.gz") == {"a": {"dice": 0.25}, "b": {"dice": 0.5}}
    store = TrialStore(str(tmp_path / "ray"))
    store.put("a", {"dice": 0.75})
    assert import_entries(store, read_entries(tmp_path / "store.jsonl.gz")) == 1
    assert store.get("a") == {"dice": 0.75} and store.get("b") == {"dice": 0.5}


# ---- bench/store.py: one line and a status for each bad input -------------------------


def store_cli():
    spec = importlib.util.spec_from_file_location("bench_store", REPO / "bench" / "store.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def table_folder(path, entries):
    path.mkdir()
    write_entries(path / "store.jsonl.gz", entries)
    return str(path)


def one_error(capsys, starts: str) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith(starts), err
    return err


def test_the_store_command_refuses_bad_input_in_one_line(tmp_path, capsys):
    cli = store_cli()
    work = f"work_dir={tmp_path / 'w'}"
    assert cli.main([work]) == BAD_INPUT  # no folder named
    assert "name at least one table folder" in capsys.readouterr().err
    (tmp_path / "old").mkdir()  # a folder from before tables kept their trials
    assert cli.main([str(tmp_path / "old"), work]) == BAD_INPUT
    one_error(capsys, "error: none of the 1 folders holds store.jsonl.gz")
    damaged = tmp_path / "damaged"
    damaged.mkdir()
    (damaged / "store.jsonl.gz").write_bytes(b"not gzip")
    assert cli.main([str(damaged), work]) == BAD_INPUT
    one_error(capsys, f"error: {damaged / 'store.jsonl.gz'} is damaged")
    assert cli.main([table_folder(tmp_path / "t", {"a": {"dice": 0.5}}), "nokey=1"]) == BAD_INPUT
    one_error(capsys, "error: ")
    assert not (tmp_path / "w").exists()  # nothing was written


def test_a_store_that_cannot_be_written_is_one_line_naming_it(tmp_path, capsys, monkeypatch):
    cli = store_cli()
    folder = table_folder(tmp_path / "t", {"a": {"dice": 0.5}})

    def full(*_args, **_kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")  # pyarrow names no file

    monkeypatch.setattr(TrialStore, "put", full)
    assert cli.main([folder, f"work_dir={tmp_path / 'w'}"]) == DISK_ERROR
    err = one_error(capsys, f"error: cannot write the trial store {tmp_path / 'w' / 'ray'}/trials")
    assert err.endswith("free space, fix its permissions or choose another work_dir/ray.storage")
