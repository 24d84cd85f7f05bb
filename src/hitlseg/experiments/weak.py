"""Weak supervision from image-level labels: the trivial mask, CAM-only, active learning with and without pseudo-labels, full supervision.

One run on a dataset with ``labels.csv`` (and masks, for the simulated oracle and the scores):

``all_foreground``
    Every pixel object: the foreground Dice any method must beat; accuracy of the majority class.
``cam_only``
    :func:`hitlseg.weak.joint.cam_only`: a classifier on the image labels, its CAM above the
    threshold as the object, and the CAM refined by the dense CRF (``cam_crf_dice``).
``no_pseudo``
    Standard active learning: oracle rounds (random images, full masks or robot strokes), no pseudo-labels.
``joint``
    :func:`hitlseg.weak.joint.weak_train`: the same rounds plus neighbour pseudo-labels (Belharbi et al., WACV 2021).
``full``
    Every training mask, one round of ``rounds * epochs`` epochs.

``no_pseudo`` and ``joint`` run once per oracle budget (a fraction of the training images, spread
evenly over the rounds); the others once. Test groups come from the dataset's own split
(``meta.csv``, :func:`hitlseg.weak.splits.study_split`) or a seeded hold-out. Every part is a JSON
file in ``OUT/parts`` (a re-run skips it), CAM overlays of a few test images are PNGs in
``OUT/figures``, and ``OUT/results.json`` gathers everything (:mod:`hitlseg.experiments.weak_report`
writes the report).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from hitlseg.errors import InputError
from hitlseg.experiments.protocol import PartStore, _check_resumable, finish, run_part
from hitlseg.progress import Progress, PartsProgress, nested

METHODS = ("all_foreground", "cam_only", "no_pseudo", "joint", "full")
PER_BUDGET = ("no_pseudo", "joint")


@dataclass
class WeakProtocolConfig:
    """Settings of a weak-supervision study.

    Attributes
    ----------
    methods : tuple of str
        Some of :data:`METHODS`.
    budgets : tuple of float
        Oracle budgets: fractions of the training images in (0, 1), each run apart.
    rounds, warmup_epochs, epochs : int
        Oracle rounds, classifier warm-up epochs, joint epochs per round (:class:`hitlseg.weak.WeakConfig`).
    oracle : {"masks", "strokes"}
    norm : {"instance", "none", "batch"}
    widths : tuple of int
    cam_crf : bool
        Also score CAM-only refined by the dense CRF.
    holdout : float
        Fraction held out for testing when the dataset has no ``meta.csv`` split.
    overlays : int
        Test images per group whose CAM overlays are drawn.
    seed : int
    device : str or None
    """

    methods: tuple[str, ...] = METHODS
    budgets: tuple[float, ...] = (0.1,)
    rounds: int = 2
    warmup_epochs: int = 10
    epochs: int = 10
    oracle: str = "masks"
    norm: str = "instance"
    widths: tuple[int, ...] = (16, 32, 64)
    cam_crf: bool = True
    holdout: float = 0.2
    overlays: int = 2
    seed: int = 0
    device: str | None = None

    def __post_init__(self):
        self.methods = tuple(self.methods)
        if not self.methods:
            raise InputError("methods: name at least one method")
        unknown = [m for m in self.methods if m not in METHODS]
        if unknown:
            raise InputError(f"methods: unknown {', '.join(map(repr, unknown))} (use some of {', '.join(METHODS)})")
        if len(set(self.methods)) != len(self.methods):
            raise InputError("methods: each method once")
        self.budgets = tuple(float(b) for b in self.budgets)
        if not self.budgets and any(m in PER_BUDGET for m in self.methods):
            raise InputError("budgets: name at least one oracle budget")
        for b in self.budgets:
            if not 0 < b < 1:
                raise InputError(f"budgets: each must be a fraction of the training images in (0, 1), got {b}")
        if len(set(self.budgets)) != len(self.budgets):
            raise InputError("budgets: each budget once")
        if not 0 <= float(self.holdout) < 1:
            raise InputError(f"holdout: must be in [0, 1), got {self.holdout}")
        if isinstance(self.overlays, bool) or not isinstance(self.overlays, int) or self.overlays < 0:
            raise InputError(f"overlays: must be an integer >= 0, got {self.overlays!r}")
        self.widths = tuple(int(w) for w in self.widths)
        self.weak_config(1)  # validates rounds, epochs, oracle, norm, ...

    def weak_config(self, per_round: int, **changes):
        """The :class:`hitlseg.weak.WeakConfig` of a part (``changes`` override)."""
        from hitlseg.weak.joint import WeakConfig

        values = dict(rounds=self.rounds, per_round=per_round, oracle=self.oracle, warmup_epochs=self.warmup_epochs,
                      epochs=self.epochs, norm=self.norm, widths=self.widths, cam_crf=self.cam_crf, seed=self.seed,
                      device=self.device)
        values.update(changes)
        return WeakConfig(**values)

    def to_dict(self) -> dict:
        data = asdict(self)
        data["methods"], data["budgets"], data["widths"] = list(self.methods), list(self.budgets), list(self.widths)
        return data


def oracle_images(budget: float, n_train: int, rounds: int) -> tuple[int, int]:
    """``(images the oracle annotates, per round)`` for ``budget`` of ``n_train`` images over ``rounds`` rounds.

    ``round(budget * n_train)`` images, rounded down to a multiple of ``rounds``; an error when that is 0.
    """
    n = int(round(budget * n_train))
    per_round = n // rounds
    if per_round < 1:
        raise InputError(f"budgets: {budget} of the {n_train} training images is {n} image(s), fewer than one per "
                         f"round over {rounds} rounds; use a larger budget or fewer rounds")
    return per_round * rounds, per_round


def part_name(method: str, budget: float | None = None) -> str:
    """The part of ``method`` (and ``budget``): e.g. ``cam_only``, ``joint-b0.1``."""
    return method if budget is None else f"{method}-b{budget:g}"


def all_foreground(dataset, labels, train_ids: Sequence[str], groups: dict) -> dict:
    """Per group: foreground Dice of the every-pixel-object mask, and the accuracy of the training set's majority class."""
    from hitlseg.metrics import dice_score

    majority = int(np.bincount(labels.of(list(train_ids)), minlength=labels.n_classes).argmax())
    out = {}
    for name, ids in groups.items():
        dice = [dice_score(m > -1, m > 0) for m in (dataset.mask(i) for i in ids)]
        out[name] = {"foreground_dice": float(np.mean(dice)),
                     "accuracy": float(np.mean(labels.of(list(ids)) == majority)), "evaluated": len(ids)}
    return out


