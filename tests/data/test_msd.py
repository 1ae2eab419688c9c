import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from kdcore.data.msd import list_cases, locate_msd_task
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
    assert locate_msd_task(tiny_msd) == tiny_msd
    nested = tmp_path / "msd" / "Task09_Spleen"
    write_msd_folder(nested, [(8, 8, 2)])
    assert locate_msd_task(tmp_path / "msd") == nested
    with pytest.raises(ConfigError, match="data.download=true"):
        locate_msd_task(tmp_path / "nothing")


def _listing(root):
    return json.loads((root / "dataset.json").read_text())


def test_a_case_listed_twice_is_refused_naming_both_entries(tiny_msd):
    manifest = _listing(tiny_msd)
    manifest["training"].append(dict(manifest["training"][2]))  # the same files again
    (tiny_msd / "dataset.json").write_text(json.dumps(manifest))
    with pytest.raises(ConfigError) as info:
        list_cases(tiny_msd)
    message = str(info.value)
    assert "the same image twice" in message and "the same file" in message
    assert "training[2] (./imagesTr/case_2.nii.gz)" in message and "training[5]" in message
    assert "remove the duplicate entry" in message


def test_a_copied_image_is_refused_by_its_bytes(tiny_msd):
    shutil.copy(tiny_msd / "imagesTr" / "case_1.nii.gz", tiny_msd / "imagesTr" / "copy.nii.gz")
    shutil.copy(tiny_msd / "labelsTr" / "case_1.nii.gz", tiny_msd / "labelsTr" / "copy.nii.gz")
    manifest = _listing(tiny_msd)
    manifest["training"].append(
        {"image": "./imagesTr/copy.nii.gz", "label": "./labelsTr/copy.nii.gz"}
    )
    (tiny_msd / "dataset.json").write_text(json.dumps(manifest))
    with pytest.raises(ConfigError, match=r"training\[1\] .* and training\[5\] .*same bytes"):
        list_cases(tiny_msd)


def test_two_images_sharing_one_label_file_are_refused(tiny_msd):
    manifest = _listing(tiny_msd)
    manifest["training"][4]["label"] = "./labelsTr/case_0.nii.gz"
    (tiny_msd / "dataset.json").write_text(json.dumps(manifest))
    with pytest.raises(ConfigError, match=r"same label twice: training\[0\] .* training\[4\]"):
        list_cases(tiny_msd)


def test_identical_masks_of_different_images_are_accepted(tiny_msd):
    # the tiny cases all have the same box label: two patients may share a mask
    labels = [c.label.read_bytes() for c in list_cases(tiny_msd)]
    assert len(set(labels)) == 1 and len(list_cases(tiny_msd)) == 5


@pytest.mark.parametrize("entry", [["a", "b"], {"image": "./imagesTr/case_0.nii.gz"}])
def test_malformed_entries_are_a_clear_error(tiny_msd, entry):
    manifest = _listing(tiny_msd)
    manifest["training"][1] = entry
    (tiny_msd / "dataset.json").write_text(json.dumps(manifest))
    with pytest.raises(ConfigError, match=r"training\[1\] must be"):
        list_cases(tiny_msd)


@pytest.mark.parametrize("existed", [False, True])
def test_failed_download_cleans_up_and_says_how_to_place_the_data(tmp_path, monkeypatch, existed):
    import monai.apps

    root = tmp_path / "data" / "msd"
    if existed:
        root.mkdir(parents=True)
        (root / "notes.txt").write_text("mine")

    def offline(url, filepath, output_dir, **_):
        Path(filepath).write_bytes(b"partial")  # what an interrupted transfer leaves
        (Path(output_dir) / "Task09_Spleen").mkdir()
        raise RuntimeError(f"Download of file from {url} failed due to network issue.\nmore")

    monkeypatch.setattr(monai.apps, "download_and_extract", offline)
    with pytest.raises(ConfigError) as info:
        locate_msd_task(root, download=True)
    message = str(info.value)
    assert message.startswith("downloading MSD Task09_Spleen from https://")
    assert "failed due to network issue." in message and "more" not in message
    assert f"extract it under {root}" in message and "run the same command again" in message
    if existed:
        assert [p.name for p in root.iterdir()] == ["notes.txt"]
    else:
        assert not (tmp_path / "data").exists()


def test_download_without_dataset_json_is_a_failure(tmp_path, monkeypatch):
    import monai.apps

    monkeypatch.setattr(monai.apps, "download_and_extract", lambda **_: None)
    with pytest.raises(ConfigError, match="the archive has no Task09_Spleen/dataset.json"):
        locate_msd_task(tmp_path / "msd", download=True)
    assert not (tmp_path / "msd").exists()
