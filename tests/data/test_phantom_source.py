"""The phantom's data folder and Ray run: one per resolved appearance."""

import dataclasses

from kdcore.data import sources
from kdcore.data.phantom import appearance
from tests.test_configs import make


def test_a_changed_preset_gets_a_data_folder_of_its_own(tmp_path, monkeypatch):
    cfg = make("profile=smoke", f"work_dir={tmp_path}", "phantom.num_patients=3")
    messages = []
    first = sources.data_source(cfg).root(cfg, messages.append)
    again = sources.data_source(cfg).root(cfg, messages.append)
    assert first == again and len(messages) == 1  # generated once, then reused
    # The same keys (all null) with other preset values must not reuse the old data.
    changed = dataclasses.replace(appearance.PRESETS["standard"], noise_hu=30.0)
    monkeypatch.setitem(appearance.PRESETS, "standard", changed)
    other = sources.data_source(cfg).root(cfg, messages.append)
    assert other != first and len(messages) == 2
    assert (other / "scans.json").is_file() and (other / "dataset.json").is_file()


def test_a_changed_preset_makes_a_new_ray_run_not_a_resumed_one(monkeypatch):
    from kdcore.grid import _run_name

    cfg = make("profile=smoke", "ablation=phantom")
    before = _run_name(cfg, "")
    assert _run_name(cfg, "") == before  # the same command resumes its own run
    changed = dataclasses.replace(appearance.PRESETS["hard"], noise_hu=30.0)
    monkeypatch.setitem(appearance.PRESETS, "hard", changed)  # hard: a cell, not the base
    assert _run_name(cfg, "") != before
