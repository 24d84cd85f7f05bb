"""Tests for hitlseg.robot: the simulated annotator."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

from hitlseg.errors import InputError
from hitlseg.robot import POLICIES, Robot, choose, corrective_markers, markers_from_mask

# ------------------------------------------------------------------------------------------
# synthetic masks
# ------------------------------------------------------------------------------------------


def _ball(shape, centre, radius):
    grids = np.ogrid[tuple(slice(0, n) for n in shape)]
    return sum((g - c) ** 2 for g, c in zip(grids, centre)) <= radius**2


def disks_2d():
    m = np.zeros((120, 140), np.uint8)
    m[_ball(m.shape, (40, 40), 20)] = 1
    m[_ball(m.shape, (40, 40), 8)] = 2  # nucleus inside a cell: touching classes
    m[_ball(m.shape, (90, 100), 15)] = 1
    m[_ball(m.shape, (85, 30), 10)] = 3
    return m


def touching_2d():
    m = np.zeros((60, 80), np.uint8)
    m[10:50, 10:40] = 1
    m[10:50, 40:70] = 2  # shares a straight boundary with class 1
    return m


def tiny_2d():
    m = np.zeros((50, 50), np.uint8)
    m[5, 5] = 1  # one pixel
    m[20, 20:22] = 2  # two pixels
    m[40, 30:33] = 3  # three pixels
    m[30:33, 8] = 1  # another small component of class 1
    return m


def spheres_3d():
    m = np.zeros((35, 50, 35), np.uint8)
    m[_ball(m.shape, (17, 20, 17), 9)] = 1
    m[_ball(m.shape, (17, 20, 17), 4)] = 2
    m[_ball(m.shape, (20, 40, 20), 5)] = 3
    m[3, 3, 3] = 2  # a one-voxel object
    return m


def border_2d():
    m = np.zeros((64, 64), np.uint8)
    m[:, :20] = 1  # an object along the image border
    m[30:34, 40:44] = 2
    return m


SYNTHETIC = {
    "disks": disks_2d,
    "touching": touching_2d,
    "tiny": tiny_2d,
    "spheres": spheres_3d,
    "border": border_2d,
    "empty2d": lambda: np.zeros((40, 50), np.uint8),
    "empty3d": lambda: np.zeros((12, 20, 16), np.uint8),
    "full": lambda: np.ones((30, 30), np.uint8),
}


def assert_valid_markers(markers, mask, *, all_classes=True):
    """Pixel-by-pixel guarantee: markers == mask + 1 wherever marked; every class marked."""
    assert markers.shape == mask.shape
    assert markers.dtype == np.uint8
    marked = markers > 0
    np.testing.assert_array_equal(markers[marked], mask[marked].astype(np.int64) + 1)
    if all_classes:
        for c in np.unique(mask):
            assert np.any(markers == c + 1), f"class {c} not marked"


# ------------------------------------------------------------------------------------------
# markers_from_mask
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(SYNTHETIC))
@pytest.mark.parametrize("seed", [0, 1, 7])
def test_markers_match_mask(name, seed):
    mask = SYNTHETIC[name]()
    markers = markers_from_mask(mask, rng=seed)
    assert_valid_markers(markers, mask)


@pytest.mark.parametrize("name", ["disks", "tiny", "spheres", "touching"])
@pytest.mark.parametrize(
    "kwargs",
    [
        dict(stroke_width=1),
        dict(stroke_width=7, erosion=0),
        dict(erosion=10),
        dict(n_object_strokes=3, n_background_strokes=5),
        dict(n_object_strokes=0, n_background_strokes=0, ring=None),
        dict(ring=(0, 2), max_marked_fraction=None),
    ],
)
def test_markers_match_mask_with_parameters(name, kwargs):
    mask = SYNTHETIC[name]()
    assert_valid_markers(markers_from_mask(mask, rng=3, **kwargs), mask)


@pytest.mark.parametrize("dtype", [np.int8, np.int32, np.int64, np.uint16, np.uint64])
def test_integer_dtypes(dtype):
    mask = disks_2d()
    np.testing.assert_array_equal(
        markers_from_mask(mask.astype(dtype), rng=0), markers_from_mask(mask, rng=0)
    )


def test_bool_mask_is_accepted():
    mask = disks_2d() > 0
    markers = markers_from_mask(mask, rng=0)
    assert_valid_markers(markers, mask.astype(np.uint8))


def test_object_strokes_keep_away_from_boundaries():
    mask = touching_2d()
    markers = markers_from_mask(mask, rng=0, erosion=3, stroke_width=3)
    for c in (1, 2):
        depth = ndimage.distance_transform_edt(np.pad(mask == c, 1))[1:-1, 1:-1]
        assert depth[markers == c + 1].min() > 3


def test_thickening_never_crosses_a_class_boundary():
    # thin objects and a wide stroke: the thickening must stay inside each object
    mask = np.zeros((40, 40), np.uint8)
    mask[10, 5:35] = 1
    mask[11, 5:35] = 2
    mask[20:23, 5:35] = 1
    markers = markers_from_mask(mask, rng=0, stroke_width=9, erosion=0)
    assert_valid_markers(markers, mask)


def test_strokes_look_like_strokes():
    # object strokes are contiguous: one connected component per object
    mask = np.zeros((100, 100), np.uint8)
    mask[_ball(mask.shape, (50, 50), 30)] = 1
    markers = markers_from_mask(mask, rng=0, max_marked_fraction=None)
    _, n = ndimage.label(markers == 2, structure=np.ones((3, 3)))
    assert n == 1
    assert 30 <= np.count_nonzero(markers == 2) <= 600
    # background: a ring stroke near the object plus strokes further away
    dist = ndimage.distance_transform_edt(mask == 0)
    bg = markers == 1
    assert np.any(bg & (dist > 3) & (dist <= 8))
    assert np.any(bg & (dist > 8))


@pytest.mark.parametrize("name", ["disks", "spheres", "tiny", "empty2d"])
def test_budget_respected(name):
    mask = SYNTHETIC[name]()
    full = markers_from_mask(mask, rng=0, max_marked_fraction=None)
    n_classes = len(np.unique(mask))
    for budget in (n_classes, 20, 100, 1000):
        markers = markers_from_mask(mask, rng=0, max_marked_fraction=None, max_marked=budget)
        assert_valid_markers(markers, mask)
        assert np.count_nonzero(markers) <= budget
        assert np.count_nonzero(markers) <= np.count_nonzero(full)
        # shortening keeps pixels of the unlimited strokes
        assert np.all(full[markers > 0] == markers[markers > 0])
    frac = markers_from_mask(mask, rng=0, max_marked_fraction=0.01)
    assert np.count_nonzero(frac) <= max(int(0.01 * mask.size), n_classes)


def test_budget_below_class_count_still_marks_every_class():
    mask = disks_2d()
    markers = markers_from_mask(mask, rng=0, max_marked=1)
    assert_valid_markers(markers, mask)
    assert np.count_nonzero(markers) == len(np.unique(mask))


def test_budget_shortens_strokes_contiguously():
    mask = np.zeros((100, 100), np.uint8)
    mask[20:80, 20:80] = 1
    markers = markers_from_mask(
        mask, rng=0, max_marked=150, n_background_strokes=0, max_marked_fraction=None
    )
    assert np.count_nonzero(markers) <= 150
    for value in (1, 2):
        _, n = ndimage.label(markers == value, structure=np.ones((3, 3)))
        assert n == 1


@pytest.mark.parametrize("name", ["disks", "spheres", "tiny"])
def test_seed_determinism(name):
    mask = SYNTHETIC[name]()
    a = markers_from_mask(mask, rng=5)
    b = markers_from_mask(mask, rng=5)
    c = markers_from_mask(mask, rng=np.random.default_rng(5))
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(a, c)


@pytest.mark.parametrize("name", ["disks", "spheres"])
def test_different_seeds_differ(name):
    mask = SYNTHETIC[name]()
    outs = [markers_from_mask(mask, rng=s) for s in range(4)]
    assert any(not np.array_equal(outs[0], o) for o in outs[1:])


def test_typical_marked_count_2d():
    mask = np.zeros((400, 400), np.uint8)
    for centre in [(100, 100), (250, 300), (320, 120)]:
        mask[_ball(mask.shape, centre, 30)] = 1
    n = np.count_nonzero(markers_from_mask(mask, rng=0))
    assert 200 <= n <= 5000


@pytest.mark.parametrize(
    "bad",
    [
        np.zeros((10, 10), np.float32),
        np.zeros(10, np.uint8),
        np.zeros((2, 3, 4, 5), np.uint8),
        np.full((10, 10), -1, np.int16),
        np.zeros((0, 5), np.uint8),
        np.full((5, 5), 300, np.int32),
    ],
)
def test_bad_mask_raises(bad):
    with pytest.raises(InputError, match="mask"):
        markers_from_mask(bad)


@pytest.mark.parametrize(
    "kwargs, name",
    [
        (dict(stroke_width=0), "stroke_width"),
        (dict(stroke_width=2.5), "stroke_width"),
        (dict(erosion=-1), "erosion"),
        (dict(n_object_strokes=-1), "n_object_strokes"),
        (dict(ring=(5, 2)), "ring"),
        (dict(ring=3), "ring"),
        (dict(max_marked_fraction=1.5), "max_marked_fraction"),
        (dict(max_marked=0), "max_marked"),
        (dict(rng="seed"), "rng"),
    ],
)
def test_bad_parameters_raise(kwargs, name):
    with pytest.raises(InputError, match=name):
        markers_from_mask(disks_2d(), **kwargs)


# ------------------------------------------------------------------------------------------
# corrective_markers
# ------------------------------------------------------------------------------------------


def _bad_prediction_2d(mask):
    pred = np.roll(mask, 6, axis=1)
    pred[:15, :15] = 2  # false positive in the background
    return pred


@pytest.mark.parametrize("seed", [0, 1])
def test_corrective_markers_on_errors_with_true_class(seed):
    mask = disks_2d()
    pred = _bad_prediction_2d(mask)
    markers = corrective_markers(mask, pred, rng=seed)
    assert_valid_markers(markers, mask, all_classes=False)
    marked = markers > 0
    assert marked.any()
    assert np.all(pred[marked] != mask[marked])  # only on error pixels


def test_corrective_markers_3d():
    mask = spheres_3d()
    pred = np.roll(mask, 3, axis=0)
    markers = corrective_markers(mask, pred, rng=0, n_regions=5)
    assert_valid_markers(markers, mask, all_classes=False)
    assert np.any(markers) and np.all(pred[markers > 0] != mask[markers > 0])


def test_corrective_markers_target_largest_errors():
    mask = np.zeros((80, 80), np.uint8)
    mask[10:70, 10:40] = 1
    pred = mask.copy()
    pred[10:70, 10:30] = 0  # large missed region of class 1
    pred[75:77, 75:77] = 1  # tiny false positive
    markers = corrective_markers(mask, pred, rng=0, n_regions=1)
    assert np.any(markers == 2) and not np.any(markers == 1)


def test_corrective_markers_fill_paints_the_eroded_error_regions():
    mask = np.zeros((80, 80), np.uint8)
    mask[10:70, 10:40] = 1
    pred = mask.copy()
    pred[10:70, 10:30] = 0  # a 60 x 20 missed region
    pred[75:77, 75:77] = 1  # a tiny false positive
    strokes = corrective_markers(mask, pred, rng=0, n_regions=1)
    filled = corrective_markers(mask, pred, rng=0, n_regions=1, fill=True)
    assert_valid_markers(filled, mask, all_classes=False)
    assert np.all(pred[filled > 0] != mask[filled > 0]) and not np.any(filled == 1)
    assert np.count_nonzero(filled) == 58 * 18  # the region less its one-pixel rim
    assert np.count_nonzero(filled) > 5 * np.count_nonzero(strokes)
    both = corrective_markers(mask, pred, rng=0, n_regions=2, fill=True)
    assert (both[75:77, 75:77] == 1).all()  # a region too thin to erode is painted whole
    np.testing.assert_array_equal(Robot(seed=0, correction_fill=True, n_regions=1).correct(mask, pred),
                                  corrective_markers(mask, pred, n_regions=1, fill=True, rng=Robot(seed=0).rng("correct")))
    assert 0 < np.count_nonzero(corrective_markers(mask, pred, fill=True, max_marked=50, rng=0)) <= 50


def test_corrective_markers_none_when_perfect():
    mask = disks_2d()
    assert not corrective_markers(mask, mask.copy(), rng=0).any()
    mask3 = spheres_3d()
    assert not corrective_markers(mask3, mask3, rng=0).any()


def test_corrective_markers_budget_and_determinism():
    mask = disks_2d()
    pred = _bad_prediction_2d(mask)
    a = corrective_markers(mask, pred, rng=4, max_marked=30)
    np.testing.assert_array_equal(a, corrective_markers(mask, pred, rng=4, max_marked=30))
    assert 0 < np.count_nonzero(a) <= 30


def test_corrective_markers_bad_input():
    mask = disks_2d()
    with pytest.raises(InputError, match="prediction"):
        corrective_markers(mask, mask[:-1])
    with pytest.raises(InputError, match="prediction"):
        corrective_markers(mask, mask.astype(float))
    with pytest.raises(InputError, match="mask"):
        corrective_markers(mask.astype(float), mask)


# ------------------------------------------------------------------------------------------
# choose
# ------------------------------------------------------------------------------------------

CLOSEST = ["c1", "c2", "c3"]
DISTANT = ["d1", "d2", "c2"]


def test_choose_policies():
    assert choose(CLOSEST, DISTANT, "most_distant") == "d1"
    assert choose(CLOSEST, DISTANT, "closest") == "c1"
    assert choose(CLOSEST, DISTANT, "alternate", round_index=0) == "d1"
    assert choose(CLOSEST, DISTANT, "alternate", round_index=1) == "c1"
    assert choose(CLOSEST, DISTANT, "alternate", round_index=4) == "d1"
    assert choose(CLOSEST, DISTANT, "closest", exclude={"c1"}) == "c2"


def test_choose_random_is_seeded_and_uniform_over_union():
    union = set(CLOSEST) | set(DISTANT)
    picks = [choose(CLOSEST, DISTANT, "random", rng=s) for s in range(200)]
    assert set(picks) == union
    assert choose(CLOSEST, DISTANT, "random", rng=9) == choose(CLOSEST, DISTANT, "random", rng=9)
    assert choose(CLOSEST, [], "random", rng=1) in CLOSEST
    assert choose(CLOSEST, DISTANT, "random", rng=2, exclude=union - {"d2"}) == "d2"


def test_choose_errors():
    with pytest.raises(InputError, match="most_distant.*closest.*alternate.*random"):
        choose(CLOSEST, DISTANT, "nearest")
    with pytest.raises(InputError, match="closest"):
        choose([], DISTANT, "closest")
    with pytest.raises(InputError, match="most_distant"):
        choose(CLOSEST, [], "most_distant")
    with pytest.raises(InputError):
        choose([], [], "random")
    with pytest.raises(InputError, match="round_index"):
        choose(CLOSEST, DISTANT, "alternate", round_index=-1)
    with pytest.raises(InputError, match="closest"):
        choose("abc", DISTANT, "closest")
    assert set(POLICIES) == {"most_distant", "closest", "alternate", "random"}


# ------------------------------------------------------------------------------------------
# Robot
# ------------------------------------------------------------------------------------------


def test_robot_mark_is_order_independent_and_keyed():
    robot = Robot(seed=11)
    masks = {i: SYNTHETIC[n]() for i, n in enumerate(["disks", "spheres", "tiny"])}
    forward = {i: robot.mark(m, key=i) for i, m in masks.items()}
    backward = {i: robot.mark(m, key=i) for i, m in reversed(list(masks.items()))}
    for i, m in masks.items():
        np.testing.assert_array_equal(forward[i], backward[i])
        assert_valid_markers(forward[i], m)
    disks = masks[0]
    assert not np.array_equal(robot.mark(disks, key=0), robot.mark(disks, key=1))
    assert not np.array_equal(robot.mark(disks, key=0), Robot(seed=12).mark(disks, key=0))
    again = Robot(seed=11).mark(disks, key="img-7")
    np.testing.assert_array_equal(robot.mark(disks, key="img-7"), again)


def test_robot_correct_and_choose():
    robot = Robot(seed=1, policy="alternate")
    mask = disks_2d()
    pred = _bad_prediction_2d(mask)
    markers = robot.correct(mask, pred, key=("img", 2))
    assert_valid_markers(markers, mask, all_classes=False)
    assert markers.any() and np.all(pred[markers > 0] != mask[markers > 0])
    np.testing.assert_array_equal(markers, robot.correct(mask, pred, key=("img", 2)))
    assert not robot.correct(mask, mask).any()
    assert robot.choose(CLOSEST, DISTANT, 0) == "d1"
    assert robot.choose(CLOSEST, DISTANT, 1) == "c1"
    rand = Robot(seed=3, policy="random")
    assert rand.choose(CLOSEST, DISTANT, 5) == rand.choose(CLOSEST, DISTANT, 5)


def test_robot_parameters_are_used_and_validated():
    mask = disks_2d()
    small = Robot(max_marked=50).mark(mask)
    assert np.count_nonzero(small) <= 50
    with pytest.raises(InputError, match="policy"):
        Robot(policy="sideways")
    with pytest.raises(InputError, match="seed"):
        Robot(seed=-1)
    with pytest.raises(InputError, match="stroke_width"):
        Robot(stroke_width=0)
    with pytest.raises(InputError, match="key"):
        Robot().mark(mask, key=1.5)


# ------------------------------------------------------------------------------------------
# real data in ../shared/datasets
# ------------------------------------------------------------------------------------------


def _sample(paths, n):
    paths = sorted(paths)
    if len(paths) <= n:
        return paths
    idx = np.random.default_rng(0).choice(len(paths), n, replace=False)
    return [paths[i] for i in sorted(idx)]


def _load_png(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as im:
        return np.asarray(im)


def _load_nifti(path: Path) -> np.ndarray:
    nib = pytest.importorskip("nibabel")
    data = np.asarray(nib.load(str(path)).dataobj)
    assert np.all(data == np.round(data))
    return data.astype(np.uint8)


def _check_real(mask, robot, key):
    markers = robot.mark(mask, key=key)
    assert_valid_markers(markers, mask)
    n = np.count_nonzero(markers)
    assert n <= max(int(0.05 * mask.size), len(np.unique(mask)))
    # a wrong prediction: corrections are on errors, with the true class
    pred = np.roll(mask, 5, axis=-1)
    corr = robot.correct(mask, pred, key=key)
    assert_valid_markers(corr, mask, all_classes=False)
    assert np.all(pred[corr > 0] != mask[corr > 0])
    assert corr.any() == bool(np.any(pred != mask))
    return n


@pytest.mark.shared
@pytest.mark.parametrize("name", ["wbc1", "wbc2", "schisto"])
def test_real_2d_masks(shared, name):
    root = shared(name)
    paths = _sample((root / "masks").glob("*.png"), 20)
    assert paths
    robot = Robot(seed=0)
    counts = []
    for path in paths:
        mask = _load_png(path)
        assert mask.ndim == 2
        counts.append(_check_real(mask, robot, path.stem))
    assert 50 <= np.median(counts) <= 10000


@pytest.mark.shared
def test_real_hippocampus(shared):
    root = shared("hippocampus")
    paths = _sample((root / "masks").glob("*.nii.gz"), 20)
    assert paths
    robot = Robot(seed=0)
    for path in paths:
        mask = _load_nifti(path)
        assert mask.ndim == 3
        _check_real(mask, robot, path.name)


@pytest.mark.shared
def test_real_brats(shared):
    root = shared("brats-sample")
    paths = sorted(root.glob("*/*/OTMultiClass.nii.gz"))[:2]
    if not paths:
        pytest.skip("no BraTS cases")
    robot = Robot(seed=0)
    for path in paths:
        mask = _load_nifti(path)
        markers = robot.mark(mask, key=path.parent.name)
        assert_valid_markers(markers, mask)
