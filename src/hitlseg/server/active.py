"""The Improve view's server side: propose the next image to correct, start from the prediction,
retrain warm-started, and the record of quality and effort per round.

Everything is a :mod:`hitlseg.active` / :mod:`hitlseg.pseudo` library call; this module only
reads and writes the project:

* a proposal (:func:`hitlseg.active.propose`) is a job; its result is logged as an
  ``active_proposal`` event, so the view shows it again after a reload;
* "start from the prediction" saves the prediction's confident pixels (confidence above 0.95,
  and at least the surer half of each predicted class: :func:`hitlseg.pseudo.confident_prediction`)
  as a new marker version under the person's strokes, which then correct it in the editor (by
  the save rule of :mod:`hitlseg.project.readiness`: never an empty first version, and no new
  version when the prediction adds nothing);
* "review with a graph cut" (:func:`hitlseg.active.review.reviewed_mask`) cuts the model's
  probabilities with every stroke of the image's latest marker version as a hard constraint and
  stores the result as the image's accepted mask for that version (an array of the project and an
  ``accepted_mask`` event); the person may correct again in the editor and review again. Retraining
  trains an image on its accepted mask while its markers are still that version (strokes weighted
  as the person's, the rest as machine labels), as the study loop does with ``review_passes``;
* the editor reports the seconds spent on each save (``annotation_time`` events); they are the
  person's effort and the knapsack strategy's cost records;
* "retrain from scratch" trains a fresh sU-Net on the same labels (the study loop's refresh,
  :meth:`hitlseg.active.ActiveLoop.refresh`): new filters, 50 epochs on the strokes and five
  self-training iterations; slower than a round, better where the rounds drifted and worse where
  they did not (the new model keeps its parent's round and is marked ``fresh``);
* a retraining round continues the chosen sU-Net (warm start: no new filters) on every marked
  image, straight to one self-training iteration over the unmarked images, with the person's
  strokes weighted above pseudo-labels; the new model records its parent, its round, the effort
  so far and, besides held-out Dice where ground truth exists, the model's own mean confidence on
  unmarked images (what a person without ground truth can follow).

An image whose file cannot be read is skipped by proposals, effort records, confidence and
retraining (listed in the job's ``warnings``, see :mod:`hitlseg.server.reading`). Retraining is
refused before its job starts (:meth:`ImproveService.check_retrain`) when the marked images lack
background or object strokes, as training is.
"""

from __future__ import annotations

import hashlib
import tempfile
import time
from pathlib import Path

import numpy as np

from hitlseg.errors import ConflictError, InputError
from hitlseg.progress import Progress, report
from hitlseg.project.readiness import check_saveable
from hitlseg.server.reading import Skipped, with_warnings

PROPOSAL_EVENT = "active_proposal"
TIME_EVENT = "annotation_time"
ACCEPTED_EVENT = "accepted_mask"
ACCEPTED_KIND = "accepted"  # project arrays: one accepted mask per image and marker version
STRATEGIES = ("entropy", "margin", "least_confidence", "bald", "consistency", "coreset", "suggestive", "knapsack",
              "dasl", "fg_random", "random")
#: "Start from the prediction" keeps the pixels predicted with confidence above this...
ACCEPT_DELTA = 0.95
#: ...and at least this fraction of each predicted class (the surer part), however unsure the model.
ACCEPT_KEEP = 0.5
#: Lower than the study loop's 50 (hitlseg.active.ActiveConfig): in the web app an accepted
#: prediction's confident pixels count as the person's too, errors included.
PERSON_WEIGHT = 10.0
CONFIDENCE_LIMIT = 30
#: "Retrain from scratch": the study loop's refresh recipe (hitlseg.active.ActiveLoop.refresh).
FRESH_EPOCHS = 50
FRESH_SELF_TRAINING = 5


