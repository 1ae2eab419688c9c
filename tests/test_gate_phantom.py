"""The gate on the phantom's settings (phantom.difficulty and the appearance knobs):
bad values are refused with one clear line in-process and on the command line; good
overrides pass."""

import pytest
from omegaconf import OmegaConf

from kdcore.data.phantom.appearance import KNOBS, PRESETS, resolve_appearance
from kdcore.errors import ConfigError
from kdcore.gate import check_config
from kdcore.settings import compose_config
from tests.conftest import run_cli

BAD = {
    "unknown difficulty": (
        ["phantom.difficulty=medium"],
        "phantom.difficulty must be one of easy, standard, hard, got 'medium'",
    ),
    "phases not summing to 1": (
        ["phantom.phases=[0.5,0.5,0.5,0]"],
        "phantom.phases must be null or a list of 4 probabilities in [0, 1] that sum to 1",
    ),
    "dose range reversed": (
        ["phantom.dose=[2,1]"],
        "phantom.dose must be null or [low, high] with 0 < low <= high, got [2, 1]",
    ),
    "probability above 1": (
        ["phantom.fatty_liver=1.5"],
        "phantom.fatty_liver must be null or a number in [0, 1], got 1.5",
    ),
    "knob with easy": (
        ["phantom.difficulty=easy", "phantom.noise_hu=20"],
        "phantom.noise_hu is set, but phantom.difficulty=easy is the fixed phantom of the "
        "earlier tables and has no appearance settings",
    ),
}


def make(*overrides: str):
    return compose_config(["profile=smoke", *overrides])


@pytest.mark.parametrize("overrides, message", BAD.values(), ids=BAD.keys())
def test_the_gate_refuses_bad_phantom_settings(overrides, message):
    with pytest.raises(ConfigError) as caught:
        check_config(make(*overrides), outside=False)
    assert message in str(caught.value)
    assert len(str(caught.value).splitlines()) == 1


@pytest.mark.parametrize(
    "overrides",
    [
        ["phantom.difficulty=standard", "phantom.noise_hu=20", "phantom.dose=[0.5,0.5]"],
        ["phantom.difficulty=hard", "phantom.phases=[1,0,0,0]"],
        ["phantom.difficulty=easy"],
    ],
)
def test_the_gate_accepts_a_difficulty_with_its_overrides(overrides):
    cfg = make(*overrides)
    check_config(cfg, outside=False)
    phantom = OmegaConf.to_container(cfg.phantom)
    knobs = {k: phantom[k] for k in KNOBS}
    appearance = resolve_appearance(cfg.phantom.difficulty, knobs)
    if cfg.phantom.difficulty == "standard":
        assert appearance.noise_hu == 20 and appearance.dose == (0.5, 0.5)
        assert appearance.blur_mm == PRESETS["standard"].blur_mm  # null: the preset's
    elif cfg.phantom.difficulty == "hard":
        assert appearance.phases == (1, 0, 0, 0)
    else:
        assert appearance is None


def test_the_command_line_refuses_a_bad_difficulty_with_one_line(tmp_path):
    overrides, message = BAD["unknown difficulty"]
    proc = run_cli(
        *overrides,
        "profile=smoke",
        f"results_dir={tmp_path / 'results'}",
        f"work_dir={tmp_path / 'w'}",
        timeout=300,
    )
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr + proc.stdout
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and message in errors[0], proc.stderr[-2000:]
    assert not (tmp_path / "results").exists() or not any((tmp_path / "results").iterdir())
