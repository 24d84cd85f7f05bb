"""Datasets on disk: samples discovered by file stem, loaded lazily, and seeded splits.

Two layouts are recognised:

* **folders by role**: ``ROOT/images/NAME.ext`` with optional ``ROOT/masks/NAME.ext`` and
  ``ROOT/markers/NAME[-seeds].{txt,png,nii.gz}``, matched by stem;
* **case per folder**: ``ROOT/[GROUP/]CASE/*.nii.gz`` (e.g. the BraTS layout), one file per
  modality stacked as channels, the label file recognised by name (``seg``, ``label``,
  ``OTMultiClass``, ``truth``); region-of-interest masks such as ``brainmask`` are not channels.
  Group folders named train/validation/test give a predefined split.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator, Mapping, Sequence

import numpy as np

from hitlseg.errors import InputError
from hitlseg.io import ImageMeta, is_image_file, read_image, read_mask, read_markers, stem_of, suffix_of
from hitlseg.io.formats import MARKER_TEXT_SUFFIXES

MARKER_STEM = re.compile(r"[-_](seeds|markers?)$", re.IGNORECASE)
MASK_NAME = re.compile(r"(seg|label|otmulticlass|truth|groundtruth|^gt[-_.]|^mask)", re.IGNORECASE)
ROI_NAME = re.compile(r"(brainmask|roi)", re.IGNORECASE)
MARKER_NAME = re.compile(r"(markers?|seeds)", re.IGNORECASE)
MAX_CLASS = 254  # markers are uint8 with class c stored as c + 1
SPLIT_GROUPS = {"train": "train", "training": "train", "val": "val", "valid": "val", "validation": "val", "test": "test"}


@dataclass(frozen=True)
class Sample:
    """One image (or multi-modal case) and the files that belong to it."""

    id: str
    image_paths: tuple[Path, ...]
    mask_path: Path | None = None
    markers_path: Path | None = None
    group: str | None = None


@dataclass
class LoadedSample:
    """Arrays of one sample: image ``(C, *spatial)``, mask and markers ``(*spatial)`` or None."""

    id: str
    image: np.ndarray
    meta: ImageMeta
    mask: np.ndarray | None
    markers: np.ndarray | None


class Dataset:
    """Samples of a dataset folder, loaded on demand.

    Use :meth:`from_folder`. Samples are addressed by id (the file stem or case folder name).
    ``ignored`` lists ``(path, reason)`` for files that were skipped.
    """

    def __init__(self, root: Path, samples: Sequence[Sample], ignored=(), *, color="lab", normalize="percentile",
                 max_side: int | None = None):
        from hitlseg.io.resample import check_max_side

        self.root = Path(root)
        self.samples = {s.id: s for s in samples}
        self.ignored: list[tuple[Path, str]] = list(ignored)
        self.color = color
        self.normalize = normalize
        #: Working resolution: images, masks and markers are read with their longest side at most this
        #: (:mod:`hitlseg.io.resample`); None reads them as they are.
        self.max_side = check_max_side(max_side)

    # -- discovery ---------------------------------------------------------------------------
    @classmethod
    def from_folder(cls, root: str | Path, *, color: str = "lab", normalize: str = "percentile",
                    max_side: int | None = None) -> "Dataset":
        """Discover the samples of ``root`` (see the module docstring for the layouts)."""
        root = Path(root)
        if not root.is_dir():
            raise InputError(f"{root}: dataset folder not found")
        if (root / "images").is_dir():
            samples, ignored = _discover_by_role(root)
        else:
            samples, ignored = _discover_cases(root)
        if not samples:
            raise InputError(f"{root}: no images found (expected {root}/images/*.png|tif|nii.gz or one folder per case)")
        samples.sort(key=lambda s: s.id)
        return cls(root, samples, ignored, color=color, normalize=normalize, max_side=max_side)

    @classmethod
    def from_parts(cls, images_dir: str | Path, masks_dir: str | Path | None = None, markers_dir: str | Path | None = None,
                   *, color: str = "lab", normalize: str = "percentile", max_side: int | None = None) -> "Dataset":
        """A dataset over a flat folder of images, with optional folders of masks and markers matched by stem."""
        images_dir = Path(images_dir)
        if not images_dir.is_dir():
            raise InputError(f"{images_dir}: images folder not found")
        images, ignored = _index_by_stem(images_dir)
        if not images:
            hint = " (it looks like a dataset folder: pass the dataset instead)" if (images_dir / "images").is_dir() else ""
            raise InputError(f"{images_dir}: no images found (looked for .png, .tif, .bmp, .jpg, .nii.gz){hint}")
        tables = {}
        for kind, folder in (("mask", masks_dir), ("markers", markers_dir)):
            tables[kind] = {}
            if folder is None:
                continue
            folder = Path(folder)
            if not folder.is_dir():
                raise InputError(f"{folder}: {kind} folder not found")
            tables[kind], more = _index_by_stem(folder, strip_marker_suffix=kind == "markers")
            ignored += more
            ignored += [(path, f"{kind} without an image of stem {stem!r}") for stem, path in tables[kind].items() if stem not in images]
        samples = [Sample(stem, (path,), tables["mask"].get(stem), tables["markers"].get(stem)) for stem, path in sorted(images.items())]
        return cls(images_dir, samples, ignored, color=color, normalize=normalize, max_side=max_side)

    # -- access ------------------------------------------------------------------------------
    @property
    def ids(self) -> list[str]:
        """Sample ids in sorted order."""
        return list(self.samples)

    def __len__(self) -> int:
        return len(self.samples)

    def __iter__(self) -> Iterator[Sample]:
        return iter(self.samples.values())

    def __contains__(self, sample_id: str) -> bool:
        return sample_id in self.samples

    def sample(self, sample_id: str) -> Sample:
        """The :class:`Sample` of ``sample_id``."""
        try:
            return self.samples[sample_id]
        except KeyError:
            raise InputError(f"sample id {sample_id!r} is not in dataset {self.root}") from None

    def image(self, sample_id: str) -> tuple[np.ndarray, ImageMeta]:
        """Image ``(C, *spatial)`` float32 (at the working resolution) and the file's metadata.

        With :attr:`max_side` the array is resampled, while ``meta.spatial_shape`` stays the file's
        own: results are written back on that grid.
        """
        image, meta = read_image(self.sample(sample_id).image_paths, color=self.color, normalize=self.normalize)
        if self.max_side is not None:
            from hitlseg.io.resample import resample_image, working_shape

            image = resample_image(image, working_shape(meta.spatial_shape, self.max_side))
        return image, meta

    def _file_shape(self, sample_id: str, shape: tuple[int, ...] | None) -> tuple[int, ...] | None:
        """The shape a mask or marker file must have: the image file's when resampling, else ``shape``."""
        if self.max_side is None:
            return None if shape is None else tuple(shape)
        from hitlseg.io import peek_image

        return tuple(peek_image(self.sample(sample_id).image_paths)[1])

    def _working(self, array: np.ndarray, resample, shape: tuple[int, ...] | None) -> np.ndarray:
        """``array`` (on the file's grid) at the working resolution, checked against ``shape`` if given."""
        from hitlseg.io.resample import working_shape

        target = working_shape(array.shape, self.max_side)
        if shape is not None and target != tuple(shape):
            raise InputError(f"working shape {target} differs from the image's {tuple(shape)}")
        return resample(array, target)

    def mask(self, sample_id: str, shape: tuple[int, ...] | None = None) -> np.ndarray | None:
        """Integer mask, or None when the sample has none; checked against ``shape`` if given.

        ``shape`` is the image array's (working) shape; with :attr:`max_side` the file is checked
        against the image file's shape and resampled by nearest neighbour.
        """
        sample = self.sample(sample_id)
        if sample.mask_path is None:
            return None
        mask, _ = read_mask(sample.mask_path)
        expected = self._file_shape(sample_id, shape)
        if expected is not None and tuple(mask.shape) != expected:
            image_name = sample.image_paths[0]
            raise InputError(f"{sample.mask_path}: mask shape {mask.shape} differs from image {image_name} shape {expected}")
        if self.max_side is None:
            return mask
        from hitlseg.io.resample import resample_labels

        return self._working(mask, resample_labels, shape)

    def markers(self, sample_id: str, shape: tuple[int, ...] | None = None) -> np.ndarray | None:
        """Marker labels, or None when the sample has no marker file (every stroke kept when resampled)."""
        sample = self.sample(sample_id)
        if sample.markers_path is None:
            return None
        markers = read_markers(sample.markers_path, self._file_shape(sample_id, shape))
        if self.max_side is None:
            return markers
        from hitlseg.io.resample import resample_markers

        return self._working(markers, resample_markers, shape)

    def load(self, sample_id: str) -> LoadedSample:
        """Image, mask and markers of one sample, with shapes checked against each other."""
        image, meta = self.image(sample_id)
        shape = image.shape[1:]
        return LoadedSample(sample_id, image, meta, self.mask(sample_id, shape), self.markers(sample_id, shape))

    def subset(self, ids: Sequence[str]) -> "Dataset":
        """A dataset of the given sample ids (each must exist)."""
        return Dataset(self.root, [self.sample(i) for i in ids], color=self.color, normalize=self.normalize,
                       max_side=self.max_side)

    def with_masks(self) -> list[str]:
        """Ids of samples that have a mask."""
        return [s.id for s in self if s.mask_path is not None]

    def predefined_split(self) -> "Split | None":
        """The split given by train/validation/test group folders, if every sample has one."""
        groups = {s.id: SPLIT_GROUPS.get((s.group or "").lower()) for s in self}
        if not groups or None in groups.values():
            return None
        parts = {name: [i for i, g in groups.items() if g == name] for name in ("train", "val", "test")}
        return Split(parts["train"], parts["val"], parts["test"], seed=None)


