"""What an active-learning strategy sees: the selection context plus the model's view of the pool.

:class:`ActiveContext` extends :class:`hitlseg.selection.SelectionContext` (the same
``query(context, n)`` contract as the image selectors) with, for the pool images, the current
model's class probabilities, member disagreement maps (MC dropout or an ensemble), pooled
encoder features and predicted annotation costs. :func:`score_pool` computes all of it once
per round, batched: images of one shape go through the encoder together, and the extra members
reuse the encoder's features, so ``M`` MC-dropout passes cost one encoder pass and ``M``
decoder passes rather than ``M`` full inferences.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from hitlseg.active.uncertainty import entropy
from hitlseg.errors import InputError
from hitlseg.progress import Progress, report
from hitlseg.selection.selectors import SelectionContext

MEMBER_SOURCES = ("mc_dropout", "ensemble")


@dataclass
class ActiveContext(SelectionContext):
    """A :class:`SelectionContext` with the model's view of the pool.

    ``selected`` holds the images already annotated. Maps are keyed by image id and hold at
    least every unselected image; arrays are float16 to keep a pool of hundreds of images small.

    Attributes
    ----------
    probabilities : mapping id -> ndarray (K + 1, *spatial)
        The model's class probabilities (one deterministic pass).
    disagreement : mapping id -> ndarray (*spatial), optional
        Mutual information of the members (BALD; the Jensen-Shannon divergence of an ensemble).
    variance : mapping id -> ndarray (*spatial), optional
        Variance of the members' probabilities, averaged over classes.
    member_source : {"mc_dropout", "ensemble"} or None
        Where the members came from; ``members`` is their number.
    features : ndarray (n_pool, d), optional
        Pooled encoder features, rows in ``pool`` order (core-set, suggestive annotation).
    costs : mapping id -> float, optional
        Predicted annotation seconds per image (cost-sensitive strategies).
    round : int
        Active-learning round (0: the first strokes).
    """

    probabilities: Mapping[str, np.ndarray] | None = None
    disagreement: Mapping[str, np.ndarray] | None = None
    variance: Mapping[str, np.ndarray] | None = None
    member_source: str | None = None
    members: int = 0
    features: np.ndarray | None = None
    costs: Mapping[str, float] | None = None
    round: int = 0
    timings: dict = field(default_factory=dict)

    def probability(self, image_id: str) -> np.ndarray:
        if self.probabilities is None or image_id not in self.probabilities:
            raise InputError(f"context: no model probabilities for image {image_id!r} (score the pool first)")
        return np.asarray(self.probabilities[image_id], dtype=np.float32)

    def feature_matrix(self) -> np.ndarray:
        if self.features is None:
            raise InputError("context: no encoder features of the pool (score the pool with features=True)")
        x = np.asarray(self.features, dtype=np.float64)
        if x.ndim != 2 or len(x) != len(self.pool):
            raise InputError(f"features: expected shape ({len(self.pool)}, d), got {x.shape}")
        return x


def _check_passes(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0 or value == 1:
        raise InputError(f"{name}: must be 0 (none) or an integer >= 2, got {value!r}")
    return int(value)


def _fits_whole(model, shape) -> bool:
    window = model.window
    return window is None or all(w >= s for w, s in zip(window, shape))


def _member_logits(base, nets, x, features, mc_passes: int, dropout: float, generator) -> torch.Tensor:
    """Logits of every member ``(M, N, K + 1, *spatial)`` for a batch, reusing the shared encoder's features."""
    out = []
    if mc_passes:
        decoder = base.decoder
        n = x.shape[0]
        xs = x.repeat((mc_passes,) + (1,) * (x.ndim - 1))
        fs = []
        for f in features:
            f = f.repeat((mc_passes,) + (1,) * (f.ndim - 1))
            keep = torch.rand(f.shape[:2], generator=generator, device=f.device) >= dropout  # channel dropout
            fs.append(f * keep.view(*f.shape[:2], *([1] * (f.ndim - 2))).to(f.dtype) / (1.0 - dropout))
        logits = decoder(xs, fs)
        return logits.view(mc_passes, n, *logits.shape[1:])
    for net in nets:
        shared = net.encoder is base.encoder and net.frozen and base.frozen
        feats = features if shared else net.encoder.features(x)
        out.append(net.decoder(x, feats))
    return torch.stack(out)


def _pooled(features: Sequence[torch.Tensor]) -> torch.Tensor:
    """Global average of every encoder layer's output, concatenated: ``(N, sum of widths)``."""
    return torch.cat([f.flatten(2).mean(2) for f in features], dim=1)


#: Images per task when :func:`score_pool` runs through an executor.
SCORE_CHUNK = 32


