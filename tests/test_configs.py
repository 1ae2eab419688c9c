"""Every shipped config composes and passes the gate; every key has a rule; bad values of
each kind are refused in-process (the CLI's handling of them: test_bad_inputs.py)."""

import pytest

from kdcore.axes import axis_cells, cell_config
from kdcore.errors import ConfigError
from kdcore.gate import check_config, check_ray_address, rule_for
from kdcore.models import build_student, build_teacher, count_parameters
from kdcore.names import table_dir
from kdcore.settings import compose_config, leaves

PROFILES = ["smoke", "quick", "paper"]
DATA = ["phantom", "msd_spleen"]
ABLATIONS = ["scales", "methods"]


def make(*overrides: str):
    return compose_config(list(overrides))


@pytest.mark.parametrize("profile", PROFILES)
@pytest.mark.parametrize("data", DATA)
def test_profiles_compose_and_pass_checks(profile, data):
    cfg = make(f"profile={profile}", f"data={data}", "ablation=scales")
    check_config(cfg, outside=False)
    assert len(cfg.variants) == 9 and list(cfg.seeds) == [0, 1] and cfg.vary_subset


def test_every_key_of_every_shipped_config_has_a_rule():
    keys = set()
    for profile in PROFILES:
        for data in DATA:
            for ablation in ABLATIONS:
                keys |= set(
                    leaves(make(f"profile={profile}", f"data={data}", f"ablation={ablation}"))
                )
    assert len(keys) > 50
    assert [k for k in sorted(keys) if rule_for(k) is None] == []


def test_methods_ablation_compares_mtms_with_every_peer():
    cfg = make("ablation=methods")
    check_config(cfg, outside=False)
    labels = [v.split(":")[0] for v in cfg.variants]
    assert labels == ["baseline", "mtms", "fitnets-mse", "hinton", "cwd", "at", "emkd"]


def test_paper_profile_uses_the_thesis_networks():
    cfg = make("profile=paper")
    assert cfg.image_size == 256 and cfg.budget.steps == 6000
    assert cfg.student.fit.batch_size == 20
    teacher = build_teacher(cfg.teacher.width, cfg.teacher.depth)
    assert count_parameters(teacher) == 43_236_036
    assert count_parameters(build_student(cfg.student.width)) == 57_297


@pytest.mark.parametrize(
    "override, message",
    [
        ("variants=[]", "variants must be a list of at least 1 items"),
        ("variants=[a:enc,a:dec]", "variants lists a value twice"),
        ("seeds=[0,0]", "seeds lists a value twice"),
        ("seeds=[-1]", "seeds must be a list of at least 1 items, each an integer >= 0"),
        ("data_fraction=half", "data_fraction must be a number in (0, 1]"),
        ("data_fraction=0", "data_fraction must be a number in (0, 1]"),
        ("split=random", "split must be one of patient, slice"),
        ("student.seg_loss=focal", "student.seg_loss must be one of dice, dicebce"),
        ("teacher.fit.optimizer=lion", "teacher.fit.optimizer must be one of adamw"),
        ("teacher.fit.betas=[0.9,1.5]", "teacher.fit.betas must be a list of 2 items"),
        ("+student.fit.epochs=16", "student.fit.epochs is not a setting any more: a student's"),
        ("budget.steps=0", "budget.steps must be null or an integer >= 1"),
        ("budget.epochs=120", "set exactly one of budget.steps (optimiser steps) and budget"),
        ("budget.steps=null", "set exactly one of budget.steps"),
        ("student.fit.batch_size=2.5", "student.fit.batch_size must be an integer >= 1"),
        ("student.fit.augment=maybe", "student.fit.augment must be true or false"),
        ("kd.cwd_temperature=-1", "kd.cwd_temperature must be a number > 0"),
        ("kd.weights.seg=-1", "kd.weights.seg must be a number >= 0"),
        ("+kd.weights.distill=1", "unknown KD term 'distill'"),
        ("teacher.depth=1", "teacher.depth must be an integer >= 2"),
        ("image_size=100", "divisible by 2**teacher.depth"),
        ("window=[200,100]", "window must be [low, high] with low < high"),
        ("val_fraction=0.8", "val_fraction + test_fraction must be below 1"),
        ("phantom.shape=[64,64]", "phantom.shape must be a list of 3 items"),
        ("ray.max_concurrent_trials=0", "ray.max_concurrent_trials must be null or an integer"),
        ("+surplus=1", "surplus is not a setting this suite knows"),
        ("data.background=[0,1]", "are in both data.foreground=[1] and data.background=[0, 1]"),
        ("device=cuda", "ray.gpus_per_trial=0 gives the trials no GPU"),
        ("axes={seeds:[[0],[1]]}", "axes: 'seeds' is not a setting a grid can vary"),
        ("axes={student.widht:[8]}", "axes: 'student.widht' is not a setting"),
        ("axes={data_fraction:[]}", "axes must be null, or a mapping of config keys to non-empty"),
        ("axes={data_fraction:[0.5,2]}", "every value of data_fraction must be a number in"),
        ("axes={kd.temperature:[0.1,0.1]}", "axes: kd.temperature lists a value twice"),
        ("axes={image_size:[64,100]}", "image_size 100 must be divisible by 2**teacher.depth"),
    ],
)
def test_bad_values_are_rejected(override, message):
    with pytest.raises(ConfigError) as err:
        check_config(make(override), outside=False)
    assert message in str(err.value)