def reading_options(preprocessing: Mapping | None) -> dict:
    """The :class:`Dataset` reading options (``color``, ``normalize``, ``max_side``) of a model's ``preprocessing``."""
    preprocessing = preprocessing or {}
    return {"color": preprocessing.get("color", "lab"), "normalize": preprocessing.get("normalize", "percentile"),
            "max_side": preprocessing.get("max_side")}


def task_classes(labels: dict[str, "Iterable[int]"], n_classes: int | None = None) -> int:
    """The number of object classes ``K`` of a task, from the labels each mask holds; refuses outliers.

    One rule for every command: labels are integers 0 (background) .. ``K``. Declared (``n_classes``),
    a label above ``K`` is an error. Inferred, ``K`` is the largest label, and every label from 1 to
    ``K`` must occur in some mask: a gap (masks with 0, 1 and 255) means stray values, not classes.
    No class may exceed 254 (marker files store class ``c`` as ``c + 1`` in one byte).

    Parameters
    ----------
    labels : dict
        Mask name (file or id) -> the labels it holds (e.g. ``np.unique(mask)``).
    n_classes : int, optional
        Declared number of object classes.

    Returns
    -------
    int
        ``K`` (at least 1).

    Raises
    ------
    InputError
        Naming the masks that hold the outlying labels.
    """
    found: dict[int, list[str]] = {}
    for name, values in labels.items():
        for value in values:
            found.setdefault(int(value), []).append(str(name))

    def where(value):
        names = found[value]
        return ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")

    negative = [v for v in found if v < 0]
    if negative:
        raise InputError(f"{where(min(negative))}: negative label {min(negative)}; labels are 0 (background) .. K")
    if n_classes is not None:
        if isinstance(n_classes, bool) or not isinstance(n_classes, (int, np.integer)) or not 1 <= n_classes <= MAX_CLASS:
            raise InputError(f"classes: must be an integer in 1..{MAX_CLASS}, got {n_classes!r}")
        above = sorted(v for v in found if v > n_classes)
        if above:
            raise InputError(f"{where(above[0])}: label {above[0]} is above the {n_classes} declared classes "
                             f"(labels 0..{n_classes})")
        return int(n_classes)
    present = sorted(v for v in found if v > 0)
    if not present:
        return 1
    gap = next((k for k, v in enumerate(present, start=1) if v != k), None)  # first class with no label
    if gap is not None:
        stray = present[gap - 1]
        shown = ", ".join(map(str, [0] + present[:8])) + (", ..." if len(present) > 8 else "")
        raise InputError(f"{where(stray)}: label {stray} looks stray: the masks hold labels {shown} but no {gap}; "
                         "labels must be consecutive 0..K (fix the masks, or declare the number of classes)")
    if present[-1] > MAX_CLASS:
        raise InputError(f"{where(present[-1])}: label {present[-1]} is not a class (classes are 1..{MAX_CLASS}); "
                         "fix the mask")
    return present[-1]


