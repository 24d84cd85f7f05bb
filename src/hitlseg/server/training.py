"""Models of a project, as the model view trains and uses them.

Two kinds, both learned from the project's marked images (latest marker versions) only:

``adaptive``
    A multi-layer FLIM encoder (the default architecture) fitted on the markers, decoded by an
    adaptive decoder (``labels`` by default): no backpropagation, ready in seconds. Stored as
    model kind ``flim``.
``sunet``
    The same FLIM encoder, frozen, with a decoder trained by backpropagation through the strokes
    learner (:func:`hitlseg.pseudo.learn_from_strokes`, the one the CLI and experiments use):
    partial labels on the strokes with the normalized-cut regulariser, then ``self_training``
    iterations of confident pseudo-labels over the project's unmarked images (at most
    ``pool_limit`` of them, evenly spread), the person's strokes always winning; an image reviewed
    in the Improve view (:mod:`hitlseg.server.active`) learns from its accepted mask while its
    markers are the reviewed version. Stored as model kind ``sunet``.

When the project has ground-truth masks, each new model is evaluated on held-out images (images
with a mask that were not marked; at most ``eval_limit`` of them, evenly spread over the project)
and the mean Dice per class is stored with the model.

An image whose file cannot be read (corrupt, truncated, deleted) is skipped wherever training
reads it (marked images, the self-training pool, evaluation; see :mod:`hitlseg.server.reading`):
the model records the skipped images (``params["skipped_images"]``) and the job's result lists
them as ``warnings``. Training fails only when no readable marked image is left.

The marked images together must hold strokes of the background and of at least one object class
(:func:`hitlseg.project.readiness.check_learnable` with ``per_image=False``; an image with only
background strokes is a real negative example, an image without objects):
:meth:`ModelService.check_ready` refuses a training request that lacks one kind, naming the marked
images, before any job starts, and :meth:`ModelService.training_set` checks again in the job.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np

from hitlseg.defaults import DEFAULT_DECODER
from hitlseg.errors import InputError
from hitlseg.progress import Progress, report
from hitlseg.server.imaging import LRU
from hitlseg.server.reading import Skipped, with_warnings
from hitlseg.server.security import NotFoundError

#: Page name -> project model kind.
KINDS = {"adaptive": "flim", "sunet": "sunet"}
DEFAULT_EPOCHS = 25
MAX_EPOCHS = 1000
DEFAULT_SELF_TRAINING = 2
# The web app's adaptive decoder is the one default, hitlseg.defaults.DEFAULT_DECODER. On the
# bundled demo (3 draws of 5 robot-marked images, 60 other images) 'mean' gives cytoplasm / nucleus
# Dice 0.21 / 0.79 and 'labels' 0.13 / 0.78; 'labels' holds in 3D, where 'mean' falls behind.


def never_predicted(labels: list, n_classes: int) -> list[int]:
    """Object classes 1..``n_classes`` that no label map of ``labels`` holds (to warn about; no ground truth)."""
    present = set()
    for array in labels:
        present.update(int(v) for v in np.unique(array))
    return [c for c in range(1, int(n_classes) + 1) if c not in present]
MAX_SELF_TRAINING = 10
POOL_LIMIT = 60
PSEUDO_LABELS = "strokes (partial labels) + confident pseudo-labels of unmarked images (self-training)"


#: Refiners the web app offers on a model's predictions (those that need no trained model).
WEB_REFINERS = ("graphcut", "crf", "levelset")

class ProjectImages:
    """Images of a project read on access: the self-training pool."""

    def __init__(self, project, ids):
        self.project = project
        self.ids = list(ids)

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int) -> np.ndarray:
        return self.project.image(self.ids[index])


class ModelService:
    """Training, prediction and evaluation of the project's models.

    Parameters
    ----------
    project : Project
    classes : int
        Object classes of the project (the labels evaluated are 1..max(classes, the model's)).
    seed : int
        Seed of FLIM fitting and training.
    eval_limit : int
        Largest number of held-out images evaluated after training.
    device : str, optional
        Torch device (default: CUDA when present).
    class_names : list of str, optional
        Names of the object classes, for messages about missing strokes.
    """

    def __init__(self, project, classes: int, *, seed: int = 0, eval_limit: int = 50, device=None,
                 pool_limit: int = POOL_LIMIT, class_names: list[str] | None = None):
        self.project = project
        self.classes = int(classes)
        self.class_names = list(class_names or [])
        self.seed = int(seed)
        self.eval_limit = int(eval_limit)
        self.device = device
        self.pool_limit = int(pool_limit)
        self._models = LRU(4)
        self._labels = LRU(256, max_bytes=256 * 2**20)

    # -- training ------------------------------------------------------------------------------
    def training_set(self, skipped: Skipped | None = None, action: str = "train") -> tuple[
            list[str], dict[str, int], list[np.ndarray], list[np.ndarray]]:
        """Marked images: ids, their marker versions, images and markers.

        The images together must hold background and object strokes
        (:func:`hitlseg.project.readiness.check_learnable`, set-wide); images with none are left out.

        Parameters
        ----------
        skipped : Skipped, optional
            Collects the marked images whose image or markers file cannot be read (they are left out).
        action : str
            What is refused when the markers do not allow it (the start of the message).
        """
        from hitlseg.project.readiness import check_learnable

        skipped = Skipped() if skipped is None else skipped
        loaded: dict[str, tuple[int, np.ndarray]] = {}
        for image_id, version in self.project.latest_versions().items():
            try:
                array, _ = self.project.load_markers(image_id, version)
            except InputError as exc:
                skipped.add(image_id, exc, "reading its markers for training")
                continue
            loaded[image_id] = (version, array)
        if not any(array.any() for _, array in loaded.values()) and len(skipped):
            raise InputError(f"{action}: no marked image can be read ({skipped.summary()}); replace or remove the "
                             "damaged files, or mark another image, then train")
        # every marked image holds background and object strokes (else nothing is read or trained)
        marked = check_learnable({image_id: array for image_id, (_, array) in loaded.items()}, self.classes,
                                 self.class_names, per_image=False, action=action)
        ids, versions, images, markers = [], {}, [], []
        for image_id in marked:
            image = skipped.image(self.project, image_id, "reading the marked images for training")
            if image is None:
                continue
            ids.append(image_id)
            versions[image_id], array = loaded[image_id]
            images.append(image)
            markers.append(array)
        if not ids:
            raise InputError(f"{action}: no marked image can be read ({skipped.summary()}); replace or remove the "
                             "damaged files, or mark another image, then train")
        return ids, versions, images, markers

    def check_ready(self, action: str = "train") -> list[str]:
        """The images training would learn from, once together they hold background and object strokes
        (:func:`hitlseg.project.readiness.check_learnable`, set-wide, from the marker history: no array
        is read); raises :class:`InputError` naming what is missing. Called before a training job starts."""
        from hitlseg.project.readiness import check_learnable
        from hitlseg.server.loop import latest_class_counts

        return check_learnable(latest_class_counts(self.project), self.classes, self.class_names, per_image=False,
                               action=action)

    def pool(self, marked: set[str], skipped: Skipped | None = None, progress: Progress = None) -> ProjectImages:
        """Unmarked images for self-training: at most :attr:`pool_limit`, evenly spread over the project.

        Each is read once here, so that an unreadable one is left out (and recorded in ``skipped``)
        before training starts rather than failing it midway.
        """
        skipped = Skipped() if skipped is None else skipped
        ids = [info["id"] for info in self.project.images() if info["id"] not in marked]
        if len(ids) > self.pool_limit:
            picks = np.linspace(0, len(ids) - 1, self.pool_limit).round().astype(int)
            ids = [ids[i] for i in sorted(set(picks.tolist()))]
        readable = []
        for index, image_id in enumerate(ids):
            report(progress, index, len(ids), "checking the unmarked images")
            if skipped.image(self.project, image_id, "reading the unmarked images for self-training") is not None:
                readable.append(image_id)
        return ProjectImages(self.project, readable)

    def train(self, kind: str, epochs: int = DEFAULT_EPOCHS, decoder: str = DEFAULT_DECODER, progress: Progress = None,
              self_training: int = DEFAULT_SELF_TRAINING) -> dict:
        """Train a model of ``kind`` (``"adaptive"`` or ``"sunet"``), store it, evaluate it; returns its record."""
        from hitlseg.flim import FLIMModel
        from hitlseg.flim.decoders import DECODER_CHOICES

        if kind not in KINDS:
            raise InputError(f"kind: unknown model kind {kind!r} (use 'sunet' or 'adaptive')")
        if decoder not in DECODER_CHOICES:
            raise InputError(f"decoder: unknown adaptive decoder {decoder!r} (use one of {', '.join(DECODER_CHOICES)})")
        if isinstance(epochs, bool) or not isinstance(epochs, int) or not 1 <= epochs <= MAX_EPOCHS:
            raise InputError(f"epochs: must be an integer in 1..{MAX_EPOCHS}, got {epochs!r}")
        if isinstance(self_training, bool) or not isinstance(self_training, int) or not 0 <= self_training <= MAX_SELF_TRAINING:
            raise InputError(f"self_training: must be an integer in 0..{MAX_SELF_TRAINING}, got {self_training!r}")
        started = time.perf_counter()
        meta = self.project.meta
        preprocessing = {"color": meta.get("color", "lab"), "normalize": meta.get("normalize", "percentile")}
        report(progress, 0, 1, "loading marked images")
        skipped = Skipped()
        ids, versions, images, markers = self.training_set(skipped)
        params = {"kind": kind, "images": versions, "seed": self.seed, "decoder": decoder}

        def step(name):
            return lambda done, total, message="": report(progress, done, total, f"{name}: {message}".rstrip(": "))

        flim = FLIMModel.fit(images, markers, seed=self.seed, device=self.device, names=ids,
                             preprocessing=preprocessing, decoder=decoder, progress=step("learning FLIM filters"))
        params["n_classes"] = flim.n_classes
        params["decoder"] = flim.decoder
        if flim.decoder_scores:
            params["decoder_marker_recall"] = flim.decoder_scores
        with tempfile.TemporaryDirectory(prefix="hitlseg-model-") as folder:
            if kind == "adaptive":
                path = flim.save(Path(folder) / "model.pt")
                predictor = lambda image: flim.predict(image).mask  # noqa: E731
            else:
                from hitlseg.pseudo import SelfTrainingConfig, default_strokes_config, learn_from_strokes

                from hitlseg.server.active import accepted_masks

                pool = self.pool(set(ids), skipped, progress)
                accepted = accepted_masks(self.project, ids, versions)  # reviewed in the Improve view
                result = learn_from_strokes(
                    images, markers, pool, encoder=flim.encoder, n_classes=flim.n_classes, accepted=accepted,
                    config=default_strokes_config(images[0].ndim - 1, epochs=epochs, seed=self.seed, device=self.device),
                    self_training=SelfTrainingConfig(iterations=self_training, epochs=max(1, epochs // 5)),
                    preprocessing=preprocessing, names=ids, pool_names=pool.ids, seed=self.seed, device=self.device,
                    progress=step("training the sU-Net decoder"))
                model = result.model
                model.info.update({"project": str(self.project.root), "images": versions, "pseudo_labels": PSEUDO_LABELS})
                path = model.save(Path(folder) / "model.pt")
                params.update(epochs=epochs, self_training=self_training, pseudo_labels=PSEUDO_LABELS,
                              accepted={i: versions[i] for i, a in zip(ids, accepted) if a is not None},
                              iterations=[{"iteration": h["iteration"], "pool_images": h["pool_images"],
                                           "machine_labelled": round(h["machine_labelled"], 4), "loss": round(h["loss"], 5)}
                                          for h in result.history], stopped=result.stopped)
                predictor = lambda image: model.predict(image).labels  # noqa: E731
            metrics = self._evaluate(predictor, flim.n_classes, set(ids), progress, skipped)
            never = never_predicted([predictor(image) for image in images], flim.n_classes)
            if never:
                params["never_predicted"] = never
            params["seconds"] = round(time.perf_counter() - started, 2)
            if len(skipped):
                params["skipped_images"] = dict(skipped.reasons)
            model_id = self.project.add_model(KINDS[kind], path, params, metrics)
        report(progress, 1, 1, "done")
        result = with_warnings(self.record(model_id), skipped)
        if never:
            names = ", ".join(self._class_name(c) for c in never)
            other = "'labels'" if flim.decoder == "mean" else "'mean'"
            advice = (f"try the {other} decoder or an sU-Net" if kind == "adaptive" else "mark more strokes of it")
            what = f"decoder {flim.decoder!r}" if kind == "adaptive" else "the sU-Net"
            result = {**result, "warnings": list(result.get("warnings", [])) + [
                f"{names}: never predicted on the marked images by {what}; {advice}"]}
        return result

    def _class_name(self, c: int) -> str:
        name = self.class_names[c - 1] if 0 < c <= len(self.class_names) else None
        return f"class {c} {name!r}" if name and name.lower() != f"class {c}" else f"class {c}"

    def _evaluate(self, predictor, n_classes: int, exclude: set[str], progress: Progress,
                  skipped: Skipped | None = None) -> dict:
        from hitlseg.metrics import dice_per_class

        skipped = Skipped() if skipped is None else skipped
        held_out = [info["id"] for info in self.project.images() if info["has_mask"] and info["id"] not in exclude]
        if not held_out:
            return {}
        if len(held_out) > self.eval_limit:
            picks = np.linspace(0, len(held_out) - 1, self.eval_limit).round().astype(int)
            held_out = [held_out[i] for i in sorted(set(picks.tolist()))]
        labels = list(range(1, max(n_classes, self.classes) + 1))
        scores = []
        for index, image_id in enumerate(held_out):
            report(progress, index, len(held_out), "evaluating on held-out images with ground truth")
            image = skipped.image(self.project, image_id, "evaluating on held-out images")
            if image is None:
                continue
            try:
                mask = self.project.mask(image_id)
            except InputError as exc:
                skipped.add(image_id, exc, "reading its ground-truth mask for evaluation")
                continue
            scores.append(dice_per_class(predictor(image), mask, labels=labels))
        if not scores:
            return {}
        per_class = {str(c): float(np.mean([s[c] for s in scores])) for c in labels}
        return {"dice": per_class, "mean_dice": float(np.mean(list(per_class.values()))), "images": len(scores),
                "evaluated_on": "held-out images with ground truth (not marked)"}

    # -- using models --------------------------------------------------------------------------
    def record(self, model_id) -> dict:
        """The project's record of a model (404 for an unknown id)."""
        try:
            return self.project.model(model_id)
        except (InputError, OverflowError):  # OverflowError: beyond SQLite's 64-bit integers
            raise NotFoundError(f"model {model_id!r} not found in this project") from None

    def load(self, model_id: int):
        """The model object (FLIMModel or SegModel), cached."""
        record = self.record(model_id)
        cached = self._models.get(model_id)
        if cached is None:
            path = self.project.model_path(model_id)
            if record["kind"] == "flim":
                from hitlseg.flim import FLIMModel

                cached = FLIMModel.load(path, device=self.device)
            elif record["kind"] in ("sunet", "unet"):
                from hitlseg.nets import SegModel

                cached = SegModel.load(path, device=self.device)
            else:
                raise InputError(f"model {model_id}: kind {record['kind']!r} cannot predict in the web interface")
            self._models.put(model_id, cached)
        return cached

    def labels(self, model_id: int, image_id: str, refine: str | None = None) -> np.ndarray:
        """Predicted label mask of ``image_id`` by model ``model_id`` (cached).

        ``refine`` (one of :data:`WEB_REFINERS`) refines an sU-Net's probabilities
        (:func:`hitlseg.refine.refine`, default settings, the model's postprocessing after it);
        the adaptive FLIM decoders give no probabilities and are refused (:class:`InputError`).
        """
        if refine is not None and refine not in WEB_REFINERS:
            raise InputError(f"refine: expected one of {', '.join(WEB_REFINERS)}, got {refine!r}")
        key = (model_id, image_id, refine)
        cached = self._labels.get(key)
        if cached is None:
            model = self.load(model_id)
            image = self.project.image(image_id)
            if hasattr(model, "encoder") and not hasattr(model, "net"):
                if refine is not None:
                    raise InputError(f"refine: model {model_id} is an adaptive FLIM decoder, which gives no class "
                                     f"probabilities to refine; refine an sU-Net's predictions")
                cached = np.asarray(model.predict(image).mask, dtype=np.uint8)
            elif refine is None:
                cached = np.asarray(model.predict(image, name=image_id).labels, dtype=np.uint8)
            else:
                from hitlseg.refine import refine as refine_labels

                probabilities = model.predict(image, name=image_id, postprocess="none").probabilities
                labels = refine_labels(image, probabilities, refine)
                if model.postprocess != "none":
                    labels = model.postprocess_labels(image, labels)
                cached = np.asarray(labels, dtype=np.uint8)
            self._labels.put(key, cached)
        return cached

    def metrics(self, model_id: int, image_id: str | None = None, refine: str | None = None) -> dict:
        """Stored metrics of a model; with ``image_id``, also that image's Dice when it has a mask
        (of the prediction refined by ``refine``, when given)."""
        record = self.record(model_id)
        data = {"model_id": record["id"], "kind": record["kind"], "metrics": record["metrics"]}
        if image_id is not None:
            from hitlseg.metrics import dice_per_class

            mask = self.project.mask(image_id)
            if mask is None:
                data["image"] = {"image_id": image_id, "has_mask": False}
            else:
                n = max(int(record["params"].get("n_classes", 1)), self.classes)
                dice = dice_per_class(self.labels(model_id, image_id, refine), mask, labels=range(1, n + 1))
                data["image"] = {"image_id": image_id, "has_mask": True, "dice": {str(k): v for k, v in dice.items()},
                                 "mean_dice": float(np.mean(list(dice.values())))}
        return data

    def mask_file(self, model_id: int, image_id: str) -> tuple[bytes, str, str]:
        """The predicted mask written in the input's format: (bytes, file name, media type)."""
        from hitlseg.io import output_name, read_image, write_array
        from hitlseg.project.files import safe_name

        labels = self.labels(model_id, image_id)
        info = self.project.image_info(image_id)
        meta = self.project.meta
        _, image_meta = read_image(info["paths"], color=meta.get("color", "lab"), normalize=meta.get("normalize", "percentile"))
        name = output_name(f"{safe_name(image_id)}_model{int(model_id)}", image_meta)
        with tempfile.TemporaryDirectory(prefix="hitlseg-mask-") as folder:
            path = write_array(Path(folder) / name, labels, image_meta)
            data = path.read_bytes()
        media = {".png": "image/png", ".tif": "image/tiff", ".tiff": "image/tiff", ".nii": "application/octet-stream",
                 ".nii.gz": "application/gzip"}.get(image_meta.format if image_meta.format not in (".jpg", ".jpeg", ".bmp")
                                                    else ".png", "application/octet-stream")
        return data, name, media

    def preview_file(self, model_id: int, image_id: str) -> tuple[bytes, str]:
        """A colour PNG of the predicted mask (3D: a contact sheet of slices), to view beside the label file:
        (bytes, file name)."""
        from hitlseg.io.preview import preview_png
        from hitlseg.project.files import safe_name

        return preview_png(self.labels(model_id, image_id)), f"{safe_name(image_id)}_model{int(model_id)}.preview.png"
