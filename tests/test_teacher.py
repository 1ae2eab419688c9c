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