def _index_by_stem(folder: Path, strip_marker_suffix: bool = False):
    found: dict[str, Path] = {}
    ignored: list[tuple[Path, str]] = []
    for path in sorted(folder.iterdir()):
        if path.name.startswith("."):
            continue
        allowed = is_image_file(path) or (strip_marker_suffix and suffix_of(path) in MARKER_TEXT_SUFFIXES)
        if not allowed:
            ignored.append((path, "not an image file" if path.is_file() else "a folder"))
            continue
        stem = stem_of(path)
        if strip_marker_suffix:
            stem = MARKER_STEM.sub("", stem)
        if stem in found:
            raise InputError(f"{folder}: two files have the stem {stem!r}: {found[stem].name} and {path.name}")
        found[stem] = path
    return found, ignored


def _discover_by_role(root: Path):
    dataset = Dataset.from_parts(root / "images", _optional(root / "masks"), _optional(root / "markers"))
    return list(dataset), dataset.ignored


def _optional(folder: Path) -> Path | None:
    return folder if folder.is_dir() else None


def _case_files(folder: Path):
    channels, masks, markers, ignored = [], [], [], []
    for path in sorted(folder.iterdir()):
        if path.name.startswith(".") or path.is_dir():
            continue
        name = stem_of(path)
        if not is_image_file(path) and suffix_of(path) not in MARKER_TEXT_SUFFIXES:
            ignored.append((path, "not an image file"))
        elif MARKER_NAME.search(name):
            markers.append(path)
        elif ROI_NAME.search(name):
            ignored.append((path, "region-of-interest mask, not an image channel"))
        elif MASK_NAME.search(name):
            masks.append(path)
        elif suffix_of(path) not in MARKER_TEXT_SUFFIXES:
            channels.append(path)
    for kind, found in (("label", masks), ("marker", markers)):
        if len(found) > 1:
            raise InputError(f"{folder}: more than one {kind} file: {', '.join(p.name for p in found)}")
    return channels, (masks or [None])[0], (markers or [None])[0], ignored