def run_method(method: str, dataset, labels, train_ids: Sequence[str], groups: dict, config: WeakProtocolConfig,
               per_round: int = 1, n_classes: int | None = None, progress: Progress = None,
               keep: Callable | None = None) -> dict:
    """One method's figures on every test group.

    ``joint``, ``no_pseudo`` and ``full`` give ``{"rounds": [per-round history]}`` (without the
    oracle's ids per round: ``oracle_ids`` holds them all); ``cam_only`` and ``all_foreground`` their
    figures per group. ``keep(net)``, when given, receives the trained network (e.g. to draw CAMs).
    """
    from hitlseg.weak.joint import _evaluate_groups, _check_ids, train_cam_baseline, weak_train

    if method == "all_foreground":
        return all_foreground(dataset, labels, train_ids, groups)
    if method == "cam_only":
        train_ids, groups = _check_ids(dataset, labels, train_ids, groups)
        weak = config.weak_config(per_round)
        start = time.perf_counter()
        net = train_cam_baseline(dataset, labels, weak, train_ids, progress=progress)
        out = _evaluate_groups(net, dataset, groups, labels, 1, weak)
        out["seconds"] = time.perf_counter() - start
    elif method in ("joint", "no_pseudo", "full"):
        if method == "joint":
            weak = config.weak_config(per_round)
        elif method == "no_pseudo":
            weak = config.weak_config(per_round, pseudo=False)
        else:
            weak = config.weak_config(len(train_ids), pseudo=False, rounds=1, epochs=config.rounds * config.epochs)
        result = weak_train(dataset, labels, weak, train_ids=train_ids, eval_ids=groups, n_classes=n_classes,
                            progress=progress)
        net = result.net
        out = {"rounds": [{k: v for k, v in row.items() if k != "new_oracle_ids"} for row in result.history],
               "oracle_ids": result.oracle_ids if method != "full" else []}
    else:
        raise InputError(f"method: unknown {method!r} (use one of {', '.join(METHODS)})")
    if keep is not None:
        keep(net)
    return out


def overlay_ids(groups: dict, n: int) -> list[str]:
    """``n`` test images per group, evenly spaced over the group (deterministic)."""
    chosen = []
    for ids in groups.values():
        if n and ids:
            chosen += [ids[j] for j in sorted(set(np.linspace(0, len(ids) - 1, min(n, len(ids))).round().astype(int)))]
    return chosen