def _chunk_seed(seed: int, index: int) -> int:
    return int(np.random.SeedSequence([int(seed), int(index)]).generate_state(1)[0])


def _score_through(executor, model, images, ids, chunk: int, options: dict, progress: Progress) -> dict:
    """:func:`score_pool` over ``ids`` in chunks of ``chunk`` images mapped by ``executor`` (in-process or
    Dask: the same chunks and per-chunk dropout seeds either way, so the same numbers), merged."""
    started = time.perf_counter()
    seed = options.pop("seed")
    chunks = [ids[k:k + chunk] for k in range(0, len(ids), chunk)]
    items = ((j, (j, {i: images[i] for i in part})) for j, part in enumerate(chunks))
    ensemble = options.pop("ensemble")
    results: dict[int, dict] = {}
    for j, part in executor.map(_score_chunk_seeded, items, shared={"model": model, "ensemble": ensemble,
                                                                      "options": options, "seed": seed},
                                total=len(chunks), progress=progress, message="scoring the pool"):
        results[j] = part
    merged = {"probabilities": {}, "member_source": None, "members": 0}
    for j in range(len(chunks)):
        part = results[j]
        merged["member_source"], merged["members"] = part["member_source"], part["members"]
        for key in ("probabilities", "disagreement", "variance"):
            if key in part:
                merged.setdefault(key, {}).update(part[key])
    if options.get("features", True):
        rows = [results[j]["features"] for j in range(len(chunks)) if len(results[j]["features"])]
        merged["features"] = np.concatenate(rows).astype(np.float32) if rows else np.zeros((0, 0), np.float32)
    merged["seconds"] = time.perf_counter() - started
    merged["chunks"] = len(chunks)
    return merged


def _score_chunk_seeded(index: int, images: dict, *, model, ensemble, options: dict, seed: int) -> dict:
    """One task of :func:`score_pool` through an executor: chunk ``index``, scored where it runs."""
    return score_pool(model, images, list(images), ensemble=ensemble, seed=_chunk_seed(seed, index), **options)