def _discover_cases(root: Path):
    samples, ignored = [], []
    queue = [(root, None)]
    while queue:
        folder, group = queue.pop()
        for path in sorted(folder.iterdir()):
            if path.is_dir() and not path.name.startswith("."):
                has_files = any(is_image_file(p) for p in path.iterdir())
                if has_files:
                    channels, mask, markers, more = _case_files(path)
                    ignored += more
                    if channels:
                        samples.append(Sample(path.name, tuple(channels), mask, markers, group))
                elif folder == root:
                    queue.append((path, path.name))
            elif path.is_file() and is_image_file(path):
                ignored.append((path, "image outside a case folder or images/ folder"))
    ids = [s.id for s in samples]
    if len(set(ids)) != len(ids):
        raise InputError(f"{root}: case folder names must be unique across groups")
    return samples, ignored


@dataclass
class Split:
    """Sample ids of the training, validation and test sets.

    ``groups`` maps each id to its group (patient, video, slide) when the split was made by
    groups (:func:`make_split` with ``groups``): no group then has ids in two parts.
    ``group_by`` says where the groups came from (a file or a regular expression).
    """

    train: list[str]
    val: list[str]
    test: list[str]
    seed: int | None = 0
    fractions: tuple[float, float, float] = field(default=(0.6, 0.1, 0.3))
    groups: dict[str, str] | None = None
    group_by: str | None = None

    def to_dict(self) -> dict:
        """JSON-ready dictionary (``groups`` and ``group_by`` only for a grouped split)."""
        data = {"train": self.train, "val": self.val, "test": self.test, "seed": self.seed, "fractions": list(self.fractions)}
        if self.groups is not None:
            data["group_by"] = self.group_by
            data["groups"] = dict(self.groups)
        return data

    def part_of(self, sample_id: str) -> str | None:
        """``"train"``, ``"val"``, ``"test"`` or None: the part holding ``sample_id``."""
        for name in ("train", "val", "test"):
            if sample_id in getattr(self, name):
                return name
        return None

    def save(self, path: str | Path) -> Path:
        """Write the split as JSON, atomically."""
        from hitlseg.project.files import write_json

        return write_json(path, self.to_dict(), indent=2)

    @classmethod
    def load(cls, path: str | Path, dataset: Dataset | None = None) -> "Split":
        """Read a split written by :meth:`save`; with ``dataset``, every id must be one of its samples.

        A grouped split's ``groups`` must give every id a group, and no group may have ids in
        two parts.
        """
        path = Path(path)
        try:
            data = json.loads(path.read_text())
            groups = data.get("groups")
            if groups is not None:
                if not isinstance(groups, dict):
                    raise TypeError("'groups' must map sample ids to groups")
                groups = {str(k): str(v) for k, v in groups.items()}
            for name in ("train", "val", "test"):
                if not isinstance(data[name], list):
                    raise TypeError(f"{name!r} must be a list of sample ids")
            split = cls(list(data["train"]), list(data["val"]), list(data["test"]), data.get("seed"),
                        tuple(data.get("fractions", (0.6, 0.1, 0.3))), groups, data.get("group_by"))
        except FileNotFoundError:
            raise InputError(f"{path}: split file not found") from None
        except IsADirectoryError:
            raise InputError(f"{path}: is a folder, not a split file") from None
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise InputError(f"{path}: not a split file (needs JSON lists 'train', 'val', 'test'): {exc}") from exc
        all_ids = split.train + split.val + split.test
        if not all(isinstance(i, str) for i in all_ids):
            raise InputError(f"{path}: not a split file (sample ids must be strings)")
        if len(set(all_ids)) != len(all_ids):
            raise InputError(f"{path}: a sample id appears in more than one part of the split")
        if split.groups is not None:
            ungrouped = [i for i in all_ids if i not in split.groups]
            if ungrouped:
                raise InputError(f"{path}: {len(ungrouped)} ids have no group in 'groups': {_shown(ungrouped)}")
            leaked = leaking_groups(split)
            if leaked:
                group, parts = next(iter(leaked.items()))
                raise InputError(f"{path}: group {group!r} has images in {' and '.join(parts)} "
                                 f"({len(leaked)} groups are split across parts)")
        if dataset is not None:
            missing = [i for i in all_ids if i not in dataset]
            if missing:
                shown = ", ".join(missing[:5]) + (" ..." if len(missing) > 5 else "")
                raise InputError(f"{path}: {len(missing)} ids are not samples of {dataset.root}: {shown}")
        return split


