"""The trial store's key holds what changes a trial's result and nothing else; entries
are written whole."""

from kdcore.settings import compose_config
from kdcore.trial_store import (
    TrialStore,
    import_entries,
    read_entries,
    trial_key,
    write_entries,
)


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
