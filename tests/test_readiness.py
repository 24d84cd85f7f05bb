"""The one rule of what markers must hold before they are stored or learned from (hitlseg.project.readiness)."""

from __future__ import annotations

import numpy as np
import pytest

from hitlseg.errors import InputError
from hitlseg.project.readiness import check_learnable, check_saveable, marker_labels, missing_classes, problem

SHAPE = (12, 12)


def markers(*labels: int) -> np.ndarray:
    """A marker array with one short stroke of each label."""
    array = np.zeros(SHAPE, np.uint8)
    for row, label in enumerate(labels):
        array[row, 2:8] = label
    return array


@pytest.mark.parametrize("labels, n_classes, missing", [
    ((1, 2), 1, []),
    ((1, 3), 2, []),  # one object class of two is enough
    ((1,), 1, [1]),
    ((1,), 3, [1, 2, 3]),  # any one of them
    ((2,), 1, [0]),
    ((2, 3), 2, [0]),
    ((), 2, [0, 1, 2]),
])
def test_missing_classes(labels, n_classes, missing):
    assert missing_classes(markers(*labels), n_classes) == missing
    counts = {label: 6 for label in labels} | {4: 0}  # the marker history's {label: pixels}; zero counts ignored
    assert missing_classes(counts, n_classes) == missing


def test_the_messages_say_what_to_mark():
    assert problem(markers(1), 1, ["nucleus"]) == "only background strokes; mark the object (class 1 'nucleus') too"
    assert problem(markers(2), 1, ["nucleus"]) == "only strokes of class 1 'nucleus'; mark the background too"
    assert problem(markers(1), 2, ["cytoplasm", "nucleus"]) == (
        "only background strokes; mark at least one object class (class 1 'cytoplasm', class 2 'nucleus') too")
    assert problem(markers(1), 1, ["Class 1"]) == "only background strokes; mark the object (class 1) too"
    assert problem(markers(1), 9) == "only background strokes; mark at least one object class (classes 1..9) too"
    assert problem(markers(), 1) == "no strokes; mark the background and the object (class 1)"
    assert problem(markers(1, 2), 1) is None


def test_check_learnable_names_each_image():
    with pytest.raises(InputError) as caught:
        check_learnable({"wbc_001": markers(1, 2), "wbc_090": markers(1), "wbc_091": markers(2)}, 1, ["nucleus"],
                        action="train")
    assert str(caught.value) == ("train: image 'wbc_090': only background strokes; mark the object (class 1 'nucleus') "
                                 "too. image 'wbc_091': only strokes of class 1 'nucleus'; mark the background too")


def test_check_learnable_leaves_out_images_without_strokes():
    assert check_learnable({"a": markers(), "b": markers(1, 2), "c": {}}, 1) == ["b"]
    with pytest.raises(InputError, match="^learn filters: no image has markers yet; mark the background and the object"):
        check_learnable({"a": markers()}, 1, action="learn filters")
    with pytest.raises(InputError, match="no image has markers yet"):
        check_learnable({}, 1)


def test_check_learnable_counts_the_images_it_does_not_name():
    with pytest.raises(InputError) as caught:
        check_learnable({f"i{n:02d}": markers(1) for n in range(13)}, 1)
    message = str(caught.value)
    assert "'i09'" in message and "'i10'" not in message and message.endswith("(and 3 more images)")


def test_set_wide_rule_is_what_training_needs():
    """``per_image=False`` refuses exactly what the strokes learner refuses; per image is stricter."""
    from hitlseg.pseudo.selftrain import _check_inputs

    cases = [[(1,), (2,)], [(1, 2), (1,)], [(1,), (1,)], [(2,), (3,)], [(1, 3)], [(1,), ()]]
    for case in cases:
        arrays = [markers(*labels) for labels in case]
        images = [np.zeros((1,) + SHAPE, np.float32) for _ in arrays]
        by_image = {f"image {i}": array for i, array in enumerate(arrays)}
        try:
            _check_inputs(images, arrays, None)
            training_refuses = False
        except InputError:
            training_refuses = True
        try:
            check_learnable(by_image, 2, per_image=False)
            set_refuses = False
        except InputError as exc:
            set_refuses = True
            assert "on at least one of them" in str(exc)
        assert set_refuses == training_refuses, case
        if not training_refuses and any(set(labels) in ({1}, {2}, {3}, {2, 3}) for labels in case):
            with pytest.raises(InputError, match="only"):
                check_learnable(by_image, 2)  # per image: the one-kind image is refused


def test_set_wide_messages():
    with pytest.raises(InputError, match=r"^train: the marked images \('a', 'b'\) together hold only background "
                                         r"strokes; mark the object \(class 1\) on at least one of them$"):
        check_learnable({"a": markers(1), "b": markers(1)}, 1, per_image=False, action="train")
    with pytest.raises(InputError, match="together hold only strokes of class 1; mark the background"):
        check_learnable({"a": markers(2)}, 1, per_image=False)


def test_check_saveable():
    empty = markers()
    with pytest.raises(InputError, match="^image 'x': no strokes to save"):
        check_saveable(empty, None, name="image 'x'")
    assert check_saveable(markers(1), None) is True  # a first version with a stroke (of any class)
    assert check_saveable(empty, markers(1, 2)) is True  # erasing every stroke is an edit
    assert check_saveable(markers(1, 2), markers(1, 2)) is False  # identical: nothing to write
    assert check_saveable(empty, empty) is False
    assert check_saveable(markers(1, 2), markers(1, 3)) is True


@pytest.mark.parametrize("n_classes", [0, 255, True, 1.0, "1"])
def test_bad_class_counts_are_refused(n_classes):
    with pytest.raises(InputError, match="n_classes"):
        check_learnable({"a": markers(1, 2)}, n_classes)


def test_marker_labels_refuses_non_integer_markers():
    assert marker_labels(markers(1, 3)) == {1, 3}
    with pytest.raises(InputError, match="integer labels"):
        marker_labels(np.ones(SHAPE, bool))
