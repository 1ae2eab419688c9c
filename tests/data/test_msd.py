import json

import numpy as np
import pytest

from kdcore.data.msd import list_cases, locate_msd_spleen
from kdcore.data.slices import SliceSettings, load_slices
from kdcore.errors import ConfigError
from tests.conftest import write_msd_folder


def test_loader_turns_volumes_into_windowed_resized_slices(tiny_msd, tmp_path):
    cases = list_cases(tiny_msd)
    assert [c.name for c in cases] == [f"case_{i}" for i in range(5)]
    data = load_slices(cases, SliceSettings((0, 255), 32), tmp_path / "cache")
    assert data.images.shape == (20, 32, 32) and data.masks.shape == (20, 32, 32)
    assert data.images.dtype == np.float16 and 0 <= data.images.min() <= data.images.max() <= 1
    assert set(np.unique(data.masks)) == {0, 1}  # nearest resize keeps labels binary
    assert list(data.case[:5]) == [0, 0, 0, 0, 1] and list(data.z[:5]) == [0, 1, 2, 3, 0]
    # the box sits in slices 1-2 of each volume, scaled by 2 in-plane
    assert data.masks[0].sum() == 0 and data.masks[1].sum() == 8 * 8


def test_slices_are_cached_and_keyed_by_settings(tiny_msd, tmp_path, monkeypatch):
    cases = list_cases(tiny_msd)
    first = load_slices(cases, SliceSettings((0, 255), 32), tmp_path / "cache")
    import kdcore.data.slices as slices

    def fail(*_):
        raise AssertionError("preprocessed again")

    monkeypatch.setattr(slices, "preprocess_volume", fail)
    again = load_slices(cases, SliceSettings((0, 255), 32), tmp_path / "cache")
    assert again.key == first.key and np.array_equal(again.images, first.images)
    with pytest.raises(AssertionError, match="preprocessed again"):
        load_slices(cases, SliceSettings((-57, 164), 32), tmp_path / "cache")


def test_label_shape_mismatch_is_a_clear_error(tmp_path):
    root = write_msd_folder(tmp_path / "bad", [(16, 16, 4)] * 2, [(16, 16, 4), (16, 16, 5)])
    with pytest.raises(ConfigError, match="label .*case_1.* has shape"):
        load_slices(list_cases(root), SliceSettings(), tmp_path / "cache")


def test_missing_and_empty_datasets_are_clear_errors(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        list_cases(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="no dataset.json"):
        list_cases(tmp_path / "empty")
    (tmp_path / "empty" / "dataset.json").write_text(json.dumps({"training": []}))
    with pytest.raises(ConfigError, match="empty"):
        list_cases(tmp_path / "empty")


def test_msd_spleen_is_found_under_root_or_explained(tiny_msd, tmp_path):
    assert locate_msd_spleen(tiny_msd) == tiny_msd
    nested = tmp_path / "msd" / "Task09_Spleen"
    write_msd_folder(nested, [(8, 8, 2)])
    assert locate_msd_spleen(tmp_path / "msd") == nested
    with pytest.raises(ConfigError, match="data.download=true"):
        locate_msd_spleen(tmp_path / "nothing")