def test_tables_of_other_settings_live_beside_the_default_table():
    default = table_dir(make("ablation=scales"))
    assert default.parent.name == "scales" and default.name.startswith("quick-phantom-T1w16d4-S1")
    others = [
        make("ablation=scales", override)
        for override in (
            "data_fraction=0.25",
            "profile=paper",
            "student.width=32",
            "split=slice",
            "kd.temperature=0.1",
            "seeds=[0,1,2]",
        )
    ]
    names = {table_dir(cfg) for cfg in others}
    assert len(names) == len(others) and default not in names
    # the same command, and settings that change only speed or place, keep the name
    assert table_dir(make("ablation=scales")) == default
    same = make("ablation=scales", "kd.compile=true", "work_dir=/elsewhere", "ray.cpus_per_trial=2")
    assert table_dir(same) == default


def test_ray_addresses_are_checked_for_an_answer(monkeypatch):
    import socket

    import ray._private.services as services

    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        check_ray_address(f"127.0.0.1:{port}")
        check_ray_address(f"ray://127.0.0.1:{port}")
    check_ray_address("local")
    with pytest.raises(ConfigError, match="is not host:port, ray://host:port, auto or local"):
        check_ray_address("head-node")
    monkeypatch.setattr(services, "canonicalize_bootstrap_address", lambda *_: None)
    with pytest.raises(ConfigError, match="ray.address=auto but no running Ray cluster"):
        check_ray_address("auto")


def test_axes_make_one_cell_per_combination():
    cfg = make("ablation=scales", "axes={data_fraction:[0.25,1.0],student.width:[8,16,32]}")
    cells = axis_cells(cfg)
    assert len(cells) == 6 and cells[0] == {"data_fraction": 0.25, "student.width": 8}
    assert cells[-1] == {"data_fraction": 1.0, "student.width": 32}
    cell = cell_config(cfg, cells[-1])
    assert cell.student.width == 32 and cell.data_fraction == 1.0 and cfg.student.width == 16
    assert axis_cells(make()) == [{}]
    name = table_dir(cfg).name
    assert name.startswith("quick-phantom-T1w16d4-S-axis-frac-axis-patient-")


@pytest.mark.parametrize("ablation", ["fractions", "students"])
def test_axis_ablations_compose_and_pass_checks(ablation):
    cfg = make(f"ablation={ablation}")
    check_config(cfg, outside=False)
    assert len(cfg.seeds) >= 5 and len(axis_cells(cfg)) >= 4