def _shown(items: Sequence[str], limit: int = 5) -> str:
    items = list(items)
    return ", ".join(items[:limit]) + (f" ... (+{len(items) - limit})" if len(items) > limit else "")


def _check_fractions(fractions: Sequence[float]) -> tuple[float, float, float]:
    try:
        fractions = tuple(float(f) for f in fractions)
    except (TypeError, ValueError):
        raise InputError(f"fractions: need three non-negative numbers summing to 1, got {fractions!r}") from None
    if (len(fractions) != 3 or not all(np.isfinite(fractions)) or min(fractions) < 0
            or abs(sum(fractions) - 1) > 1e-6):
        raise InputError(f"fractions: need three non-negative numbers summing to 1, got {fractions}")
    if fractions[0] <= 0:
        raise InputError(f"fractions: the training fraction must be above 0, got {fractions}")
    return fractions


def _part_sizes(n: int, fractions: tuple[float, float, float]) -> tuple[int, int, int]:
    """Images per part: validation and test rounded (at least 1 when their fraction is above 0), train the rest."""
    n_val = max(1, int(round(fractions[1] * n))) if fractions[1] > 0 else 0
    n_test = max(1, int(round(fractions[2] * n))) if fractions[2] > 0 else 0
    return n - n_val - n_test, n_val, n_test


def make_split(ids: Sequence[str], fractions: Sequence[float] = (0.6, 0.1, 0.3), seed: int = 0,
               groups: Mapping[str, str] | None = None, group_by: str | None = None) -> Split:
    """Cut ``ids`` into train/validation/test parts, at random for ``seed``, optionally by groups.

    Parameters
    ----------
    ids : sequence of str
        Sample ids.
    fractions : three floats
        Fractions of train, validation and test; they must sum to 1 (the training one above 0).
    seed : int
        Seed of the shuffle: the same seed, ids (and groups) give the same split.
    groups : mapping id -> str, optional
        The group (patient, video, slide) of every id, e.g. from :func:`read_groups` or
        :func:`groups_from_regex`. Whole groups go to one part, so no group has images on two
        sides; groups are taken in a seeded random order and each goes to the part furthest
        below its share of images; of :data:`GROUPED_SPLIT_TRIES` such orders the one closest to
        the fractions is kept, so the fractions hold approximately, by image count.
    group_by : str, optional
        Where the groups came from, recorded in the split (``Split.group_by``).

    Returns
    -------
    Split
        Without ``groups``: the shuffled ids cut into parts (validation and test sizes rounded,
        at least one image each when their fraction is above 0). With ``groups``: the ids of
        each part sorted, and ``groups`` restricted to ``ids``.

    Raises
    ------
    InputError
        Bad fractions, fewer than 3 ids, an id without a group, or fewer groups than parts
        with a fraction above 0.

    Examples
    --------
    >>> split = make_split(["a1", "a2", "b1", "c1", "c2", "d1"], (0.5, 0.0, 0.5), seed=0,
    ...                    groups={"a1": "a", "a2": "a", "b1": "b", "c1": "c", "c2": "c", "d1": "d"})
    >>> sorted(split.train + split.test) == ["a1", "a2", "b1", "c1", "c2", "d1"]
    True
    """
    fractions = _check_fractions(fractions)
    ids = sorted(ids)
    if len(set(ids)) != len(ids):
        raise InputError("ids: a sample id is given more than once")
    if len(ids) < 3:
        raise InputError(f"ids: a split needs at least 3 samples, got {len(ids)}")
    if groups is not None:
        return _grouped_split(ids, fractions, seed, groups, group_by)
    order = np.random.default_rng(seed).permutation(len(ids))
    shuffled = [ids[i] for i in order]
    n = len(ids)
    n_train, n_val, n_test = _part_sizes(n, fractions)
    if n_train < 1:
        raise InputError(f"ids: {n} samples are too few for fractions {fractions}")
    return Split(shuffled[:n_train], shuffled[n_train : n_train + n_val], shuffled[n_train + n_val :], seed, fractions)


def make_grouped_split(ids: Sequence[str], groups: Mapping[str, str], fractions: Sequence[float] = (0.6, 0.1, 0.3),
                       seed: int = 0, group_by: str | None = None) -> Split:
    """:func:`make_split` with ``groups`` (required): whole groups go to one part."""
    if groups is None:
        raise InputError("groups: a grouped split needs the group of every id")
    return make_split(ids, fractions, seed, groups, group_by)