def score_pool(model, images: Mapping[str, np.ndarray], ids: Sequence[str] | None = None, *, mc_passes: int = 0,
               dropout: float = 0.2, ensemble: Sequence | None = None, features: bool = True, seed: int = 0,
               max_elements: int | None = None, executor=None, chunk: int = SCORE_CHUNK,
               progress: Progress = None) -> dict:
    """The model's view of ``ids`` (all of ``images`` by default), computed once per round.

    Parameters
    ----------
    model : SegModel
        The current model; its deterministic probabilities are always computed.
    images : mapping id -> ndarray (C, *spatial)
    ids : sequence of str, optional
    mc_passes : int
        0, or the number ``M >= 2`` of MC-dropout passes (Gal et al. ICML 2017): channel
        dropout with rate ``dropout`` on the encoder features the decoder receives, one
        encoder pass and one batched decoder pass of ``M`` copies. The network is not trained
        with dropout; the passes measure how much its output depends on individual features.
    ensemble : sequence of SegModel, optional
        Members for disagreement instead of MC dropout (at least 2; the first is usually
        ``model``). Members sharing ``model``'s frozen encoder reuse its features.
    features : bool
        Also return pooled encoder features (global average per layer).
    seed : int
        Seed of the dropout masks.
    max_elements : int, optional
        Images of one shape are batched up to this many input values (divided among the
        members). Default: 2**18 on CPU, where small batches stay in cache (wbc1, 96 images of
        3x120x120 on 2 cores: 0.84 s one image at a time, 0.90 s at 2**18, 2.13 s at 2**21;
        5 MC passes 4.16, 3.36 and 5.31 s), and 2**23 on a GPU.
    executor : hitlseg.parallel.Executor, optional
        Score in tasks of ``chunk`` images through it (in-process, a local cluster or a
        scheduler; :mod:`hitlseg.parallel`). The model and ensemble go to every worker once;
        chunk ``j`` draws its dropout masks from ``(seed, j)``, so any executor gives the same
        numbers (but not those of ``executor=None``, which draws all masks from ``seed``).
    chunk : int
        Images per task with ``executor``.

    Returns
    -------
    dict
        ``probabilities``, ``disagreement`` and ``variance`` (when members were asked for),
        ``features`` (rows in ``ids`` order), ``member_source``, ``members``, ``seconds``.
    """
    from hitlseg.selection.descriptors import shape_batches, stack

    started = time.perf_counter()
    mc_passes = _check_passes(mc_passes, "mc_passes")
    if not 0 < float(dropout) < 1:
        raise InputError(f"dropout: must be in (0, 1), got {dropout!r}")
    ids = list(images) if ids is None else [str(i) for i in ids]
    missing = [i for i in ids if i not in images]
    if missing:
        raise InputError(f"ids: {len(missing)} image(s) not given, e.g. {missing[0]!r}")
    if executor is not None:
        if isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1:
            raise InputError(f"chunk: must be a positive integer, got {chunk!r}")
        options = {"mc_passes": mc_passes, "dropout": dropout, "ensemble": ensemble, "features": features,
                   "seed": seed, "max_elements": max_elements}
        return _score_through(executor, model, images, ids, chunk, options, progress)
    members = list(ensemble) if ensemble is not None else []
    if members and mc_passes:
        raise InputError("score_pool: use either mc_passes or an ensemble, not both")
    if ensemble is not None and len(members) < 2:
        raise InputError(f"ensemble: disagreement needs at least 2 models, got {len(members)}")
    for index, member in enumerate(members):
        if member.n_classes != model.n_classes or member.in_channels != model.in_channels:
            raise InputError(f"ensemble: member {index} has {member.n_classes} classes and {member.in_channels} "
                             f"channels; the model {model.n_classes} and {model.in_channels}")
    net = model.net
    nets = [m.net for m in members]
    device = model.device
    generator = torch.Generator(device=device).manual_seed(int(seed))
    checked = {i: model.check_image(images[i], name=i) for i in ids}
    out = {"probabilities": {}, "member_source": "mc_dropout" if mc_passes else ("ensemble" if members else None),
           "members": mc_passes or len(members)}
    if out["member_source"]:
        out["disagreement"], out["variance"] = {}, {}
    pooled: dict[str, np.ndarray] = {}
    was_training = [n.training for n in [net, *nets]]
    for n in [net, *nets]:
        n.eval()
    done = 0
    try:
        with torch.no_grad():
            whole = {i: checked[i] for i in ids if _fits_whole(model, checked[i].shape[1:])}
            for i in ids:
                if i not in whole:  # larger than the sliding window: the model's own windowed prediction
                    out["probabilities"][i] = model.predict(checked[i], name=i).probabilities.astype(np.float16)
            if max_elements is None:
                max_elements = (1 << 23) if device.type == "cuda" else (1 << 18)
            per_batch = max(1, max_elements // max(1, mc_passes or len(members) or 1))  # members multiply the batch
            for batch in shape_batches(checked, per_batch):
                report(progress, done, len(ids), "scoring the pool")
                # one shape per batch, so either every image of it fits whole or none does; the
                # windowed ones have their probabilities and pass whole only for features / members
                fits = batch[0] in whole
                if not fits and not features and not out["member_source"]:
                    done += len(batch)
                    continue
                x = stack(checked, batch, device)
                feats = net.encoder.features(x)
                if features:
                    for i, row in zip(batch, _pooled(feats).cpu().numpy()):
                        pooled[i] = row
                if fits:
                    probs = torch.softmax(net.decoder(x, feats), dim=1)
                    for i, p in zip(batch, probs.cpu().numpy()):
                        out["probabilities"][i] = p.astype(np.float16)
                if out["member_source"]:
                    member = torch.softmax(_member_logits(net, nets, x, feats, mc_passes, float(dropout), generator), 2)
                    member = member.cpu().numpy()
                    for j, i in enumerate(batch):
                        m = member[:, j]
                        mean = m.mean(0)
                        mi = entropy(mean) - np.mean([entropy(k) for k in m], axis=0)
                        out["disagreement"][i] = np.clip(mi, 0, 1).astype(np.float16)
                        out["variance"][i] = m.var(0).mean(0).astype(np.float16)
                done += len(batch)
    finally:
        for n, mode in zip([net, *nets], was_training):
            n.train(mode)
    if features:
        out["features"] = np.stack([pooled[i] for i in ids]).astype(np.float32) if ids else np.zeros((0, 0), np.float32)
    out["seconds"] = time.perf_counter() - started
    report(progress, len(ids), len(ids), "scoring the pool")
    return out


def build_context(pool: Sequence[str], annotated: Sequence[str], scored: dict, *, images=None, costs=None,
                  round_index: int = 0) -> ActiveContext:
    """An :class:`ActiveContext` from :func:`score_pool`'s output (scored over ``pool``, in its order)."""
    pool = [str(i) for i in pool]
    feats = scored.get("features")
    if feats is not None and len(feats) != len(pool):
        raise InputError(f"features: {len(feats)} rows for a pool of {len(pool)} images (score the whole pool)")
    return ActiveContext(pool=pool, selected=[str(i) for i in annotated], images=images,
                         probabilities=scored["probabilities"], disagreement=scored.get("disagreement"),
                         variance=scored.get("variance"), member_source=scored.get("member_source"),
                         members=int(scored.get("members") or 0), features=feats, costs=costs, round=round_index,
                         timings={"scoring_seconds": scored.get("seconds", 0.0)})
