import numpy as np
import torch

from kdcore.data.batches import to_tensors
from kdcore.data.msd import list_cases
from kdcore.data.slices import SliceSettings, load_slices
from kdcore.models import build_teacher
from kdcore.teacher import teacher_outputs
from kdcore.teacher_cache import TeacherOutputs


def test_cached_taps_match_the_live_teacher_in_float16(tiny_msd, tmp_path, monkeypatch):
    data = load_slices(list_cases(tiny_msd), SliceSettings((0, 255), 16), tmp_path / "c")
    torch.manual_seed(0)
    teacher = build_teacher(4, 2).eval().requires_grad_(False)
    outputs = teacher_outputs(teacher, data, tmp_path / "outputs")
    idx = np.array([1, 5, 17])
    cached = outputs(idx)
    with torch.no_grad():
        live = teacher(to_tensors(data, idx)[0], with_recon=False)
    assert set(cached) == {"enc", "bottleneck", "dec", "logits"}
    for name, tensor in cached.items():
        assert tensor.dtype == torch.float32 and tensor.shape == live[name].shape
        assert torch.allclose(tensor, live[name], rtol=1e-2, atol=1e-3)
    assert outputs.bytes_per_slice == 2 * sum(v[0].numel() for k, v in live.items())

    import kdcore.teacher as module

    def fail(*_):
        raise AssertionError("teacher ran again")

    monkeypatch.setattr(module, "write_teacher_outputs", fail)
    assert isinstance(teacher_outputs(teacher, data, tmp_path / "outputs"), TeacherOutputs)


# ---- damaged caches: rebuilt, saying so ---------------------------------------------


def smoke_teacher(tmp_path):
    from kdcore.data.prepare import prepare_data
    from kdcore.settings import absolute_paths, compose_config

    cfg = compose_config(["profile=smoke", "teacher.fit.epochs=1", f"work_dir={tmp_path / 'w'}"])
    cfg = absolute_paths(cfg)
    data, splits = prepare_data(cfg, lambda _: None)
    return cfg, data, splits


def test_a_damaged_teacher_is_trained_again_and_says_why(tmp_path):
    from kdcore.io import write_manifest
    from kdcore.models import build_student
    from kdcore.teacher import load_or_train_teacher

    cfg, data, splits = smoke_teacher(tmp_path)
    first = load_or_train_teacher(cfg, data, splits, lambda _: None)
    model = first.path
    reference = first.weights()
    # cut short, as by a full disk: the manifest's size no longer matches
    model.write_bytes(model.read_bytes()[:100])
    lines = []
    again = load_or_train_teacher(cfg, data, splits, lines.append)
    assert any("rebuilding" in line and "model.pt" in line for line in lines), lines
    assert all(torch.equal(v, reference[k]) for k, v in again.weights().items())
    # the wrong tensors, with a manifest that matches them: refused when loaded
    torch.save(build_student(4).state_dict(), model)
    write_manifest(model.parent)
    lines = []
    load_or_train_teacher(cfg, data, splits, lines.append)
    assert any("cannot be loaded" in line for line in lines), lines
    assert not any("reusing" in line for line in lines)


def test_a_truncated_output_cache_is_rebuilt_and_says_why(tmp_path):
    from kdcore.teacher import load_or_train_teacher, outputs_dir, prepare_teacher_outputs

    cfg, data, splits = smoke_teacher(tmp_path)
    teacher = load_or_train_teacher(cfg, data, splits, lambda _: None)
    weights = teacher.weights()
    prepare_teacher_outputs(cfg, data, splits, weights, lambda _: None)
    dec = outputs_dir(cfg, data, splits) / "dec.npy"
    whole = np.load(dec)
    dec.write_bytes(dec.read_bytes()[: dec.stat().st_size // 2])
    lines = []
    outputs = prepare_teacher_outputs(cfg, data, splits, weights, lines.append)
    assert any("damaged" in line and "dec.npy" in line for line in lines), lines
    assert np.array_equal(np.asarray(outputs.arrays["dec"]), whole)


def test_a_full_disk_while_saving_a_teacher_names_the_file():
    import errno
    from pathlib import Path

    import pytest

    from kdcore.teacher import save_weights

    if not Path("/dev/full").exists():
        pytest.skip("no /dev/full on this system")
    with pytest.raises(OSError) as err:
        save_weights({"w": torch.zeros(1000)}, Path("/dev/full"))
    assert err.value.errno == errno.ENOSPC and err.value.filename == "/dev/full"