def draw_overlays(net, dataset, ids: Sequence[str], folder: Path, prefix: str, cam_method: str = "cam") -> dict:
    """PNGs of ``net``'s CAM (predicted class) over each image, and its segmentation when it has one.

    Returns ``{id: {"cam": file name, "segmentation": file name}}`` (names relative to ``folder``).
    """
    import torch

    from hitlseg.selection.heatmap import overlay, save_png
    from hitlseg.weak.cam import activation_maps
    from hitlseg.weak.joint import JointNet

    device = next(net.parameters()).device
    out = {}
    for i in ids:
        image = dataset.image(i)[0]
        x = torch.as_tensor(image, device=device)[None]
        maps, _ = activation_maps(net, x, None, cam_method)
        names = {"cam": f"{prefix}_{i}_cam.png"}
        save_png(folder / names["cam"], overlay(image, maps[0].cpu().numpy(), alpha=0.5))
        if isinstance(net, JointNet):
            with torch.no_grad():
                logits = net(x)[1]
            pred = logits.argmax(1)[0].cpu().numpy()
            names["segmentation"] = f"{prefix}_{i}_seg.png"
            save_png(folder / names["segmentation"],
                     overlay(image, pred / max(logits.shape[1] - 1, 1), alpha=0.45, cmap="viridis"))
        out[i] = names
    return out


def _draw_truth(dataset, ids: Sequence[str], folder: Path) -> dict:
    from hitlseg.selection.heatmap import overlay, save_png

    out = {}
    for i in ids:
        image = dataset.image(i)[0]
        mask = dataset.mask(i, image.shape[1:])
        name = f"truth_{i}.png"
        if not (folder / name).is_file():
            save_png(folder / name, overlay(image, mask / max(int(mask.max()), 1), alpha=0.45, cmap="viridis"))
        out[i] = name
    return out


def run_weak_protocol(dataset, out: str | Path, config: WeakProtocolConfig | None = None, *, labels=None,
                      progress: Progress = None, log: Callable[[str], None] | None = None,
                      log_every: float = 60.0) -> dict:
    """Run (or resume) the study; every number goes to ``OUT/results.json`` and is returned.

    Parameters
    ----------
    dataset : Dataset
        Images with masks (the oracle and the scores read them) and image-level labels.
    out : path
        Output folder; a re-run with the same settings skips the finished parts (more budgets or
        methods extend a run).
    config : WeakProtocolConfig
    labels : ImageLabels or path, optional
        The image-level labels; ``DATASET/labels.csv`` by default.
    progress : callable, optional
        ``progress(parts done, parts, message)`` at every round and epoch of the classifier.
    log : callable, optional
        A line per finished part and the progress message at most every ``log_every`` seconds.
    """
    from hitlseg.weak.labels import ImageLabels, read_image_labels
    from hitlseg.weak.splits import study_split

    config = config or WeakProtocolConfig()
    out = Path(out)
    if not isinstance(labels, ImageLabels):
        labels = read_image_labels(dataset, labels)
    train, groups, source = study_split(dataset, config.holdout, config.seed)
    budgets = {}
    if any(m in PER_BUDGET for m in config.methods):
        for b in config.budgets:
            n, per_round = oracle_images(b, len(train), config.rounds)
            budgets[f"{b:g}"] = {"budget": b, "oracle_images": n, "per_round": per_round, "fraction": n / len(train)}
    _check_resumable(out, config, mutable=("methods", "budgets", "overlays"))
    store = PartStore(out)
    figures = out / "figures"
    n_classes = max(1, max(int(dataset.mask(i).max()) for ids in groups.values() for i in ids))
    parts = [(m, None) for m in config.methods if m not in PER_BUDGET]
    parts += [(m, b["budget"]) for b in budgets.values() for m in config.methods if m in PER_BUDGET]
    order = {m: k for k, m in enumerate(METHODS)}
    parts.sort(key=lambda p: (order[p[0]], -1 if p[1] is None else p[1]))
    shown = overlay_ids(groups, config.overlays)
    results = {"config": config.to_dict(), "dataset": str(dataset.root), "max_side": dataset.max_side,
               "labels": labels.to_dict(), "split": source, "sizes": {"train": len(train), **{k: len(v) for k, v in groups.items()}},
               "groups": list(groups), "n_classes": n_classes, "budgets": budgets,
               "overlays": {"ids": shown, "truth": _draw_truth(dataset, shown, figures) if shown else {}}, "parts": {}}
    started = time.perf_counter()
    tracker = PartsProgress(progress, len(parts), log=log, log_every=log_every)
    for method, budget in parts:
        name = part_name(method, budget)
        per_round = budgets[f"{budget:g}"]["per_round"] if budget is not None else 1

        def compute(stage, method=method, name=name, per_round=per_round):
            drawn = {}

            def keep(net):
                if shown and method != "all_foreground":
                    drawn.update(draw_overlays(net, dataset, shown, figures, name))

            start = time.perf_counter()
            part = run_method(method, dataset, labels, train, groups, config, per_round, n_classes,
                              nested(stage, label=method), keep)
            return {"method": method, "budget": budget, "figures": drawn, "part_seconds": time.perf_counter() - start,
                    "result": part}

        results["parts"][name] = run_part(store, tracker, name, compute, started)
    return finish(out, results, started, progress, len(parts))
