"""Training with synthetic samples: what ``hitlseg train --synthetic N`` runs after the first training.

Mahapatra et al. (MICCAI 2018): train the segmentation model, train a conditional generator on
the annotated pairs, generate images from altered masks, keep the informative realistic ones
(:func:`hitlseg.synthesis.synthesize_for_training`) and train the model further on real and
synthetic pairs together. Here the further training is a warm-started fine-tuning with the
same :class:`hitlseg.nets.TrainConfig` (fewer epochs); the best validation epoch is kept as
usual, and if no fine-tuning epoch beats the model it started from on the validation images,
that model is kept (the record says which).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field, replace

import numpy as np

from hitlseg.errors import InputError
from hitlseg.progress import Progress, nested
from hitlseg.synthesis.generator import GeneratorConfig, train_generator
from hitlseg.synthesis.select import check_count, synthesize_for_training


@dataclass
class SynthesisConfig:
    """Settings of :func:`train_with_synthesis`.

    Attributes
    ----------
    n_per_image : int
        Synthetic samples kept per real training image.
    candidates : int
        Candidates generated per kept sample (the most uncertain realistic one is kept).
    mc_passes, dropout : int, float
        MC-dropout passes and channel-dropout rate of the uncertainty.
    epochs : int or None
        Fine-tuning epochs on real + synthetic pairs (default: half the first training's, at least 1).
    generator : GeneratorConfig
        The generator's training (its seed and device follow the training's when left default).
    perceptual : bool
        Add the perceptual loss on the sU-Net's frozen FLIM encoder features (sU-Nets only).
    """

    n_per_image: int = 1
    candidates: int = 3
    mc_passes: int = 8
    dropout: float = 0.2
    epochs: int | None = None
    generator: GeneratorConfig = field(default_factory=GeneratorConfig)
    perceptual: bool = True

    def __post_init__(self):
        check_count(self.n_per_image, "n_per_image")
        if check_count(self.candidates, "candidates") < 1:
            raise InputError("candidates: must be at least 1")
        if self.epochs is not None and check_count(self.epochs, "epochs") < 1:
            raise InputError("epochs: must be at least 1")

    def to_dict(self) -> dict:
        return asdict(self)


def train_with_synthesis(model, train_pairs, val_pairs, train_config, config: SynthesisConfig | None = None, *,
                         first_val_dice: float | None = None, names: dict | None = None,
                         progress: Progress = None) -> dict:
    """Train a generator on ``train_pairs``, add the chosen synthetic pairs and fine-tune ``model`` on all.

    Parameters
    ----------
    model : hitlseg.nets.SegModel
        Trained on ``train_pairs`` already; fine-tuned in place.
    train_pairs, val_pairs : sequence of (ndarray, ndarray)
        Real training and validation pairs (the validation pairs only choose the epoch).
    train_config : hitlseg.nets.TrainConfig
        The first training's settings; the fine-tuning uses them with ``config.epochs``.
    config : SynthesisConfig, optional
    first_val_dice : float, optional
        Validation Dice of ``model`` before fine-tuning (computed when None and there are
        validation pairs).
    names : dict, optional
        ``{"train": [...], "val": [...]}`` names of the real pairs, for messages and the record.
    progress : callable, optional

    Returns
    -------
    dict
        ``train`` (the fine-tuning's :class:`hitlseg.nets.TrainResult`), ``synthesis`` (a plain
        record: counts, scores, per-sample sources and alterations, generator losses and
        timings, ``model_kept``: ``"fine-tuned"`` or ``"first"``), ``samples`` (the synthetic pairs)
        and ``synthesizer``.
    """
    from hitlseg.flim.encoder import FLIMEncoder
    from hitlseg.nets import train, validation_dice

    config = config or SynthesisConfig()
    train_pairs, val_pairs = list(train_pairs), list(val_pairs)
    names = dict(names or {})
    record: dict = {"n_per_image": config.n_per_image, "config": config.to_dict()}
    if config.n_per_image == 0:
        return {"train": None, "synthesis": record, "samples": [], "synthesizer": None}
    started = time.perf_counter()
    generator_config = config.generator
    defaults = GeneratorConfig()
    if generator_config.seed == defaults.seed and generator_config.device == defaults.device:
        generator_config = replace(generator_config, seed=train_config.seed, device=train_config.device)
    encoder = model.net.encoder if config.perceptual and isinstance(model.net.encoder, FLIMEncoder) else None
    synthesizer = train_generator(train_pairs, generator_config, encoder=encoder, n_classes=model.n_classes,
                                  progress=nested(progress, 0.0, 0.35, "generator"))
    record["generator_seconds"] = synthesizer.seconds
    record["generator_history"] = synthesizer.history
    made = synthesize_for_training(model, train_pairs, synthesizer, config.n_per_image,
                                   np.random.default_rng([train_config.seed, 19]), candidates=config.candidates,
                                   mc_passes=config.mc_passes, dropout=config.dropout,
                                   progress=nested(progress, 0.35, 0.5, "synthesis"))
    sources = names.get("train")
    record.update(made.summary())
    record["samples"] = [{**r, "source": sources[r["source"]] if sources else r["source"]} for r in made.records]
    if first_val_dice is None and val_pairs:
        first_val_dice = validation_dice(model.net, val_pairs, model.n_classes,
                                         train_config.inference_window(model.ndim), train_config.overlap)
    record["first_val_dice"] = first_val_dice
    if not made.samples:  # nothing passed the realism check: no fine-tuning, so no extra training without synthesis
        record.update({"fine_tune_epochs": 0, "fine_tuned_val_dice": None, "model_kept": "first",
                       "seconds": time.perf_counter() - started})
        return {"train": None, "synthesis": record, "samples": [], "synthesizer": synthesizer}
    first_state = {k: v.detach().cpu().clone() for k, v in model.net.trainable_state().items()}
    epochs = config.epochs or max(1, train_config.epochs // 2)
    synthetic_names = [f"synthetic sample {i} (from {r['source']})" for i, r in enumerate(record["samples"])]
    train_names = {"train": (list(sources) if sources else [f"training sample {i}" for i in range(len(train_pairs))])
                   + synthetic_names, "val": names.get("val")}
    result = train(model, train_pairs + made.samples, val_pairs, replace(train_config, epochs=epochs),
                   progress=nested(progress, 0.5, 1.0, "fine-tuning"), names=train_names)
    record["fine_tune_epochs"] = epochs
    record["fine_tuned_val_dice"] = result.best_val_dice
    record["model_kept"] = "fine-tuned"
    if first_val_dice is not None and result.best_val_dice is not None and result.best_val_dice < first_val_dice:
        device = model.device
        model.net.load_trainable_state({k: v.to(device) for k, v in first_state.items()})
        record["model_kept"] = "first"
    record["seconds"] = time.perf_counter() - started
    return {"train": result, "synthesis": record, "samples": made.samples, "synthesizer": synthesizer}


def accepted_mask(labels: np.ndarray, markers: np.ndarray) -> np.ndarray:
    """A person's accepted segmentation: the predicted ``labels`` with their strokes (``c + 1`` -> class ``c``) over them."""
    labels, markers = np.asarray(labels), np.asarray(markers)
    if labels.shape != markers.shape:
        raise InputError(f"markers: shape {markers.shape} does not match the prediction {labels.shape}")
    return np.where(markers > 0, markers.astype(np.int64) - 1, labels).astype(np.uint8)


