import numpy as np
import pytest

from kdcore.data.splits import make_splits, nested_subset
from kdcore.errors import ConfigError

# 20 patients with 3..8 slices each
SLICE_CASE = np.repeat(np.arange(20), [3 + i % 6 for i in range(20)])


def test_no_patient_is_in_two_splits():
    s = make_splits(SLICE_CASE, "patient", seed=42)
    parts = [set(SLICE_CASE[s.train]), set(SLICE_CASE[s.val]), set(SLICE_CASE[s.test])]
    assert not (parts[0] & parts[1]) and not (parts[0] & parts[2]) and not (parts[1] & parts[2])
    assert set.union(*parts) == set(range(20))
    assert set(SLICE_CASE[s.student]) <= parts[0]


def test_split_is_deterministic_from_the_seed():
    a, b = make_splits(SLICE_CASE, seed=1), make_splits(SLICE_CASE, seed=1)
    c = make_splits(SLICE_CASE, seed=2)
    assert np.array_equal(a.test, b.test) and not np.array_equal(a.test, c.test)


def test_fractions_are_nested():
    units = np.arange(40)
    quarter, half, full = (nested_subset(units, f, seed=7) for f in (0.25, 0.5, 1.0))
    assert set(quarter) < set(half) < set(full) == set(units)
    assert len(quarter) == 10 and len(half) == 20
    a = make_splits(SLICE_CASE, seed=3, data_fraction=0.25).student
    b = make_splits(SLICE_CASE, seed=3, data_fraction=0.5).student
    assert set(a) < set(b)


def test_slice_split_is_the_leaky_one():
    s = make_splits(SLICE_CASE, "slice", seed=42, val_fraction=0.1)
    assert len(s.test) == round(0.2 * len(SLICE_CASE))
    assert set(SLICE_CASE[s.train]) & set(SLICE_CASE[s.test])  # patients shared


@pytest.mark.parametrize("fraction", [0, -0.1, 1.5])
def test_fraction_outside_unit_interval_is_rejected(fraction):
    with pytest.raises(ConfigError, match="data_fraction"):
        make_splits(SLICE_CASE, data_fraction=fraction)


def test_too_few_patients_is_a_clear_error():
    with pytest.raises(ConfigError, match="cannot be split"):
        make_splits(np.array([0, 0, 1, 1]))


def test_example_slices_show_each_patients_largest_organ():
    from kdcore.data.splits import example_slices

    case = np.array([0, 0, 0, 1, 1, 2, 2])
    masks = np.zeros((7, 4, 4), np.uint8)
    masks[1, :2] = 1  # patient 0: slice 1 has the most organ
    masks[4, :1] = 1  # patient 1: slice 4
    assert list(example_slices(case, masks, np.arange(7), count=2)) == [1, 4]
    assert list(example_slices(case, masks, np.array([5, 6]))) == [5]  # none: the first


NAMES = [f"p{i}" for i in range(20)]


@pytest.mark.parametrize("part", ["train", "student", "val", "test"])
def test_a_part_without_foreground_is_refused_naming_it(part):
    from kdcore.data.splits import check_foreground

    s = make_splits(SLICE_CASE, seed=4)
    has_fg = np.ones(len(SLICE_CASE), bool)
    check_foreground(has_fg, s, SLICE_CASE, NAMES)  # every part has foreground: fine
    has_fg[getattr(s, part)] = False  # train: its student subset too, but train is named
    with pytest.raises(ConfigError) as info:
        check_foreground(has_fg, s, SLICE_CASE, NAMES)
    message = str(info.value)
    name = "the student's training subset" if part == "student" else f"the {part} split"
    patients = ", ".join(NAMES[c] for c in np.unique(SLICE_CASE[getattr(s, part)])[:6])
    assert message.startswith(f"{name} (") and patients in message
    assert "has no foreground voxel" in message
    assert ("data_fraction" if part == "student" else "split_seed") in message