def _grouped_split(ids: list[str], fractions, seed, groups, group_by) -> Split:
    if not isinstance(groups, Mapping):
        raise InputError(f"groups: expected a mapping id -> group, got {type(groups).__name__}")
    missing = [i for i in ids if i not in groups]
    if missing:
        raise InputError(f"{group_by or 'groups'}: no group for {len(missing)} of {len(ids)} ids: {_shown(missing)}")
    of = {i: str(groups[i]) for i in ids}
    members: dict[str, list[str]] = {}
    for sample_id in ids:
        members.setdefault(of[sample_id], []).append(sample_id)
    names = sorted(members)
    parts_used = [k for k in range(3) if fractions[k] > 0]
    if len(names) < len(parts_used):
        labels = ("train", "val", "test")
        raise InputError(f"{group_by or 'groups'}: {len(names)} group{'s' if len(names) != 1 else ''} "
                         f"({_shown(names)}) cannot fill the {len(parts_used)} parts with a fraction above 0 "
                         f"({', '.join(labels[k] for k in parts_used)}); every part needs a whole group")
    sizes = {name: len(members[name]) for name in names}
    targets = [f * len(ids) for f in fractions]
    rng = np.random.default_rng(seed)
    best: tuple[float, dict[str, int]] | None = None
    # One greedy pass over a random order of the groups fits the fractions loosely: over 300 draws
    # of 3-60 groups of 1-11 images, 60/10/30, the parts' sizes were off by 6.3% of the images on
    # average (sum of |size - target|), and by 1.3% keeping the best of 64 seeded orders. A pass
    # costs O(groups), so the tries stay cheap.
    for _ in range(GROUPED_SPLIT_TRIES):
        order = rng.permutation(len(names))
        order_sizes = [sizes[names[i]] for i in order]
        parts = _assign_groups(order_sizes, targets, parts_used)
        deviation = sum(abs(c - t) for c, t in zip(_counts(parts, order_sizes), targets))
        if best is None or deviation < best[0] - 1e-9:
            best = (deviation, {names[i]: part for i, part in zip(order, parts)})
    assert best is not None
    assigned: list[list[str]] = [[], [], []]
    for name in names:
        assigned[best[1][name]].extend(members[name])
    train, val, test = (sorted(a) for a in assigned)
    return Split(train, val, test, seed, fractions, dict(of), group_by)


#: Seeded random orders a grouped split tries, keeping the one whose parts fit the fractions best.
GROUPED_SPLIT_TRIES = 64


def _assign_groups(sizes: Sequence[int], targets: Sequence[float], parts_used: Sequence[int]) -> list[int]:
    """Greedy: each group (in the given order) goes to the part furthest below its target size;
    the last groups go to parts still empty, so every part of ``parts_used`` gets one."""
    counts = [0, 0, 0]
    filled = [False, False, False]
    parts = []
    for index, size in enumerate(sizes):
        empty = [k for k in parts_used if not filled[k]]
        candidates = empty if len(sizes) - index <= len(empty) else parts_used
        part = max(candidates, key=lambda k: (targets[k] - counts[k], -k))  # ties: train first
        parts.append(part)
        counts[part] += size
        filled[part] = True
    return parts


def _counts(parts: Sequence[int], sizes: Sequence[int]) -> list[int]:
    counts = [0, 0, 0]
    for part, size in zip(parts, sizes):
        counts[part] += size
    return counts


def leaking_groups(split: Split) -> dict[str, list[str]]:
    """Groups of a grouped split with ids in more than one part: group -> the parts (empty when none)."""
    if split.groups is None:
        return {}
    seen: dict[str, list[str]] = {}
    for name in ("train", "val", "test"):
        for sample_id in getattr(split, name):
            group = split.groups.get(sample_id)
            if group is not None and name not in seen.setdefault(group, []):
                seen[group].append(name)
    return {g: parts for g, parts in seen.items() if len(parts) > 1}


GROUP_ID_COLUMNS = ("id", "image", "image_id", "sample", "sample_id", "name", "file", "filename")
GROUP_COLUMNS = ("group", "patient", "patient_id", "subject", "video", "slide", "case")


