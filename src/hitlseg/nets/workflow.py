"""From a dataset folder to a trained model and predicted masks: the steps the CLI and benchmarks share.

These functions read datasets and write predictions (through :mod:`hitlseg.io`); the training
and inference they call stay pure.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Sequence

import numpy as np

from hitlseg.dataset import Dataset, Split, make_split, reading_options
from hitlseg.errors import InputError
from hitlseg.flim.encoder import FLIMEncoder
from hitlseg.flim.spec import ArchSpec
from hitlseg.progress import Progress, report

ROBOT_IMAGES = 5


def parse_encoder(spec: str) -> tuple[str, str | None]:
    """``"backprop"`` -> ``("backprop", None)``; ``"flim:robot"``, ``"flim:markers"``, ``"flim:PATH"`` -> ``("flim", ...)``."""
    spec = (spec or "").strip()
    if spec == "backprop":
        return "backprop", None
    if spec.startswith("flim:") and len(spec) > len("flim:"):
        return "flim", spec[len("flim:"):]
    raise InputError(f"--encoder: expected 'backprop', 'flim:robot', 'flim:markers' or 'flim:MODEL_FILE', got {spec!r}")


def resolve_split(dataset: Dataset, split_path: str | Path | None = None, seed: int = 0,
                  labels: str = "masks") -> tuple[Split, str]:
    """The split to train with and where it came from.

    A split file (every id must be a sample of ``dataset``), else the dataset's predefined
    train/validation/test folders, else :func:`hitlseg.dataset.make_split` over the samples that
    have masks (``labels="masks"``) or over every sample (``labels="markers"``: no mask needed).
    """
    if split_path is not None:
        return Split.load(split_path, dataset), str(split_path)
    split = dataset.predefined_split()
    if split is not None:
        return split, "predefined"
    ids = dataset.with_masks() if labels == "masks" else dataset.ids
    if not ids:
        raise InputError(f"{dataset.root}: no sample has a mask, so there is nothing to train on "
                         f"(to learn from strokes alone use --labels markers)")
    return make_split(ids, seed=seed), f"make_split(seed={seed})"


def load_pairs(dataset: Dataset, ids: Sequence[str], role: str = "training", progress: Progress = None
               ) -> list[tuple[np.ndarray, np.ndarray]]:
    """(image, mask) arrays of ``ids``; a sample without a mask raises :class:`InputError` naming it."""
    missing = [i for i in ids if dataset.sample(i).mask_path is None]
    if missing:
        shown = ", ".join(missing[:5]) + (" ..." if len(missing) > 5 else "")
        raise InputError(f"{dataset.root}: {len(missing)} {role} samples have no mask: {shown}")
    pairs = []
    for done, sample_id in enumerate(ids):
        report(progress, done, len(ids), f"loading {sample_id}")
        loaded = dataset.load(sample_id)
        pairs.append((loaded.image, loaded.mask))
    report(progress, len(ids), len(ids), "loaded")
    return pairs


def n_classes_of(pairs: Sequence[tuple[np.ndarray, np.ndarray]], names: Sequence[str] | None = None,
                 n_classes: int | None = None) -> int:
    """Object classes of the masks of ``pairs`` by the one dataset rule (:func:`hitlseg.dataset.task_classes`)."""
    from hitlseg.dataset import task_classes

    names = list(names) if names is not None else [f"mask {i}" for i in range(len(pairs))]
    return task_classes({name: np.unique(mask) for name, (_, mask) in zip(names, pairs)}, n_classes)


def robot_encoder(pairs: Sequence[tuple[np.ndarray, np.ndarray]], *, n_images: int = ROBOT_IMAGES, seed: int = 0,
                  arch: ArchSpec | None = None, device=None, progress: Progress = None) -> tuple[FLIMEncoder, list[int]]:
    """A FLIM encoder learned from robot markers (:func:`hitlseg.robot.markers_from_mask`) on ``n_images`` of ``pairs``.

    The images are drawn with ``seed``; returns the encoder and their indices in ``pairs``.
    """
    from hitlseg.flim.fit import fit_encoder
    from hitlseg.robot import markers_from_mask

    if not pairs:
        raise InputError("training set: empty, no image to draw markers on")
    chosen = sorted(int(i) for i in np.random.default_rng(seed).choice(len(pairs), min(n_images, len(pairs)), replace=False))
    markers = [markers_from_mask(pairs[i][1], rng=np.random.default_rng([seed, i])) for i in chosen]
    encoder = fit_encoder([pairs[i][0] for i in chosen], markers, arch, seed=seed, device=device, progress=progress)
    return encoder, chosen


def markers_encoder(dataset: Dataset, ids: Sequence[str], *, seed: int = 0, arch: ArchSpec | None = None, device=None,
                    progress: Progress = None) -> tuple[FLIMEncoder, list[str]]:
    """A FLIM encoder learned from the marker files of the samples ``ids`` that have them."""
    from hitlseg.flim.fit import fit_encoder

    marked = [i for i in ids if dataset.sample(i).markers_path is not None]
    if not marked:
        raise InputError(f"{dataset.root}: no training sample has markers (use --encoder flim:robot or backprop)")
    images, markers = [], []
    for sample_id in marked:
        loaded = dataset.load(sample_id)
        images.append(loaded.image)
        markers.append(loaded.markers)
    return fit_encoder(images, markers, arch, seed=seed, device=device, names=marked, progress=progress), marked


def load_strokes(dataset: Dataset, ids: Sequence[str], progress: Progress = None
                 ) -> tuple[list[str], list[np.ndarray], list[np.ndarray], list[str]]:
    """The samples of ``ids`` with marker files (ids, images, markers) and the ids of the others.

    Reads images and marker files only: no mask file is opened.
    """
    marked, images, markers = [], [], []
    for done, sample_id in enumerate(ids):
        report(progress, done, len(ids), f"reading markers of {sample_id}")
        if dataset.sample(sample_id).markers_path is None:
            continue
        image, _ = dataset.image(sample_id)
        marks = dataset.markers(sample_id, image.shape[1:])
        if not marks.any():
            continue
        marked.append(sample_id)
        images.append(image)
        markers.append(marks)
    if not marked:
        raise InputError(f"{dataset.root}: no training sample has markers (draw some, or write the simulated "
                         f"annotator's with 'hitlseg robot mark')")
    others = [i for i in ids if i not in set(marked)]
    return marked, images, markers, others


class LazyImages:
    """Images of ``ids`` read on access (a pool that need not fit in memory); no mask is read."""

    def __init__(self, dataset: Dataset, ids: Sequence[str]):
        self.dataset = dataset
        self.ids = list(ids)

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int) -> np.ndarray:
        return self.dataset.image(self.ids[index])[0]


def evaluate_model(model, pairs: Sequence[tuple[np.ndarray, np.ndarray]], names: Sequence[str] | None = None) -> dict:
    """Dice per class (1..K) averaged over images, their mean, and inference seconds per image."""
    from hitlseg.metrics import dice_per_class

    labels = list(range(1, model.n_classes + 1))
    scores, seconds = [], 0.0
    for index, (image, mask) in enumerate(pairs):
        started = time.perf_counter()
        prediction = model.predict(image, name=names[index] if names is not None else f"image {index}")
        seconds += time.perf_counter() - started
        scores.append(dice_per_class(prediction.labels, mask, labels=labels))
    per_class = {c: float(np.mean([s[c] for s in scores])) if scores else float("nan") for c in labels}
    return {"dice": per_class, "mean_dice": float(np.mean(list(per_class.values()))) if scores else float("nan"),
            "images": len(pairs), "seconds_per_image": seconds / max(1, len(pairs))}


def open_images(folder: str | Path, preprocessing: dict) -> Dataset:
    """A folder of images (``DIR/*.png|nii.gz``) or a dataset folder, read with the model's ``preprocessing``.

    A model with a working resolution (``preprocessing["max_side"]``) reads every image at it.
    """
    from hitlseg.io import is_image_file

    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"{folder}: images folder not found")
    options = reading_options(preprocessing)
    if not (folder / "images").is_dir() and any(is_image_file(p) for p in folder.iterdir()):
        return Dataset.from_parts(folder, **options)
    return Dataset.from_folder(folder, **options)


def fit_shape_model(model, dataset: Dataset, ids: Sequence[str], class_index: int, *, from_masks: bool = False,
                    progress: Progress = None):
    """An active shape model of class ``class_index`` (:class:`hitlseg.refine.ShapeModel`) for ``ids``.

    From their masks with ``from_masks``; otherwise from ``model``'s confident predictions on
    them (:meth:`~hitlseg.refine.ShapeModel.fit_predictions`: no mask is read).
    """
    from hitlseg.refine import ShapeModel

    ids = list(ids)
    if from_masks:
        pairs = load_pairs(dataset, ids, "shape-model", progress)
        return ShapeModel.fit([mask for _, mask in pairs], class_index)

    def probabilities():
        for done, sample_id in enumerate(ids):
            report(progress, done, len(ids), f"predicting {sample_id} for the shape model")
            image, _ = dataset.image(sample_id)
            yield model.predict(image, name=sample_id, postprocess="none").probabilities
        report(progress, len(ids), len(ids), "shape model")

    return ShapeModel.fit_predictions(probabilities(), class_index)


def fit_corrective_model(model, dataset: Dataset, ids: Sequence[str], *, seed: int = 0, progress: Progress = None):
    """A corrective model (:class:`hitlseg.refine.CorrectiveModel`) of ``model``'s errors on ``ids`` (with masks)."""
    from hitlseg.refine import CorrectiveModel

    pairs = load_pairs(dataset, list(ids), "corrective-training", progress)
    probabilities = []
    for done, (image, _) in enumerate(pairs):
        report(progress, done, len(pairs), "predicting for corrective learning")
        probabilities.append(model.predict(image, postprocess="none").probabilities)
    report(progress, len(pairs), len(pairs), "fitting the corrective model")
    return CorrectiveModel.fit([image for image, _ in pairs], probabilities, [mask for _, mask in pairs], seed=seed)


def back_to_file_grid(labels: np.ndarray, probabilities: np.ndarray, meta, *, refined: bool = False):
    """Labels and probabilities predicted at a working resolution, on the input file's own grid.

    The probabilities are interpolated linearly and the labels are their arg-max, unless the
    labels were ``refined`` (then nearest neighbour keeps the refiner's decision). Unchanged when
    the image was read at its own size.
    """
    from hitlseg.io.resample import resample_labels, resample_probabilities

    shape = tuple(meta.spatial_shape)
    if tuple(labels.shape) == shape:
        return labels, probabilities
    probabilities = resample_probabilities(probabilities, shape)
    labels = resample_labels(labels, shape) if refined else probabilities.argmax(0).astype(labels.dtype)
    return labels, probabilities


def predict_sample(sample_id: str, *, model, dataset: Dataset, refine: str | None = None,
                   refine_options: dict | None = None, rule: str = "none", probabilities: bool = False):
    """One image of ``dataset`` predicted (and refined, post-processed) on its file's grid.

    The per-image work of :func:`predict_dataset`, a pure function so that it can run as a task
    of :class:`hitlseg.parallel.Executor`. Returns ``(labels, probabilities or None, meta)``.
    """
    from hitlseg.nets.postprocess import postprocess as apply_postprocess
    from hitlseg.refine import refine as refine_labels

    image, meta = dataset.image(sample_id)
    name = str(dataset.sample(sample_id).image_paths[0])
    prediction = model.predict(image, name=name, postprocess="none")
    labels, probs = prediction.labels, prediction.probabilities
    if refine is not None:
        try:
            labels = refine_labels(image, probs, refine, **(refine_options or {}))
        except InputError as exc:
            raise InputError(f"{name}: {exc}") from None
    if rule == "agree":  # on the model's grid, where the FLIM decoder's mask is computed
        labels = model.postprocess_labels(image, labels, rule)
    labels, probs = back_to_file_grid(labels, probs, meta, refined=refine is not None)
    labels = apply_postprocess(labels, rule) if rule not in ("none", "agree") else labels
    return labels, (probs if probabilities else None), meta


def predict_dataset(model, dataset: Dataset, out: str | Path, ids: Sequence[str] | None = None, *,
                    probabilities: bool = False, preview: bool = False, postprocess: str | None = None,
                    refine: str | None = None, refine_options: dict | None = None,
                    executor=None, progress: Progress = None) -> list[Path]:
    """Predict every sample (or ``ids``) and write label masks to ``out`` in each input's format and geometry.

    With ``probabilities``, also writes ``out/probabilities/ID_classK`` (K = 1..n_classes) as
    float32 TIFF for 2D inputs and NIfTI (same geometry) for volumes (the network's, before any
    refinement). With ``preview``, also ``out/previews/ID.preview.png``: the mask in class colours
    (:mod:`hitlseg.io.preview`), since label files of 0, 1, 2 look black in ordinary viewers.
    ``refine`` names a refiner of :data:`hitlseg.refine.REFINERS` applied to each prediction
    with ``refine_options`` (``model=`` for ``"shape"`` and ``"corrective"``); ``postprocess``
    (default: the model's rule, :mod:`hitlseg.nets.postprocess`) applies after it. With a
    distributed ``executor`` (:class:`hitlseg.parallel.Executor`) the images are predicted on its
    workers (the model and the dataset shipped once, the workers reading the files) and written
    here; the masks are the same.
    """
    from hitlseg.io.preview import preview_png
    from hitlseg.nets.postprocess import check_postprocess
    from hitlseg.project.files import atomic_write
    from hitlseg.io import output_name, write_array
    from hitlseg.refine import REFINERS

    if refine is not None and refine not in REFINERS:
        raise InputError(f"refine: unknown refiner {refine!r}; valid: {', '.join(REFINERS)}")
    rule = model.postprocess if postprocess is None else check_postprocess(postprocess)
    out = Path(out)
    ids = list(dataset.ids if ids is None else ids)
    options = {"refine": refine, "refine_options": refine_options, "rule": rule, "probabilities": probabilities}
    if executor is not None and executor.distributed:
        results = executor.map(predict_sample, ((i, (i,)) for i in ids), total=len(ids), progress=progress,
                               message="predicting", shared={"model": model, "dataset": dataset, **options})
    else:  # in this process, with torch's own thread setting
        def here():
            for done, sample_id in enumerate(ids):
                report(progress, done, len(ids), sample_id)
                yield sample_id, predict_sample(sample_id, model=model, dataset=dataset, **options)
        results = here()
    written = {}
    for sample_id, (labels, probs, meta) in results:
        written[sample_id] = write_array(out / output_name(sample_id, meta), labels, meta)
        if preview:
            data = preview_png(labels)
            atomic_write(out / "previews" / f"{sample_id}.preview.png", lambda handle, data=data: handle.write(data))
        if probabilities:
            suffix = meta.format if meta.format in (".nii", ".nii.gz") else ".tif"
            for k in range(1, probs.shape[0]):
                write_array(out / "probabilities" / f"{sample_id}_class{k}{suffix}", probs[k], meta)
    report(progress, len(ids), len(ids), "done")
    return [written[i] for i in ids]
