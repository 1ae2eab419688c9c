"""Cost cards: FLOPs by the stated convention, latency spread, memory, the networks a
table uses, and the cost section, columns and frontier figure of a job's table."""

import json

import pytest
import ray
import torch
from torch import nn

import kdcore
from kdcore.cost import ModelSpec, cost_card, count_flops, spread, table_models
from kdcore.report import cost_table, with_costs
from kdcore.settings import compose_config
from tests.conftest import REPO


def config(*overrides: str):
    return compose_config(["profile=smoke", *overrides])


def test_flops_count_two_per_multiply_add_of_a_convolution():
    conv = nn.Conv2d(3, 8, 3, padding=1, bias=False)
    # every output value is 3 * 3 * 3 multiply-adds
    assert count_flops(conv, torch.rand(1, 3, 10, 10)) == 2 * 8 * 10 * 10 * 27
    linear = nn.Linear(5, 7)
    assert count_flops(linear, torch.rand(4, 5)) == 2 * 4 * 5 * 7


def test_spread_is_the_median_and_quartiles_in_milliseconds():
    s = spread([0.001, 0.002, 0.003, 0.004, 0.005])
    assert s == pytest.approx({"median_ms": 3.0, "q1_ms": 2.0, "q3_ms": 4.0, "runs": 5})


def test_the_thesis_table_uses_both_teachers_and_both_students():
    models = table_models(config("ablation=thesis"))
    names = {(spec.role, spec.name) for spec, _ in models}
    assert {r for r, _ in names} == {"teacher", "student"}
    assert {n for r, n in names if r == "student"} == {"S1", "S2"}
    assert len({n for r, n in names if r == "teacher"}) == 2
    baseline_only = table_models(config("variants=[baseline]"))
    assert [spec.role for spec, _ in baseline_only] == ["student"]


def test_a_card_holds_parameters_flops_latency_and_memory():
    spec = next(s for s, _ in table_models(config()) if s.role == "student")
    card = cost_card(spec, runs=3, warmup=1)
    assert card["params"] == sum(p.numel() for p in spec.build().parameters())
    assert card["flops"] == 2 * card["macs"] > 0
    assert set(card["cpu"]) >= {"b1-t1", f"b{spec.batch_size}-t1"}
    for t in card["cpu"].values():
        assert 0 < t["q1_ms"] <= t["median_ms"] <= t["q3_ms"] and t["runs"] == 3
    # a batch of 16 images needs more activation memory than one
    assert card["cpu_peak_mib"][f"b{spec.batch_size}"] > card["cpu_peak_mib"]["b1"] >= 0
    assert "S1" in cost_table([card]) and "CPU ms, batch 1, 1 thread" in cost_table([card])


def test_cost_columns_follow_each_rows_student():
    import pandas as pd

    summary = pd.DataFrame({"student.width": [16, 32], "variant": ["baseline"] * 2})
    trials = summary.assign(student=["S1", "S2"])
    cards = [
        {
            "role": "student",
            "model": name,
            "flops": w * 1e9,
            "cpu": {"b1-t1": {"median_ms": w}},
            "cells": [{"student.width": w}],
        }
        for name, w in (("S1", 16), ("S2", 32))
    ]
    out = with_costs(summary, trials, ["student.width"], cards)
    assert list(out["student_mflops"]) == [16000, 32000]
    assert list(out["student_cpu_ms"]) == [16, 32]
    # a table whose cells are labelled otherwise than its cards': matched by name alone
    for c in cards:
        c["cells"] = []
    assert list(with_costs(summary, trials, ["student.width"], cards)["student_cpu_ms"]) == [16, 32]
    assert with_costs(summary, trials, ["student.width"], []) is summary


@pytest.fixture
def local_ray():
    yield
    ray.shutdown()


def test_a_students_table_has_cost_cards_columns_and_a_frontier(tmp_path, local_ray):
    cfg = config(
        "variants=[baseline,pmd]",
        "seeds=[0]",
        "+axes={student.width:[4,8]}",
        "cost.enabled=true",
        "cost.runs=3",
        "cost.warmup=1",
        f"results_dir={tmp_path / 'results'}",
        f"work_dir={tmp_path / 'work'}",
    )
    table, _ = kdcore.run_job(cfg, "cost", [].append)
    folder = table.parent
    cards = json.loads((folder / "cost.json").read_text())
    assert [(c["role"], c["model"]) for c in cards] == [
        ("teacher", "T1(w8,d3)"),
        ("student", "S(w4)"),
        ("student", "S(w8)"),
    ]
    text = table.read_text()
    assert "## What each network costs to run" in text and "torch.utils.flop_counter" in text
    header = next(line for line in text.splitlines() if line.startswith("|   student.width"))
    assert [c.strip() for c in header.split("|")][-4:-1] == [
        "student MFLOPs",
        "student CPU ms",
        "wall_s",
    ]
    assert (folder / "dice_vs_latency.png").stat().st_size > 1000
    assert "](dice_vs_latency.png)" in text


def test_a_spec_is_keyed_by_network_and_input():
    a = ModelSpec("student", "S1", 3, 1, 64, 16, {})
    assert a.key == "student S1 3x64x64 -> 1"


def test_bench_cost_writes_cards_and_export_timings(tmp_path):
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_cost", REPO / "bench" / "cost.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    args = ["profile=smoke", "variants=[baseline]", "--runs", "3", "--warmup", "1"]
    assert bench.main([*args, "--out", str(tmp_path)]) == 0
    report = json.loads((tmp_path / "cost.json").read_text())
    assert [c["model"] for c in report["cards"]] == ["S1"] and report["machine"]
    (export,) = report["exports"]
    assert export["eager b1-t1"] > 0 and export["torchscript b1-t1"] > 0
    text = (tmp_path / "cost.md").read_text()
    assert text.startswith("# What each network costs to run") and "## Exported students" in text
    with pytest.raises(kdcore.errors.ConfigError, match="--runs must be at least 3"):
        bench.main(["--runs", "2", "--out", str(tmp_path)])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_a_card_on_a_cuda_machine_times_the_gpu_with_events():
    spec = next(s for s, _ in table_models(config()) if s.role == "student")
    card = cost_card(spec, runs=3, warmup=1)
    assert set(card["cuda"]) == {"b1", f"b{spec.batch_size}"}
    for t in card["cuda"].values():
        assert t["median_ms"] > 0 and t["peak_mib"] > 0
    assert "GPU ms, batch 1" in cost_table([card])