def groups_from_regex(ids: Sequence[str], pattern: str) -> dict[str, str]:
    """The group of each id: the first capture group of ``pattern`` in it (the whole match without one).

    Parameters
    ----------
    ids : sequence of str
    pattern : str
        A regular expression, searched in each id (anchor it with ``^`` to match at the start),
        e.g. ``^(patient\\d+)_`` for ids ``patient07_slice12``.

    Raises
    ------
    InputError
        A pattern that does not compile, that matches no id, or that leaves ids without a group
        (named in the message).
    """
    try:
        regex = re.compile(pattern)
    except re.error as exc:
        raise InputError(f"--group-by: {pattern!r} is neither a file nor a valid regular expression ({exc})") from None
    groups, unmatched = {}, []
    for sample_id in ids:
        found = regex.search(sample_id)
        value = None
        if found is not None:
            value = found.group(1) if regex.groups else found.group(0)
        if not value:
            unmatched.append(sample_id)
        else:
            groups[sample_id] = value
    if not groups:
        raise InputError(f"--group-by: regular expression {pattern!r} matches no image id (ids look like "
                         f"{_shown(sorted(ids)[:3], 3)})")
    if unmatched:
        raise InputError(f"--group-by: regular expression {pattern!r} gives no group for {len(unmatched)} of "
                         f"{len(ids)} ids: {_shown(unmatched)}")
    return groups


def read_groups(path: str | Path, ids: Sequence[str] | None = None) -> dict[str, str]:
    """Read the group of each image id from a CSV, TSV or JSON file.

    Parameters
    ----------
    path : str or Path
        * JSON: an object ``{"ID": "GROUP", ...}``, or an object with such a ``"groups"`` entry
          (so a grouped split file gives its groups again);
        * CSV (``,`` or ``;``) or TSV (``.tsv``, or tabs): one row per image. With two columns,
          ``ID,GROUP`` and an optional header row (a first row whose first cell is not one of
          ``ids``). With more, a header naming the id column (``id``, ``image``, ``name``,
          ``file`` ...) and the group column (``group``, ``patient``, ``video``, ``slide`` ...).
        A file name with a known image suffix (``patient1_03.png``) stands for its stem.
    ids : sequence of str, optional
        The dataset's ids: names that are not ids but whose stem is one are mapped to it, and a
        two-column header is recognised. Ids the file does not list are for the caller to
        refuse (:func:`make_split` does).

    Returns
    -------
    dict
        id -> group (both strings).

    Raises
    ------
    InputError
        A file that cannot be read or parsed, rows without a group, or one id given two groups.
    """
    import csv
    import io

    from hitlseg.io import stem_of

    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise InputError(f"{path}: group file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: cannot read the group file ({exc})") from None
    known = set(ids) if ids is not None else None

    def as_id(name: str) -> str:
        name = name.strip()
        if known is not None and name not in known and stem_of(name) in known:
            return stem_of(name)
        return name

    pairs: list[tuple[str, str, str]] = []  # (id, group, where)
    if path.suffix.lower() == ".json" or text.lstrip().startswith("{"):
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise InputError(f"{path}: not a JSON file ({exc})") from None
        if isinstance(data, dict) and isinstance(data.get("groups"), dict):
            data = data["groups"]
        if not isinstance(data, dict) or not all(isinstance(v, (str, int)) and not isinstance(v, bool)
                                                 for v in data.values()):
            raise InputError(f"{path}: a JSON group file must be an object mapping image ids to groups "
                             '(strings or integers), e.g. {"001": "patient1"}')
        pairs = [(as_id(str(k)), str(v).strip(), f"entry {k!r}") for k, v in data.items()]
    else:
        first = next((line for line in text.splitlines() if line.strip()), "")
        if path.suffix.lower() == ".tsv" or "\t" in first:
            delimiter = "\t"
        else:
            delimiter = ";" if first.count(";") > first.count(",") else ","
        rows = [(n, [cell.strip() for cell in row]) for n, row in enumerate(csv.reader(io.StringIO(text), delimiter=delimiter), 1)]
        rows = [(n, row) for n, row in rows if any(row) and not row[0].startswith("#")]
        if not rows:
            raise InputError(f"{path}: the group file is empty")
        header = [cell.lower() for cell in rows[0][1]]
        width = len(header)
        if width < 2:
            raise InputError(f"{path}: a group file needs two columns, image id and group "
                             f"(delimiter {delimiter!r})")
        id_col, group_col = 0, 1
        named_id = next((header.index(c) for c in GROUP_ID_COLUMNS if c in header), None)
        named_group = next((header.index(c) for c in GROUP_COLUMNS if c in header), None)
        if width > 2 and (named_id is None or named_group is None):
            raise InputError(f"{path}: with {width} columns the first row must name the id column "
                             f"({', '.join(GROUP_ID_COLUMNS[:4])} ...) and the group column "
                             f"({', '.join(GROUP_COLUMNS[:4])} ...)")
        if named_id is not None or named_group is not None:
            id_col = named_id if named_id is not None else 1 - named_group
            group_col = named_group if named_group is not None else 1 - named_id
            rows = rows[1:]
        elif known is not None and as_id(rows[0][1][0]) not in known:
            rows = rows[1:]  # a header of two unnamed columns
        for n, row in rows:
            if len(row) <= max(id_col, group_col) or not row[group_col] or not row[id_col]:
                raise InputError(f"{path}: line {n}: needs an image id and a group, got {delimiter.join(row)!r}")
            pairs.append((as_id(row[id_col]), row[group_col], f"line {n}"))
    groups: dict[str, str] = {}
    for sample_id, group, where in pairs:
        if not group:
            raise InputError(f"{path}: {where}: empty group for {sample_id!r}")
        if sample_id in groups and groups[sample_id] != group:
            raise InputError(f"{path}: {where}: {sample_id!r} is given two groups, {groups[sample_id]!r} and {group!r}")
        groups[sample_id] = group
    if not groups:
        raise InputError(f"{path}: the group file lists no image")
    return groups