def synthesize_from_annotations(model, pairs, n_per_image: int, *, synthesizer=None, steps: int = 400,
                                candidates: int = 3, dropout: float = 0.2, seed: int = 0,
                                progress: Progress = None) -> tuple[list, dict, object]:
    """Synthetic training pairs from annotated images whose masks are accepted predictions, not ground truth.

    What a correction round and ``hitlseg train --labels markers --synthetic N`` add to training
    (Mahapatra et al., MICCAI 2018): the generator is trained on ``pairs`` (or ``synthesizer`` is
    trained further on them), candidates are generated for altered masks and the ``n_per_image``
    most uncertain realistic ones per image are kept
    (:func:`~hitlseg.synthesis.select.synthesize_for_training`).

    Parameters
    ----------
    model : hitlseg.nets.SegModel
        The current model: its FLIM encoder gives the perceptual loss, its MC dropout the uncertainty.
    pairs : sequence of (ndarray, ndarray)
        Annotated images and their accepted masks (:func:`accepted_mask`); masks without an
        object class are skipped.
    n_per_image : int
    synthesizer : Synthesizer, optional
        Continue this generator (the previous round's) for ``steps`` steps.
    steps, candidates, dropout, seed
        Generator steps, candidates per kept sample, MC-dropout rate, seed.
    progress : callable, optional

    Returns
    -------
    (list of (ndarray, ndarray), dict, Synthesizer or None)
        The kept pairs; a record (counts, mean uncertainties, ``generator_steps``,
        ``generator_seconds``, ``seconds``); the trained synthesizer.
    """
    from hitlseg.flim.encoder import FLIMEncoder

    started = time.perf_counter()
    n_per_image = check_count(n_per_image, "n_per_image")
    pairs = [(np.asarray(image, dtype=np.float32), np.asarray(mask)) for image, mask in pairs if np.asarray(mask).any()]
    if n_per_image == 0 or not pairs:
        note = "no annotated image holds an object class" if n_per_image else "n_per_image is 0"
        return [], {"candidates": 0, "kept": 0, "note": note, "seconds": 0.0}, synthesizer
    encoder = model.net.encoder if isinstance(model.net.encoder, FLIMEncoder) else None
    before = synthesizer.seconds if synthesizer is not None else 0.0
    synthesizer = train_generator(pairs, GeneratorConfig(steps=steps, seed=seed), encoder=encoder,
                                  n_classes=model.n_classes, start=synthesizer,
                                  progress=nested(progress, 0.0, 0.7, "generator"))
    made = synthesize_for_training(model, pairs, synthesizer, n_per_image, np.random.default_rng([seed, 19]),
                                   candidates=candidates, dropout=dropout, progress=nested(progress, 0.7, 1.0, "synthesis"))
    record = {**made.summary(), "generator_steps": steps, "generator_seconds": synthesizer.seconds - before,
              "seconds": time.perf_counter() - started}
    return made.samples, record, synthesizer
