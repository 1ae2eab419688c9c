"""Labels as data: classes, their label values, and the class map of a label volume."""

import pytest
import torch

from kdcore.data.classes import (
    LabelClasses,
    label_classes,
    manifest_classes,
    predicted_classes,
)
from kdcore.errors import ConfigError

ORGANS = LabelClasses(("liver", "kidneys"), ((5,), (2, 3)), (0, 4))


def test_class_map_gives_each_value_its_class_and_merges():
    label = torch.tensor([[0, 5, 2], [3, 4, 5]])
    assert ORGANS.class_map(label).tolist() == [[0, 1, 2], [2, 0, 1]]
    assert ORGANS.out_channels == 3 and not ORGANS.binary


def test_one_class_is_the_binary_task_with_one_logit():
    spleen = LabelClasses(("spleen",), ((1,),))
    assert spleen.binary and spleen.out_channels == 1
    assert spleen.class_map(torch.tensor([0, 1, 0])).tolist() == [0, 1, 0]


def test_a_value_of_no_class_is_named_with_the_file():
    with pytest.raises(ConfigError, match=r"label a.nii has values \{7\} that belong to no class"):
        ORGANS.class_map(torch.tensor([0, 7, 5]), "a.nii")


@pytest.mark.parametrize(
    ("names", "values", "background", "message"),
    [
        (("a", "b"), ((1,), (1, 2)), (0,), "label value 1 is in both classes 'a' and 'b'"),
        (("a", "b"), ((1,), (0,)), (0,), r"label values \[0\] are in both data.labels.b"),
        (("a", "a"), ((1,), (2,)), (0,), "names a class twice"),
        (("a",), ((),), (0,), "class 'a' has no label value"),
    ],
)
def test_inconsistent_classes_are_refused(names, values, background, message):
    with pytest.raises(ConfigError, match=message):
        LabelClasses(names, values, background)


def test_config_forms():
    binary = label_classes({"foreground": [1], "background": [0, 2]})
    assert binary == LabelClasses(("foreground",), ((1,),), (0, 2))
    organs = label_classes({"labels": {"liver": [1, 2], "spleen": 3}, "foreground": None})
    assert organs.names == ("liver", "spleen") and organs.values == ((1, 2), (3,))
    assert organs.background == (0,)
    manifest = {"labels": {"0": "background", "2": "cancer", "1": "liver"}}
    read = label_classes({"labels": None, "foreground": None}, manifest)
    assert read == manifest_classes(manifest) == LabelClasses(("liver", "cancer"), ((1,), (2,)))


@pytest.mark.parametrize(
    ("data", "manifest", "message"),
    [
        ({"labels": [1, 2]}, None, "data.labels must map class names"),
        ({"labels": {"liver": "one"}}, None, "data.labels.liver must be a label value"),
        ({"labels": None, "foreground": None}, {}, "has no 'labels' block"),
        ({"labels": None, "foreground": None}, {"labels": {"x": "a"}}, "must be label values"),
        ({"labels": None, "foreground": None}, {"labels": {"0": "bg"}}, "names no label"),
    ],
)
def test_bad_label_configs_get_one_clear_error(data, manifest, message):
    with pytest.raises(ConfigError, match=message):
        label_classes(data, manifest)


def test_predicted_classes():
    one = torch.tensor([[[[-1.0, 2.0]]]])  # (1, 1, 1, 2): sigmoid > 0.5
    assert predicted_classes(one).tolist() == [[[0, 1]]]
    three = torch.tensor([[[[0.0]], [[2.0]], [[1.0]]]])  # (1, 3, 1, 1): the largest
    assert predicted_classes(three).tolist() == [[[1]]]