def resolve_groups(group_by: str, ids: Sequence[str]) -> dict[str, str]:
    """Groups of ``ids`` from ``--group-by``: a group file (CSV, TSV, JSON) when one exists at that path,
    else a regular expression over the ids (:func:`groups_from_regex`).

    A value that looks like a file name (ends in ``.csv``, ``.tsv``, ``.json`` or ``.txt``) but
    names no file is an error, not a pattern, and so is a folder. The file must list no id that
    is not one of ``ids`` (a misspelt name would otherwise go unnoticed); ids it leaves out are
    refused by :func:`make_split`.
    """
    path = Path(group_by)
    looks_like_file = re.search(r"\.(csv|tsv|json|txt)$", group_by, re.IGNORECASE) is not None

    def exists(test) -> bool:
        try:
            return test()
        except (OSError, ValueError):  # a pattern too long or odd for a path (a NUL byte)
            return False

    if exists(path.is_dir):
        raise InputError(f"{group_by}: is a folder; --group-by takes a CSV/TSV/JSON file or a regular expression")
    if exists(path.is_file):
        groups = read_groups(path, ids)
        wanted = set(ids)
        if not wanted & set(groups):
            raise InputError(f"{path}: the group file lists none of the {len(wanted)} image ids "
                             f"(ids look like {_shown(sorted(ids)[:3], 3)})")
        unknown = sorted(set(groups) - wanted)
        if unknown:
            raise InputError(f"{path}: {len(unknown)} ids of the group file are not images of the dataset: "
                             f"{_shown(unknown)} (remove them, or fix their names)")
        return groups
    if looks_like_file:
        raise InputError(f"{group_by}: group file not found")
    return groups_from_regex(ids, group_by)


def describe(dataset: Dataset, progress=None, decode: bool = True) -> dict:
    """Summary of a dataset: counts, image shapes, channels, classes, and files missing or ignored.

    Reads every image (only its header with ``decode=False``), every mask (masks give the
    classes, checked by :func:`task_classes`) and every marker file; corrupt files raise
    :class:`InputError` naming the file.
    """
    from collections import Counter

    from hitlseg.io import peek_image
    from hitlseg.progress import report

    shapes: Counter = Counter()
    channels: Counter = Counter()
    classes: set[int] = set()
    labels: dict[str, np.ndarray] = {}
    samples = list(dataset)
    for done, sample in enumerate(samples):
        report(progress, done, len(samples), sample.id)
        n_channels, shape = peek_image(sample.image_paths)
        shapes[shape] += 1
        channels[n_channels] += 1
        if decode:
            dataset.image(sample.id)  # content, not only headers: truncated files, wrong formats, no finite value
        mask = dataset.mask(sample.id, shape)
        if mask is not None:
            labels[str(sample.mask_path)] = np.unique(mask)
            classes.update(int(v) for v in labels[str(sample.mask_path)])
        if sample.markers_path is not None:
            dataset.markers(sample.id, shape)
    report(progress, len(samples), len(samples), "")
    task_classes(labels)
    split = dataset.predefined_split()
    return {
        "root": str(dataset.root),
        "samples": len(samples),
        "dimensions": sorted({len(s) for s in shapes}),
        "shapes": {"x".join(map(str, s)): n for s, n in sorted(shapes.items())},
        "channels": sorted(channels),
        "classes": sorted(classes),
        "with_masks": sum(s.mask_path is not None for s in samples),
        "with_markers": sum(s.markers_path is not None for s in samples),
        "without_mask": [s.id for s in samples if s.mask_path is None],
        "without_markers": [s.id for s in samples if s.markers_path is None],
        "ignored": [{"path": str(p), "reason": r} for p, r in dataset.ignored],
        "predefined_split": None if split is None else {k: len(v) for k, v in split.to_dict().items() if k in ("train", "val", "test")},
    }
