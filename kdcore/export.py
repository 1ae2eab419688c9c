"""A trained student taken out of the suite: TorchScript and ONNX files, what a user needs
to feed them, ONNX Runtime latency, and parity with eager PyTorch.

Needs the ``export`` extra (``pip install -e ".[export]"``: onnx, onnxscript and
onnxruntime) for ONNX; TorchScript needs torch only.
"""

from __future__ import annotations

import base64
import contextlib
import io
import json
import logging
import re
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig
from torch import Tensor, nn

from kdcore.axes import axis_cells, cell_config, cell_labels, grid_axes
from kdcore.cost import Logits, time_calls
from kdcore.data.batches import to_tensors
from kdcore.data.prepare import classes_of, modalities_of, prepare_data
from kdcore.io import write_text_atomic
from kdcore.models.teachers import network_channels, student_name
from kdcore.models.unet import build_student

# Largest |logit difference| allowed between eager PyTorch and an exported model on the
# same float32 input: the graphs compute the same convolutions in another order.
PARITY_ATOL = 1e-4
INPUT, OUTPUT = "image", "logits"


def pack_weights(model: torch.nn.Module) -> str:
    """A network's state dict as text (base64 of ``torch.save``) that travels in a
    trial's result."""
    buffer = io.BytesIO()
    torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, buffer)
    return base64.b64encode(buffer.getvalue()).decode()


def unpack_weights(text: str) -> dict[str, torch.Tensor]:
    """The state dict of ``pack_weights`` (loaded with ``weights_only=True``)."""
    return torch.load(io.BytesIO(base64.b64decode(text)), weights_only=True)


def onnx_available() -> bool:
    """Whether the ONNX export and runtime packages are installed."""
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError:
        return False
    return True


def _need_onnx() -> None:
    if not onnx_available():
        raise ImportError(
            "ONNX export needs onnx, onnxscript and onnxruntime: pip install -e '.[export]'"
        )


def export_torchscript(model: Logits, example: Tensor, path: Path) -> Path:
    """``model`` traced to TorchScript at ``path`` (any batch size; the image size of
    ``example``)."""
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # (torch 2.13 deprecates jit)
        traced = torch.jit.trace(model.eval(), example)
    traced.save(str(path))
    return path