def test_thesis_protocol_departs_in_every_switch_and_says_so():
    from kdcore.names import protocol_label
    from kdcore.trial import fit_settings

    fair, thesis = make(), make("protocol=thesis")
    check_config(thesis, outside=False)
    assert thesis.split == "slice" and thesis.split_seed == 42
    assert (thesis.protocol.select, thesis.kd.heads, thesis.kd.pmd_mode) == (
        "test_loss",
        "random",
        "reference",
    )
    baseline, kd = fit_settings(thesis, kd=False), fit_settings(thesis, kd=True)
    assert (baseline.optimizer, baseline.lr, baseline.batch_size) == ("adamw", 1.5e-4, 16)
    assert (kd.optimizer, kd.lr, kd.batch_size) == ("rmsprop", 1e-2, 20)
    assert fit_settings(fair, kd=False) == fit_settings(fair, kd=True)
    label = protocol_label(thesis)
    for words in (
        "THESIS",
        "SLICE split",
        "adamw lr 0.00015 batch 16",
        "TEST set",
        "untrained",
        "always 0",
    ):
        assert words in label
    assert protocol_label(fair).startswith("Protocol: fair. Baseline and KD")
    assert "-slice-thesis-" in table_dir(thesis).name and "-patient-fair-" in table_dir(fair).name


def test_decomposition_fixes_one_departure_per_step():
    cfg = make("ablation=decomposition")
    check_config(cfg, outside=False)
    steps = [cell_config(cfg, c) for c in axis_cells(cfg)]
    # step 2b is a branch: step 2 with the baseline's optimiser for both arms
    branch = steps.pop(3)
    assert branch.split == "patient" and branch.protocol.baseline_fit is None
    assert (branch.student.fit.optimizer, branch.student.fit.lr) == ("adamw", 1.5e-4)
    assert steps[2].student.fit.optimizer == "rmsprop"
    switches = [
        (c.split, c.protocol.baseline_fit is None, c.protocol.select, c.kd.heads, c.kd.pmd_mode)
        for c in steps
    ]
    assert switches[0] == ("slice", False, "test_loss", "random", "reference")
    assert switches[-1] == ("patient", True, "val_dice", "trained", "kl")
    changed = [
        sum(a != b for a, b in zip(x, y, strict=True))
        for x, y in zip(switches[:-1], switches[1:], strict=True)
    ]
    assert changed == [1, 1, 1, 1, 1]


@pytest.mark.parametrize(
    "axes, message",
    [
        ("{step:[{split:patient}]}", "needs a label naming it"),
        ("{step:[{label:a,split:patient},{label:a,split:slice}]}", "uses a label twice"),
        ("{step:[{label:a,split:sideways}]}", "every value of split must be one of patient"),
        ("{step:[{label:a,seeds:[1]}]}", "'seeds' is not a setting a grid can vary"),
    ],
)
def test_bad_bundle_axes_are_refused(axes, message):
    with pytest.raises(ConfigError) as err:
        check_config(make(f"axes={axes}"), outside=False)
    assert message in str(err.value)


@pytest.mark.parametrize("ablation", ["thesis", "decomposition"])
def test_thesis_ablations_compose_with_five_seeds(ablation):
    cfg = make(f"ablation={ablation}")
    check_config(cfg, outside=False)
    assert len(cfg.seeds) >= 5


@pytest.mark.parametrize(
    ("override", "message"),
    [
        (f"variants=[baseline,{'x' * 300}:pmd]", "give it a shorter label"),
        (f"results_dir=/tmp/{'r' * 300}", "folder name of 300 bytes"),
        ("work_dir='/tmp/a\nb'", "newline"),
    ],
)
def test_names_the_file_system_refuses_are_refused_up_front(tmp_path, override, message):
    cfg = make("profile=smoke", f"results_dir={tmp_path / 'r'}", f"work_dir={tmp_path}", override)
    with pytest.raises(ConfigError, match=message):
        check_config(cfg)
    assert not (tmp_path / "r").exists()


def test_a_missing_gpu_is_reported_before_the_gpu_settings(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigError, match="no usable CUDA GPU"):
        check_config(make("profile=smoke", "device=cuda"))  # ray.gpus_per_trial is 0 too


def test_with_cuda_a_grid_without_gpus_for_its_trials_is_refused(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    with pytest.raises(ConfigError, match="ray.gpus_per_trial=0 gives the trials no GPU"):
        check_config(make("profile=smoke", "device=cuda"), outside=False)
