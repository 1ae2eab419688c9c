"""Exported students: TorchScript and ONNX files that give the logits of eager PyTorch on
real slices (within ``PARITY_ATOL``), with what a user needs to feed them."""

import json

import numpy as np
import pandas as pd
import pytest
import ray
import torch

import kdcore
from kdcore.export import (
    PARITY_ATOL,
    export_student,
    onnx_available,
    onnx_latency,
    pack_weights,
    unpack_weights,
)
from kdcore.models.unet import build_student
from tests.conftest import REPO, smoke_config

needs_onnx = pytest.mark.skipif(not onnx_available(), reason="pip install -e '.[export]'")


def config(tmp_path, *overrides: str):
    return smoke_config(tmp_path, *overrides)


def test_weights_travel_as_text_and_load_without_code():
    net = build_student(4)
    back = build_student(4)
    back.load_state_dict(unpack_weights(pack_weights(net)))
    for a, b in zip(net.state_dict().values(), back.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_torchscript_export_matches_eager_and_says_how_to_feed_it(tmp_path):
    torch.manual_seed(0)
    info = export_student(
        build_student(4), config(tmp_path), tmp_path / "s", torch.rand(4, 3, 32, 32)
    )
    assert info["parity_max_abs_logit_diff"]["torchscript"] <= PARITY_ATOL
    assert info["input"]["shape"] == ["batch", 3, 32, 32] and info["input"]["hu_window"] == [0, 255]
    assert info["output"]["decision"] == "sigmoid > 0.5"
    assert "RAS" in info["input"]["slices"]
    saved = json.loads((tmp_path / "s" / "student.json").read_text())
    assert saved["files"]["torchscript"] == "student.pt"


@needs_onnx
def test_onnx_runtime_gives_the_logits_of_eager_pytorch_at_any_batch(tmp_path):
    import onnxruntime as ort

    net = build_student(4).eval()
    export_student(net, config(tmp_path), tmp_path / "s")
    session = ort.InferenceSession(str(tmp_path / "s" / "student.onnx"))
    for batch in (1, 5):
        x = torch.rand(batch, 3, 32, 32)
        (logits,) = session.run(None, {"image": x.numpy()})
        with torch.no_grad():
            eager = net(x, with_recon=False)["logits"].numpy()
        assert logits.shape == (batch, 1, 32, 32)
        assert np.abs(logits - eager).max() <= PARITY_ATOL
    t = onnx_latency(tmp_path / "s" / "student.onnx", torch.rand(1, 3, 32, 32), 1, runs=3, warmup=1)
    assert t["median_ms"] > 0 and t["runs"] == 3


@pytest.fixture
def local_ray():
    yield
    ray.shutdown()


@needs_onnx
def test_a_job_with_export_writes_each_variants_first_seed_student(tmp_path, local_ray):
    cfg = config(tmp_path, "variants=[baseline,pmd]", "seeds=[1,0]", "export=true")
    table, trials_csv = kdcore.run_job(cfg, "export", [].append)
    folder = table.parent
    assert "weights" not in pd.read_csv(trials_csv).columns
    for variant in ("baseline", "pmd"):
        info = json.loads((folder / "students" / variant / "student.json").read_text())
        # on up to 16 real test slices of the phantom
        assert max(info["parity_max_abs_logit_diff"].values()) <= info["parity_bound"]
        assert set(info["parity_max_abs_logit_diff"]) == {"torchscript", "onnx"}
        assert (folder / "students" / variant / "student.onnx").stat().st_size > 1000
    text = table.read_text()
    assert "## Exported students" in text and "The student of seed 0 (the first seed)" in text
    # the stored trials keep the weights: the same table again trains nothing
    lines = []
    kdcore.run_job(cfg, "export again", lines.append)
    assert any("4 reused from the trial store" in line for line in lines)


@needs_onnx
def test_the_readmes_onnx_runtime_lines_segment_a_slice(tmp_path):
    text = (REPO / "README.md").read_text()
    start = text.index("```python\nimport json\n\nimport numpy as np\nimport onnxruntime")
    block = text[start + len("```python\n") : text.index("```", start + 10)]
    export_student(build_student(4), config(tmp_path), tmp_path / "s")
    code = block.replace('"results/scales/<table>/students/all"', repr(str(tmp_path / "s")))
    namespace = {}
    exec(compile(code, "README.md", "exec"), namespace)
    mask = namespace["segment"](np.random.uniform(-1000, 400, (48, 40)))
    assert mask.shape == (32, 32) and mask.dtype == bool