def load_torchscript(path: Path) -> torch.jit.ScriptModule:
    """A TorchScript file written by ``export_torchscript``."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # (torch 2.13 deprecates jit)
        return torch.jit.load(str(path))


def export_onnx(model: Logits, example: Tensor, path: Path) -> Path:
    """``model`` as ONNX at ``path`` (torch.export-based exporter; batch size dynamic,
    input ``image``, output ``logits``)."""
    _need_onnx()
    batch = torch.export.Dim("batch", min=1, max=1024)
    quiet = logging.getLogger("torch.onnx")
    level = quiet.level
    quiet.setLevel(logging.ERROR)  # (it warns of torchvision ops it cannot register)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            program = torch.onnx.export(
                model.eval(),
                (example,),
                input_names=[INPUT],
                output_names=[OUTPUT],
                dynamic_shapes={"x": {0: batch}},
                dynamo=True,
                verbose=False,
            )
    finally:
        quiet.setLevel(level)
    program.save(str(path))
    return path


def onnx_session(path: Path, threads: int):
    """An ONNX Runtime CPU session of ``path`` with ``threads`` intra-op threads."""
    _need_onnx()
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def onnx_latency(
    path: Path, x: Tensor, threads: int, runs: int = 20, warmup: int = 5
) -> dict[str, float]:
    """ONNX Runtime CPU latency of the model at ``path`` on ``x``."""
    session = onnx_session(path, threads)
    feed = {INPUT: x.numpy()}
    return time_calls(lambda: session.run(None, feed), runs, warmup)


def parity(model: Logits, files: dict[str, Path], x: Tensor) -> dict[str, float]:
    """Largest absolute difference of logits between eager ``model`` and each exported
    file (``torchscript``, ``onnx``) on the images ``x``."""
    with torch.inference_mode():
        eager = model.eval()(x).numpy()
    out = {}
    if "torchscript" in files:
        traced = load_torchscript(files["torchscript"])
        with torch.inference_mode():
            out["torchscript"] = float(np.abs(traced(x).numpy() - eager).max())
    if "onnx" in files:
        got = onnx_session(files["onnx"], 1).run(None, {INPUT: x.numpy()})[0]
        out["onnx"] = float(np.abs(got - eager).max())
    return out


def run_info(cfg: DictConfig) -> dict[str, Any]:
    """What a user needs to feed an exported student of ``cfg`` and read its output."""
    in_channels, out_channels = network_channels(cfg)
    classes = classes_of(cfg)
    modalities = list(modalities_of(cfg)) or ["CT"]
    size = int(cfg.image_size)
    return {
        "model": student_name(cfg),
        "input": {
            "name": INPUT,
            "shape": ["batch", in_channels, size, size],
            "dtype": "float32",
            "slices": "axial slices of the volume reoriented to RAS: dim 2 is x (towards "
            "the patient's right), dim 3 is y (towards anterior)",
            "channels": (
                "the one grey slice repeated 3 times"
                if len(modalities) == 1
                else f"one per modality: {modalities}"
            ),
            "modalities": modalities,
            "hu_window": [float(v) for v in cfg.window],
            "scaling": "CT: HU clipped to hu_window and scaled to [0, 1]; any other "
            "modality: its volume's 0.5th-99.5th percentiles scaled to [0, 1]",
            "pixel_mm": cfg.data.pixel_mm,
            "resize": (
                f"bilinear to {size}x{size}"
                if cfg.data.pixel_mm is None
                else f"bilinear to pixel_mm, then centre-cropped or zero-padded to {size}x{size}"
            ),
        },
        "output": {
            "name": OUTPUT,
            "shape": ["batch", out_channels, size, size],
            "decision": "sigmoid > 0.5" if out_channels == 1 else "argmax over channels",
            "classes": (
                {"0": "background", "1": classes.names[0]}
                if out_channels == 1
                else {str(i): n for i, n in enumerate(["background", *classes.names])}
            ),
            "label_values": {
                n: list(v) for n, v in zip(classes.names, classes.values, strict=True)
            },
        },
    }


def export_student(
    network: nn.Module, cfg: DictConfig, folder: Path, check: Tensor | None = None
) -> dict[str, Any]:
    """Write ``network`` (a trained student of ``cfg``) into ``folder``: ``student.pt``
    (TorchScript), ``student.onnx`` when the ONNX packages are there, and
    ``student.json`` (``run_info`` and, with ``check`` images, the parity of each file
    with eager PyTorch). Returns what ``student.json`` holds."""
    folder.mkdir(parents=True, exist_ok=True)
    model = Logits(network).eval()
    size = int(cfg.image_size)
    example = torch.rand(2, network_channels(cfg)[0], size, size)
    files = {"torchscript": export_torchscript(model, example, folder / "student.pt")}
    if onnx_available():
        files["onnx"] = export_onnx(model, example, folder / "student.onnx")
    info = {**run_info(cfg), "files": {k: p.name for k, p in files.items()}}
    if check is not None:
        info["parity_max_abs_logit_diff"] = parity(model, files, check)
        info["parity_bound"] = PARITY_ATOL
    write_text_atomic(folder / "student.json", json.dumps(info, indent=2) + "\n")
    return info


def export_name(cell: dict[str, Any], variant: str) -> str:
    """The folder name of a cell's exported student, e.g. 'student.width=16-mtms'."""
    parts = [*(f"{k}={v}" for k, v in cell.items()), variant]
    return re.sub(r"[^A-Za-z0-9.=+_-]+", "_", "-".join(parts))


def export_table_students(
    cfg: DictConfig, rows: list[dict[str, Any]], folder: Path
) -> list[dict[str, Any]]:
    """Export each row's student that carries its weights (``pack_weights``: the first
    seed's, with ``export`` on) into ``folder/<export_name>/``, checked against eager
    PyTorch on up to 16 of its cell's test slices; return what each wrote."""
    cells = {json.dumps(cell_labels(c), sort_keys=True, default=str): c for c in axis_cells(cfg)}
    axes = list(grid_axes(cfg))
    checks: dict[str, Tensor] = {}  # each cell's test slices, read once for its variants
    exported = []
    for r in rows:
        if "weights" not in r:
            continue
        labels = {k: r[k] for k in axes}
        key = json.dumps(labels, sort_keys=True, default=str)
        cell_cfg = cell_config(cfg, cells[key])
        if key not in checks:
            data, splits = prepare_data(cell_cfg, lambda _: None)
            checks[key] = to_tensors(data, splits.test[:16])[0]
        network = build_student(cell_cfg.student.width, *network_channels(cell_cfg))
        network.load_state_dict(unpack_weights(r["weights"]))
        name = export_name(labels, r["variant"])
        info = export_student(network, cell_cfg, folder / name, checks[key])
        exported.append({"folder": name, "seed": int(r["seed"]), **info})
    return exported