class ImproveService:
    """Server-side state of the Improve view (see the module docstring)."""

    def __init__(self, project, models, *, seed: int = 0, pool_limit: int = 60, executor=None):
        self.project = project
        #: Scores the pool in tasks on Dask workers when distributed (``hitlseg serve --workers N``).
        self.executor = executor if executor is not None and executor.distributed else None
        self.models = models
        self.seed = int(seed)
        self.pool_limit = int(pool_limit)

    # -- helpers -----------------------------------------------------------------------------------
    def segmodel(self, model_id: int):
        """The project's sU-Net ``model_id`` (the Improve view works with trained networks)."""
        record = self.models.record(model_id)
        if record["kind"] not in ("sunet", "unet"):
            raise InputError(f"model {model_id}: the Improve view needs an sU-Net (this one is {record['kind']!r}); "
                             "train an sU-Net in the Model view first")
        return self.models.load(model_id)

    def marked(self) -> dict[str, int]:
        """``{image_id: latest version}`` of images with at least one marked pixel."""
        from hitlseg.server.loop import marked_versions

        return marked_versions(self.project)

    def cost_records(self, model, skipped: Skipped | None = None) -> list[tuple[list[float], float]]:
        """(cost features of ``model``'s prediction, seconds) of every timed annotation (readable images only)."""
        from hitlseg.active import mask_features

        skipped = Skipped() if skipped is None else skipped
        seconds: dict[str, float] = {}
        for event in self.project.events(kind=TIME_EVENT):
            payload = event["payload"]
            seconds[payload["image_id"]] = seconds.get(payload["image_id"], 0.0) + float(payload["seconds"])
        records = []
        for image_id, total in seconds.items():
            if image_id in self.project and total > 0:
                image = skipped.image(self.project, image_id, "reading the annotation-cost records")
                if image is None:
                    continue
                labels = model.predict(image, name=image_id).labels
                records.append((mask_features(labels).tolist(), total))
        return records

    # -- proposals --------------------------------------------------------------------------------
    def propose(self, model_id: int, strategy: str = "entropy", n: int = 1, progress: Progress = None) -> dict:
        """The next ``n`` images ``strategy`` proposes under model ``model_id``; logged as an event."""
        from hitlseg.active import propose

        if strategy not in STRATEGIES:
            raise InputError(f"strategy: unknown {strategy!r} (use one of {', '.join(STRATEGIES)})")
        model = self.segmodel(model_id)
        report(progress, 0, 1, "reading the images")
        skipped = Skipped()
        images = skipped.images(self.project, self.project.image_ids(), "reading the images to propose from")
        if not images:
            raise InputError(f"propose: no image of the project can be read ({skipped.summary()})")
        options = {"budget": 120.0} if strategy == "knapsack" else {}
        records = self.cost_records(model, skipped) if strategy == "knapsack" else ()
        marked = [image_id for image_id in self.marked() if image_id in images]
        result = propose(model, images, marked, strategy=strategy, n=n, options=options,
                         cost_records=records, seed=self.seed, executor=self.executor, progress=progress)
        result["model_id"] = int(model_id)
        result = with_warnings(result, skipped)
        self.project.record_event(PROPOSAL_EVENT, result)
        report(progress, 1, 1, "done")
        return result

    def last_proposal(self) -> dict | None:
        events = self.project.events(kind=PROPOSAL_EVENT)
        return events[-1]["payload"] if events else None

    # -- correcting --------------------------------------------------------------------------------
    def accept(self, model_id: int, image_id: str, base_version: int) -> dict:
        """Save the prediction's confident pixels as markers under the person's existing strokes."""
        from hitlseg.pseudo import IGNORE, confident_prediction

        model = self.segmodel(model_id)
        probabilities = model.predict(self.project.image(image_id), name=image_id).probabilities
        pseudo = confident_prediction(probabilities, ACCEPT_DELTA, ACCEPT_KEEP)
        current, latest = self.project.load_markers(image_id)
        markers = np.where(pseudo != IGNORE, pseudo.astype(np.int64) + 1, 0)
        markers = np.where(current > 0, current, markers).astype(np.uint8)
        answer = {"image_id": image_id, "n_marked": int((markers > 0).sum()),
                  "confident": float((pseudo != IGNORE).mean())}
        try:
            new = check_saveable(markers, current if latest else None, name=f"image {image_id!r}")
        except InputError as exc:
            raise InputError(f"start from the prediction: model {model_id} keeps no pixel of its prediction and {exc}") from None
        if not new and int(base_version) == latest:  # the prediction adds nothing: no new version
            return answer | {"version": latest, "unchanged": True}
        version = self.project.save_markers(image_id, markers, base_version, author=f"prediction of model {model_id}")
        return answer | {"version": version, "unchanged": False}

    def review(self, model_id: int, image_id: str, base_version: int) -> dict:
        """Cut model ``model_id``'s probabilities with the image's strokes; store it as the accepted mask."""
        from hitlseg.active.review import reviewed_mask

        model = self.segmodel(model_id)
        current, latest = self.project.load_markers(image_id)
        if int(base_version) != latest:
            raise ConflictError(f"review: image {image_id!r} has marker version {latest}, not {base_version}; "
                                "reload it and review again")
        if not current.any():
            raise InputError(f"review: image {image_id!r} has no strokes; correct the prediction in the editor "
                             "(or start from the prediction) first")
        image = self.project.image(image_id)
        probabilities = model.predict(image, name=image_id).probabilities
        mask = reviewed_mask(image, probabilities, current)
        key = _accepted_key(image_id, latest)
        self.project.put_array(ACCEPTED_KIND, key, mask)
        record = {"image_id": image_id, "version": latest, "model_id": int(model_id), "key": key,
                  "fractions": [float((mask == c).mean()) for c in range(model.n_classes + 1)]}
        self.project.record_event(ACCEPTED_EVENT, record)
        return record

    def accepted(self) -> dict[str, dict]:
        """``{image_id: its last review}`` of reviews still valid: made on the image's latest marker version."""
        return valid_reviews(self.project)

    def accepted_mask(self, image_id: str) -> np.ndarray:
        """The accepted mask of ``image_id``'s latest marker version (InputError when it was not reviewed)."""
        review = self.accepted().get(image_id)
        if review is None:
            raise InputError(f"image {image_id!r}: its current markers were not reviewed; press Review first")
        return self.project.get_array(ACCEPTED_KIND, review["key"])

    def record_time(self, image_id: str, version: int, seconds: float) -> None:
        """The editor's seconds on one save of ``image_id``."""
        self.project.record_event(TIME_EVENT, {"image_id": image_id, "version": int(version), "seconds": float(seconds)})

    def effort(self) -> dict:
        """The person's effort so far: marked images and pixels (latest versions), recorded seconds."""
        marked = self.marked()
        pixels = 0
        for image_id in marked:
            history = self.project.marker_history(image_id)
            pixels += int(history[-1]["n_marked"])
        seconds = sum(float(e["payload"]["seconds"]) for e in self.project.events(kind=TIME_EVENT))
        return {"images": len(marked), "pixels": pixels, "seconds": seconds}

    # -- retraining --------------------------------------------------------------------------------
    def confidence(self, model, exclude: set[str], skipped: Skipped | None = None) -> float | None:
        """Mean confidence (max class probability) of ``model`` on up to 30 unmarked (readable) images."""
        skipped = Skipped() if skipped is None else skipped
        ids = [info["id"] for info in self.project.images() if info["id"] not in exclude]
        if not ids:
            return None
        picks = sorted(set(np.linspace(0, len(ids) - 1, min(CONFIDENCE_LIMIT, len(ids))).round().astype(int).tolist()))
        values = []
        for i in picks:
            image = skipped.image(self.project, ids[i], "measuring the model's confidence")
            if image is not None:
                values.append(float(model.predict(image, name=ids[i]).probabilities.max(0).mean()))
        return float(np.mean(values)) if values else None

    def check_retrain(self, model_id: int) -> None:
        """Refuse, before any job starts, a retraining that would fail: ``model_id`` is not an sU-Net, a
        the marked images lack background or object strokes (:func:`hitlseg.project.readiness.check_learnable`),
        or no unmarked image is left to self-train on."""
        self.segmodel(model_id)
        marked = self.models.check_ready("retrain")
        if len(marked) >= len(self.project):
            raise InputError("retrain: every image is marked; there is no unmarked image to self-train on")

    def retrain(self, model_id: int, epochs: int = 15, progress: Progress = None) -> dict:
        """One correction round: continue model ``model_id`` on every marked image; returns the new model's record."""
        return self._retrain(model_id, epochs, progress)

    def retrain_fresh(self, model_id: int, epochs: int = FRESH_EPOCHS, self_training: int = FRESH_SELF_TRAINING,
                      progress: Progress = None) -> dict:
        """A fresh sU-Net on every label of model ``model_id``'s round (new filters; the study loop's refresh).

        What :meth:`hitlseg.active.ActiveLoop.refresh` does after a study's last round: the
        strokes learner from scratch (``epochs`` on the strokes, ``self_training`` iterations over
        the unmarked images, reviewed images learned from their accepted masks, strokes expansion
        off). It helps where warm-started rounds drifted and not otherwise: on wbc1 after 10
        reviewed corrections (3 splits, ``docs/results/active/wbc1_review/``) test Dice 0.899 ->
        0.919 for random picks, but 0.922 -> 0.912 for entropy and 0.920 -> 0.911 for
        foreground-aware random, so the person compares the two in the rounds chart. It costs
        about one first training. The new model keeps the parent's round (no new effort) and is
        marked ``fresh``.
        """
        if isinstance(self_training, bool) or not isinstance(self_training, int) or not 0 <= self_training <= 10:
            raise InputError(f"self_training: must be an integer in 0..10, got {self_training!r}")
        return self._retrain(model_id, epochs, progress, fresh=True, self_training=self_training)

    def _retrain(self, model_id: int, epochs: int, progress: Progress, *, fresh: bool = False,
                 self_training: int = 1) -> dict:
        import copy

        from hitlseg.pseudo import Schedule, SelfTrainingConfig, default_strokes_config, learn_from_strokes
        from hitlseg.server.training import PSEUDO_LABELS

        started = time.perf_counter()
        parent = self.models.record(model_id)
        model = None if fresh else copy.deepcopy(self.segmodel(model_id))
        skipped = Skipped()
        ids, versions, images, markers = self.models.training_set(skipped, action="retrain")
        pool = self.models.pool(set(ids), skipped, progress)
        if not len(pool):
            raise InputError("retrain: every image is marked; there is no unmarked image to self-train on")

        def step(name):
            return lambda done, total, message="": report(progress, done, total, f"{name}: {message}".rstrip(": "))

        accepted = accepted_masks(self.project, ids, versions)
        ndim = images[0].ndim - 1
        if fresh:  # the round-0 recipe over every label (ActiveLoop.refresh); new filters on the project's
            meta = self.project.meta  # colour and normalisation, as the Model view trains
            config = default_strokes_config(ndim, epochs=epochs, seed=self.seed, device=self.models.device)
            schedule = SelfTrainingConfig(iterations=self_training)
            fresh_only = {"n_classes": self.segmodel(model_id).n_classes, "device": self.models.device, "expand": False,
                          "preprocessing": {"color": meta.get("color", "lab"),
                                            "normalize": meta.get("normalize", "percentile")}}
        else:
            config = default_strokes_config(ndim, epochs=epochs, seed=self.seed + len(versions),
                                            person_weight=PERSON_WEIGHT, device=self.models.device)
            schedule = SelfTrainingConfig(iterations=1, epochs=epochs, schedule=Schedule(beta0=0.75, gamma0=1.0))
            fresh_only = {}
        result = learn_from_strokes(
            images, markers, pool, model=model, accepted=accepted, config=config, self_training=schedule, names=ids,
            pool_names=pool.ids, seed=self.seed, strokes_stage=fresh, **fresh_only,
            progress=step("retraining from scratch" if fresh else "retraining"))
        new = result.model
        round_index = int(parent["params"].get("round", 0)) + (0 if fresh else 1)
        metrics = self.models._evaluate(lambda image: new.predict(image).labels, new.n_classes, set(ids), progress,
                                        skipped)
        report(progress, 0, 1, "measuring the model's confidence on unmarked images")
        metrics["confidence"] = self.confidence(new, set(ids), skipped)
        params = {"kind": "sunet", "images": versions, "seed": self.seed, "n_classes": new.n_classes, "epochs": epochs,
                  "self_training": self_training, "pseudo_labels": PSEUDO_LABELS, "parent": int(model_id),
                  "round": round_index, "fresh": fresh, "effort": self.effort(),
                  "person_weight": config.person_weight,
                  "accepted": {i: versions[i] for i, a in zip(ids, accepted) if a is not None}, "stopped": result.stopped,
                  "seconds": round(time.perf_counter() - started, 2)}
        if len(skipped):
            params["skipped_images"] = dict(skipped.reasons)
        new.info.update({"project": str(self.project.root), "images": versions, "parent": int(model_id)})
        with tempfile.TemporaryDirectory(prefix="hitlseg-model-") as folder:
            path = new.save(Path(folder) / "model.pt")
            new_id = self.project.add_model("sunet", path, params, metrics)
        report(progress, 1, 1, "done")
        return with_warnings(self.models.record(new_id), skipped)

    # -- the record ----------------------------------------------------------------------------------
    def summary(self) -> dict:
        """Rounds (sU-Net models in order, with quality and effort), the effort now, the last proposal."""
        rounds = []
        for record in self.project.list_models():
            if record["kind"] != "sunet":
                continue
            params, metrics = record["params"], record["metrics"] or {}
            rounds.append({"model_id": record["id"], "round": int(params.get("round", 0)),
                           "parent": params.get("parent"), "fresh": bool(params.get("fresh", False)),
                           "mean_dice": metrics.get("mean_dice"),
                           "confidence": metrics.get("confidence"), "effort": params.get("effort"),
                           "images": len(params.get("images", {}))})
        return {"rounds": rounds, "effort": self.effort(), "proposal": self.last_proposal(),
                "accepted": {i: r["version"] for i, r in self.accepted().items()},
                "strategies": list(STRATEGIES)}


def _accepted_key(image_id: str, version: int) -> str:
    """A file-safe key for the accepted mask of ``image_id`` at marker ``version`` (ids may hold any character)."""
    return f"{hashlib.sha1(image_id.encode()).hexdigest()[:20]}-v{int(version)}"


def valid_reviews(project) -> dict[str, dict]:
    """``{image_id: its last review}`` of the reviews made on the image's latest marker version."""
    latest = project.latest_versions()
    reviews = {}
    for event in project.events(kind=ACCEPTED_EVENT):
        payload = event["payload"]
        reviews[payload["image_id"]] = payload
    return {i: r for i, r in reviews.items() if latest.get(i) == r["version"] and project.has_array(ACCEPTED_KIND, r["key"])}


def accepted_masks(project, ids, versions: dict[str, int]) -> list[np.ndarray | None]:
    """Per id, the accepted mask of the review made on marker ``versions[id]`` (``None``: not reviewed)."""
    reviews = valid_reviews(project)
    return [project.get_array(ACCEPTED_KIND, reviews[i]["key"]) if i in reviews and reviews[i]["version"] == versions[i]
            else None for i in ids]
