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
from typing import Iterable, Iterator, Sequence

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

    def __init__(self, root: Path, samples: Sequence[Sample], ignored=(), *, color="lab", normalize="percentile"):
        self.root = Path(root)
        self.samples = {s.id: s for s in samples}
        self.ignored: list[tuple[Path, str]] = list(ignored)
        self.color = color
        self.normalize = normalize

    # -- discovery ---------------------------------------------------------------------------
    @classmethod
    def from_folder(cls, root: str | Path, *, color: str = "lab", normalize: str = "percentile") -> "Dataset":
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
        return cls(root, samples, ignored, color=color, normalize=normalize)

    @classmethod
    def from_parts(cls, images_dir: str | Path, masks_dir: str | Path | None = None, markers_dir: str | Path | None = None,
                   *, color: str = "lab", normalize: str = "percentile") -> "Dataset":
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
        return cls(images_dir, samples, ignored, color=color, normalize=normalize)

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
        """Image ``(C, *spatial)`` float32 and its metadata."""
        return read_image(self.sample(sample_id).image_paths, color=self.color, normalize=self.normalize)

    def mask(self, sample_id: str, shape: tuple[int, ...] | None = None) -> np.ndarray | None:
        """Integer mask, or None when the sample has none; checked against ``shape`` if given."""
        sample = self.sample(sample_id)
        if sample.mask_path is None:
            return None
        mask, _ = read_mask(sample.mask_path)
        if shape is not None and tuple(mask.shape) != tuple(shape):
            image_name = sample.image_paths[0]
            raise InputError(f"{sample.mask_path}: mask shape {mask.shape} differs from image {image_name} shape {tuple(shape)}")
        return mask

    def markers(self, sample_id: str, shape: tuple[int, ...] | None = None) -> np.ndarray | None:
        """Marker labels, or None when the sample has no marker file."""
        sample = self.sample(sample_id)
        if sample.markers_path is None:
            return None
        return read_markers(sample.markers_path, shape)

    def load(self, sample_id: str) -> LoadedSample:
        """Image, mask and markers of one sample, with shapes checked against each other."""
        image, meta = self.image(sample_id)
        shape = image.shape[1:]
        return LoadedSample(sample_id, image, meta, self.mask(sample_id, shape), self.markers(sample_id, shape))

    def subset(self, ids: Sequence[str]) -> "Dataset":
        """A dataset of the given sample ids (each must exist)."""
        return Dataset(self.root, [self.sample(i) for i in ids], color=self.color, normalize=self.normalize)

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
    """Sample ids of the training, validation and test sets."""

    train: list[str]
    val: list[str]
    test: list[str]
    seed: int | None = 0
    fractions: tuple[float, float, float] = field(default=(0.6, 0.1, 0.3))

    def to_dict(self) -> dict:
        """JSON-ready dictionary."""
        return {"train": self.train, "val": self.val, "test": self.test, "seed": self.seed, "fractions": list(self.fractions)}

    def save(self, path: str | Path) -> Path:
        """Write the split as JSON, atomically."""
        from hitlseg.project.files import write_json

        return write_json(path, self.to_dict(), indent=2)

    @classmethod
    def load(cls, path: str | Path, dataset: Dataset | None = None) -> "Split":
        """Read a split written by :meth:`save`; with ``dataset``, every id must be one of its samples."""
        path = Path(path)
        try:
            data = json.loads(path.read_text())
            split = cls(list(data["train"]), list(data["val"]), list(data["test"]), data.get("seed"),
                        tuple(data.get("fractions", (0.6, 0.1, 0.3))))
        except FileNotFoundError:
            raise InputError(f"{path}: split file not found") from None
        except (ValueError, KeyError, TypeError) as exc:
            raise InputError(f"{path}: not a split file (needs JSON lists 'train', 'val', 'test'): {exc}") from exc
        all_ids = split.train + split.val + split.test
        if len(set(all_ids)) != len(all_ids):
            raise InputError(f"{path}: a sample id appears in more than one part of the split")
        if dataset is not None:
            missing = [i for i in all_ids if i not in dataset]
            if missing:
                shown = ", ".join(missing[:5]) + (" ..." if len(missing) > 5 else "")
                raise InputError(f"{path}: {len(missing)} ids are not samples of {dataset.root}: {shown}")
        return split


def make_split(ids: Sequence[str], fractions: Sequence[float] = (0.6, 0.1, 0.3), seed: int = 0) -> Split:
    """Shuffle ``ids`` with ``seed`` and cut them into train/validation/test parts.

    Parameters
    ----------
    ids : sequence of str
        Sample ids.
    fractions : three floats
        Fractions of train, validation and test; they must sum to 1.
    seed : int
        Seed of the shuffle: the same seed and ids give the same split.
    """
    fractions = tuple(float(f) for f in fractions)
    if len(fractions) != 3 or min(fractions) < 0 or abs(sum(fractions) - 1) > 1e-6:
        raise InputError(f"fractions: need three non-negative numbers summing to 1, got {fractions}")
    ids = sorted(ids)
    if len(ids) < 3:
        raise InputError(f"ids: a split needs at least 3 samples, got {len(ids)}")
    order = np.random.default_rng(seed).permutation(len(ids))
    shuffled = [ids[i] for i in order]
    n = len(ids)
    n_val = max(1, int(round(fractions[1] * n))) if fractions[1] > 0 else 0
    n_test = max(1, int(round(fractions[2] * n))) if fractions[2] > 0 else 0
    n_train = n - n_val - n_test
    if n_train < 1:
        raise InputError(f"ids: {n} samples are too few for fractions {fractions}")
    return Split(shuffled[:n_train], shuffled[n_train : n_train + n_val], shuffled[n_train + n_val :], seed, fractions)


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
