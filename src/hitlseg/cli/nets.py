"""``hitlseg train`` and ``hitlseg predict``: segmentation networks (sU-Net and U-Net baseline)."""

from __future__ import annotations

import argparse
from pathlib import Path

from hitlseg.cli import args as argtypes
from hitlseg.cli.common import print_json, progress_bar
from hitlseg.parallel.executor import add_execution_arguments, executor_from_args


def register(commands) -> None:
    """Add the network commands to the sub-parser ``commands``."""
    train = commands.add_parser("train", help="train an sU-Net (frozen FLIM encoder) or a U-Net on a dataset")
    train.add_argument("--dataset", required=True, help="dataset folder (images/ and masks/, or one folder per case)")
    train.add_argument("--split", help="split JSON (train/val/test ids); default: the dataset's train/validation/test "
                                       "folders, else a seeded split saved next to the model")
    train.add_argument("--encoder", default=None,
                       help="flim:MODEL (a FLIM model file, or a 'select --out' folder: its flim.pt), flim:markers "
                            "(learn from the training images' markers), flim:robot (learn from simulated markers on "
                            "5 training images) or backprop (U-Net baseline); default: flim:markers when training "
                            "images have markers, else flim:robot")
    train.add_argument("--markers", metavar="DIR",
                       help="folder of marker files to use instead of DATASET/markers (e.g. the markers/ of a "
                            "'select --out' folder, or that folder itself), for --labels markers and "
                            "--encoder flim:markers")
    train.add_argument("--labels", choices=("masks", "markers"), default="masks",
                       help="masks: learn from the masks/ folder (full supervision); markers: learn from the "
                            "markers/ strokes alone (no mask file is opened), with self-training on the other "
                            "training images")
    train.add_argument("--self-training", type=argtypes.non_negative_int, default=5, metavar="N",
                       help="with --labels markers: pseudo-label iterations over the unmarked training images "
                            "(default 5; 0: strokes only)")
    train.add_argument("--expand-strokes", action=argparse.BooleanOptionalAction, default=None,
                       help="with --labels markers: add to the strokes the pixels where a graph cut from them "
                            "agrees with a model trained on them, then train on both (default: on for 2D images, "
                            "off for volumes; see README 'Defaults')")
    train.add_argument("--ncut-weight", type=argtypes.non_negative_float, default=None,
                       help="weight of the normalized-cut loss (default 0.1 with --labels markers, else 0)")
    train.add_argument("--crf-weight", type=argtypes.non_negative_float, default=None,
                       help="weight of the dense-CRF loss (default 0.5 with --labels markers, else 0)")
    train.add_argument("--epochs", type=argtypes.positive_int, default=None,
                       help="training epochs (default 100; with --labels markers 50 on the strokes, then 15 per "
                            "self-training iteration)")
    train.add_argument("--batch-size", type=argtypes.positive_int, default=1, help="images per step (default 1)")
    train.add_argument("--lr", type=argtypes.positive_float, default=2.5e-3, help="initial learning rate, decayed linearly (default 2.5e-3)")
    train.add_argument("--crop-size", type=argtypes.crop_size, help="training crop per axis for larger images (default 256 in 2D, "
                                                       "96 in 3D); prediction slides a window of at least that default")
    train.add_argument("--max-side", type=argtypes.max_side, default=None, metavar="N",
                       help="working resolution: read every image with its longest side at most N pixels (never "
                            "enlarged); stored with the model, so 'predict' reads at N and writes masks back at each "
                            "input's size and geometry (default: the --encoder FLIM model's, else the images' own)")
    train.add_argument("--synthetic", type=argtypes.non_negative_int, default=0, metavar="N",
                       help="after training, add N synthetic images per training image (altered masks, a "
                            "mask-conditioned GAN, the most uncertain realistic ones; hitlseg.synthesis) and "
                            "fine-tune on all (default 0: none); with --labels markers the masks are the model's "
                            "predictions under the strokes")
    train.add_argument("--generator-steps", type=argtypes.positive_int, default=600, metavar="N",
                       help="with --synthetic: training steps of the generator (default 600, batches of 4 crops)")
    train.add_argument("--seed", type=argtypes.seed, default=0, help="seed of the split, markers, initialisation and sampling")
    train.add_argument("--device", type=argtypes.device, default=None, help="cpu, cuda, cuda:1 ... (default: CUDA when present)")
    train.add_argument("--checkpoint", help="checkpoint file written every epoch; resumes from it when it exists")
    train.add_argument("--out", help="model file to write (default: DATASET_NAME-sunet.pt or -unet.pt)")
    train.add_argument("--json", action="store_true", help="print a JSON summary")
    train.set_defaults(func=run_train)

    predict = commands.add_parser("predict", help="segment images with a trained model")
    predict.add_argument("--model", required=True, help="model file written by 'hitlseg train'")
    predict.add_argument("--images", required=True, help="folder of images, or a dataset folder")
    predict.add_argument("--out", required=True, help="folder for the label masks (same format and geometry as the inputs)")
    predict.add_argument("--split", help="split JSON: predict only the ids of --part")
    predict.add_argument("--part", choices=("train", "val", "test"), default="test", help="part of --split to predict")
    predict.add_argument("--probabilities", action="store_true", help="also write per-class probability maps to OUT/probabilities")
    predict.add_argument("--preview", action="store_true",
                         help="also write each mask in class colours to OUT/previews/ID.preview.png (label files look black)")
    predict.add_argument("--postprocess", choices=("none", "largest", "agree"), default=None,
                         help="'largest': keep the largest object and fill its holes (images with one object each); "
                              "'agree': keep the objects the FLIM adaptive decoder also finds (sU-Net models; "
                              "drops false objects on debris); default: the model's setting")
    predict.add_argument("--refine", choices=("graphcut", "crf", "levelset", "shape", "corrective"), default=None,
                         help="refine each prediction (hitlseg.refine): graph cut, dense CRF, level sets (Chan-Vese "
                              "per object), an active shape model or corrective learning; the last two read "
                              "--refine-model (written by 'hitlseg refiner'); 'shape' without one learns it from "
                              "the model's confident objects of --refine-class on the images being predicted")
    predict.add_argument("--refine-model", metavar="FILE", help="shape or corrective model file (.npz) for --refine")
    predict.add_argument("--refine-class", type=argtypes.positive_int, metavar="K",
                         help="class the shape model refines when it is learned here (no --refine-model)")
    predict.add_argument("--block", type=argtypes.positive_int, default=None, metavar="N",
                         help="predict block by block (N pixels per axis, plus --halo of context), for images or "
                              "volumes larger than memory; --images may then be one image file or a zarr / "
                              "OME-Zarr store, whose labels go to OUT/NAME.zarr")
    predict.add_argument("--halo", type=argtypes.non_negative_int, default=64, metavar="H",
                         help="with --block: context on each side of a block (default 64, at least the network's reach)")
    predict.add_argument("--device", type=argtypes.device, default=None, help="cpu, cuda ... (default: CUDA when present)")
    predict.add_argument("--json", action="store_true", help="print JSON")
    add_execution_arguments(predict)
    predict.set_defaults(func=run_predict)


def _split_file(model_file: Path) -> Path:
    """Where ``train`` saves the split it made: next to the model, ``NAME.split.json``."""
    return model_file.with_name(model_file.name.split(".")[0] + ".split.json")


SELECT_MODEL = "flim.pt"  # the FLIM model 'hitlseg select --out DIR' writes into DIR


def _flim_file(source: str) -> Path:
    """The FLIM model file of ``--encoder flim:SOURCE``: the file, or ``SOURCE/flim.pt`` for a folder."""
    from hitlseg.errors import InputError

    path = Path(source)
    if path.is_dir():
        model = path / SELECT_MODEL
        if not model.is_file():
            raise InputError(f"{path}: --encoder flim:{source}: the folder holds no {SELECT_MODEL} (write one with "
                             f"'hitlseg select --robot --out {source}' or 'hitlseg flim fit --out FILE')")
        return model
    return path


def _markers_folder(markers: str | None) -> Path | None:
    """``--markers``: a folder of marker files, or a 'select --out' folder holding ``markers/``."""
    from hitlseg.errors import InputError

    if markers is None:
        return None
    path = Path(markers)
    if not path.is_dir():
        raise InputError(f"{path}: --markers: folder not found" if not path.exists()
                         else f"{path}: --markers must name a folder, but it is a file")
    if (path / "markers").is_dir() and (path / "selected.json").is_file():
        return path / "markers"
    return path


def _open_dataset(root: Path, markers: Path | None, **options):
    """The dataset at ``root``; with ``markers``, its images and masks with the marker files of that folder."""
    from hitlseg.dataset import Dataset
    from hitlseg.errors import InputError

    if markers is None:
        return Dataset.from_folder(root, **options)
    if not (root / "images").is_dir():
        raise InputError(f"{root}: --markers needs a dataset with an images/ folder (with one folder per case, "
                         f"put the marker file in each case folder)")
    masks = root / "masks"
    dataset = Dataset.from_parts(root / "images", masks if masks.is_dir() else None, markers, **options)
    dataset.root = root
    return dataset


def _warn_flim_leak(source: Path, split) -> None:
    """Warn when the FLIM model of a 'select --out' folder learned from validation or test images."""
    import json
    import warnings

    from hitlseg.errors import DataWarning

    info = source.parent / "selected.json"
    if source.name != SELECT_MODEL or not info.is_file():
        return
    try:
        selected = [str(i) for i in json.loads(info.read_text())["selected"]]
    except (OSError, ValueError, KeyError, TypeError):
        return
    outside = [i for i in selected if split.part_of(i) in ("val", "test")]
    if outside:
        warnings.warn(f"{source}: the FLIM encoder was learned from {len(outside)} images outside the training "
                      f"part of the split ({', '.join(outside[:5])}); pass the same --split to 'select'",
                      DataWarning, stacklevel=2)


def _check_sizes(dataset, ids, arch, *, reflect: bool, training: bool) -> None:
    """Raise :class:`InputError` naming the first image of ``ids`` too small for ``arch`` (from file headers,
    at the dataset's working resolution)."""
    from hitlseg.io import peek_image
    from hitlseg.io.resample import working_shape
    from hitlseg.validate import check_image_size

    for sample_id in ids:
        paths = dataset.sample(sample_id).image_paths
        shape = working_shape(peek_image(paths)[1], dataset.max_side)
        check_image_size(shape, arch, str(paths[0]), reflect=reflect, training=training)


def _preprocessing(flim, max_side) -> dict:
    """The model's preprocessing: the FLIM encoder's (or the default), with ``--max-side`` when given."""
    preprocessing = dict(flim.preprocessing) if flim is not None else {"color": "lab", "normalize": "percentile"}
    if max_side is not None:
        preprocessing["max_side"] = max_side
    return preprocessing


def run_train(args) -> int:
    import time

    from hitlseg.dataset import reading_options
    from hitlseg.errors import InputError
    from hitlseg.flim.model import FLIMModel
    from hitlseg.flim.spec import default_arch
    from hitlseg.nets import SegModel, TrainConfig, train
    from hitlseg.nets import workflow
    from hitlseg.validate import check_output_file

    if args.labels == "markers":
        return run_train_markers(args)
    config = TrainConfig(epochs=args.epochs or 100, batch_size=args.batch_size, lr=args.lr, crop_size=args.crop_size,
                         seed=args.seed, device=args.device, ncut_weight=args.ncut_weight or 0.0,
                         crf_weight=args.crf_weight or 0.0)
    root = Path(args.dataset)
    markers_dir = _markers_folder(args.markers)
    peek = _open_dataset(root, markers_dir)
    encoder_spec = args.encoder
    if encoder_spec is None:
        encoder_spec = "flim:markers" if any(s.markers_path is not None for s in peek) else "flim:robot"
    kind, source = workflow.parse_encoder(encoder_spec)
    out = Path(args.out) if args.out else Path(f"{root.resolve().name}-{'unet' if kind == 'backprop' else 'sunet'}.pt")
    check_output_file(out, "--out" if args.out else "model file")
    if args.checkpoint:
        check_output_file(args.checkpoint, "--checkpoint")
    if markers_dir is not None and not (kind == "flim" and source == "markers"):
        raise InputError(f"--markers: the markers are used by --encoder flim:markers or --labels markers, "
                         f"not by --encoder {encoder_spec}")
    flim = None
    if kind == "flim" and source not in ("robot", "markers"):
        flim_file = _flim_file(source)
        flim = FLIMModel.load(flim_file)
    preprocessing = _preprocessing(flim, args.max_side)
    dataset = _open_dataset(root, markers_dir, **reading_options(preprocessing))
    split, split_source = workflow.resolve_split(dataset, args.split, args.seed)
    if flim is not None:
        _warn_flim_leak(flim_file, split)
    if not split.train:
        raise InputError(f"{args.split or root}: the training set is empty")
    if args.split is None and split_source != "predefined":
        check_output_file(_split_file(out), "split file")
    arch = flim.encoder.arch if flim is not None else default_arch()
    _check_sizes(dataset, split.train, arch, reflect=kind == "flim", training=True)
    _check_sizes(dataset, split.val, arch, reflect=kind == "flim", training=False)
    quiet = args.json
    with progress_bar("loading", enabled=not quiet) as progress:
        train_pairs = workflow.load_pairs(dataset, split.train, "training", progress)
        val_pairs = workflow.load_pairs(dataset, split.val, "validation", progress)
    n_classes = workflow.n_classes_of(train_pairs + val_pairs,
                                      [str(dataset.sample(i).mask_path) for i in split.train + split.val])
    channels = train_pairs[0][0].shape[0]
    ndim = train_pairs[0][0].ndim - 1
    info = {"dataset": str(root.resolve()), "split": split.to_dict(), "split_source": split_source, "encoder": encoder_spec}
    started = time.perf_counter()
    if kind == "flim":
        if flim is not None:
            encoder = flim.encoder
            if encoder.in_channels != channels or encoder.ndim != ndim:
                raise InputError(f"{source}: the FLIM encoder takes {encoder.in_channels}-channel {encoder.ndim}D images, "
                                 f"but {root} has {channels}-channel {ndim}D images")
        else:
            with progress_bar("FLIM encoder", enabled=not quiet) as progress:
                if source == "robot":
                    encoder, chosen = workflow.robot_encoder(train_pairs, seed=args.seed, device=args.device, progress=progress)
                    info["flim_images"] = [split.train[i] for i in chosen]
                else:
                    encoder, info["flim_images"] = workflow.markers_encoder(dataset, split.train, seed=args.seed,
                                                                            device=args.device, progress=progress)
        model = SegModel.sunet(encoder, n_classes, preprocessing=preprocessing, seed=args.seed)
    else:
        model = SegModel.unet(channels, n_classes, ndim, preprocessing=preprocessing, seed=args.seed)
    names = {"train": list(split.train), "val": list(split.val)}
    with progress_bar("training", enabled=not quiet) as progress:
        result = train(model, train_pairs, val_pairs, config, progress=progress, checkpoint=args.checkpoint, names=names)
    info["train"] = result.to_dict()
    synthesis = None
    if args.synthetic:
        from hitlseg.synthesis import GeneratorConfig, SynthesisConfig, train_with_synthesis

        with progress_bar("synthesis", enabled=not quiet) as progress:
            synthesis = train_with_synthesis(model, train_pairs, val_pairs, config, SynthesisConfig(args.synthetic,
                                             generator=GeneratorConfig(steps=args.generator_steps)),
                                             first_val_dice=result.best_val_dice, names=names,
                                             progress=progress)["synthesis"]
        info["synthesis"] = synthesis
    info["seconds"] = time.perf_counter() - started
    model.info = info
    model.save(out)
    split_file = None
    if args.split is None and split_source != "predefined":
        split_file = split.save(_split_file(out))
    summary = {"model": str(out), "kind": model.kind, "encoder": encoder_spec, "n_classes": n_classes,
               "train": len(split.train), "val": len(split.val), "test": len(split.test), "epochs": config.epochs,
               "best_epoch": result.best_epoch, "best_val_dice": result.best_val_dice, "seconds": info["seconds"],
               "split_file": str(split_file) if split_file else None}
    if synthesis is not None:
        summary["synthesis"] = {k: synthesis.get(k) for k in ("candidates", "realistic", "kept", "first_val_dice",
                                                              "fine_tuned_val_dice", "seconds")}
        summary["synthesis"]["samples"] = synthesis.get("samples", [])
        summary["synthesis"]["model_kept"] = synthesis["model_kept"]
    if args.json:
        print_json(summary)
        return 0
    dice = "n/a (no validation images)" if result.best_val_dice is None else f"{result.best_val_dice:.4f}"
    print(f"model:     {out} ({model.kind}, encoder {encoder_spec}, {n_classes} classes)")
    print(f"images:    {len(split.train)} train, {len(split.val)} val, {len(split.test)} test ({split_source})")
    print(f"val dice:  {dice} (best of {config.epochs} epochs: epoch {result.best_epoch})")
    if synthesis is not None:
        print(f"synthetic: {len(synthesis.get('samples', []))} of {synthesis.get('candidates', 0)} candidates added, "
              f"fine-tuned val dice {synthesis.get('fine_tuned_val_dice')}, kept the {synthesis['model_kept']} model")
    print(f"time:      {info['seconds']:.1f} s")
    if split_file:
        print(f"split:     {split_file}")
    return 0


def run_train_markers(args) -> int:
    """``train --labels markers``: strokes + self-training; reads images and marker files only."""
    import time

    from hitlseg.dataset import reading_options
    from hitlseg.errors import InputError
    from hitlseg.flim.model import FLIMModel
    from hitlseg.flim.spec import default_arch
    from hitlseg.nets import workflow
    from hitlseg.pseudo import SelfTrainingConfig, default_strokes_config, learn_from_strokes
    from hitlseg.validate import check_output_file

    started = time.perf_counter()
    encoder_spec = args.encoder or "flim:markers"
    kind, source = workflow.parse_encoder(encoder_spec)
    if kind != "flim" or source == "robot":
        raise InputError(f"--encoder: with --labels markers use flim:markers or flim:MODEL_FILE, got {encoder_spec!r} "
                         f"(the robot needs masks)")
    root = Path(args.dataset)
    out = Path(args.out) if args.out else Path(f"{root.resolve().name}-strokes-sunet.pt")
    check_output_file(out, "--out" if args.out else "model file")
    flim = None
    markers_dir = _markers_folder(args.markers)
    if source != "markers":
        flim_file = _flim_file(source)
        flim = FLIMModel.load(flim_file)
    preprocessing = _preprocessing(flim, args.max_side)
    dataset = _open_dataset(root, markers_dir, **reading_options(preprocessing))
    stray = [str(path.name) for path, reason in dataset.ignored if reason.startswith("markers without an image")]
    if stray:
        raise InputError(f"{markers_dir or root / 'markers'}: markers of images that are not in the dataset: "
                         f"{', '.join(stray[:5])}{' ...' if len(stray) > 5 else ''}")
    split, split_source = workflow.resolve_split(dataset, args.split, args.seed, labels="markers")
    if flim is not None:
        _warn_flim_leak(flim_file, split)
    if not split.train:
        raise InputError(f"{args.split or root}: the training set is empty")
    if args.split is None and split_source != "predefined":
        check_output_file(_split_file(out), "split file")
    _check_sizes(dataset, split.train if args.self_training > 0 else
                 [i for i in split.train if dataset.sample(i).markers_path is not None],
                 flim.encoder.arch if flim is not None else default_arch(), reflect=True, training=True)
    overrides = {"seed": args.seed, "device": args.device, "batch_size": args.batch_size, "lr": args.lr,
                 "crop_size": args.crop_size}
    for name in ("epochs", "ncut_weight", "crf_weight"):
        if getattr(args, name) is not None:
            overrides[name] = getattr(args, name)
    self_training = SelfTrainingConfig(iterations=args.self_training)
    quiet = args.json
    with progress_bar("reading", enabled=not quiet) as progress:
        marked, images, markers, others = workflow.load_strokes(dataset, split.train, progress)
    config = default_strokes_config(images[0].ndim - 1, **overrides)
    if flim is not None and (flim.encoder.in_channels != images[0].shape[0] or flim.encoder.ndim != images[0].ndim - 1):
        raise InputError(f"{source}: the FLIM encoder takes {flim.encoder.in_channels}-channel {flim.encoder.ndim}D "
                         f"images, but {root} has {images[0].shape[0]}-channel {images[0].ndim - 1}D images")
    pool = workflow.LazyImages(dataset, others if args.self_training > 0 else [])
    with progress_bar("learning from strokes", enabled=not quiet) as progress:
        result = learn_from_strokes(images, markers, pool, encoder=flim.encoder if flim is not None else None,
                                    config=config, self_training=self_training, preprocessing=preprocessing,
                                    names=marked, pool_names=pool.ids, seed=args.seed, device=args.device,
                                    expand=args.expand_strokes, progress=progress)
    model = result.model
    synthesis = _synthesis_from_strokes(args, model, images, markers, pool, config, marked, quiet) \
        if args.synthetic else None
    model.info.update({"dataset": str(root.resolve()), "split": split.to_dict(), "split_source": split_source,
                       "encoder": encoder_spec, "marked_images": marked, "seconds": time.perf_counter() - started})
    model.save(out)
    split_file = None
    if args.split is None and split_source != "predefined":
        split_file = split.save(_split_file(out))
    last = result.history[-1]
    summary = {"model": str(out), "kind": model.kind, "labels": "markers", "encoder": encoder_spec,
               "n_classes": model.n_classes, "postprocess": model.postprocess, "flim_decoder": model.flim_decoder,
               "marked_images": marked, "marked_fraction": result.marked_fraction,
               "pool_images": len(pool), "iterations": len(result.history) - 1, "stopped": result.stopped,
               "machine_labelled": last["machine_labelled"], "seconds": time.perf_counter() - started,
               "split_file": str(split_file) if split_file else None,
               "history": [{k: v for k, v in h.items() if k != "chosen"} for h in result.history]}
    if synthesis is not None:
        summary["synthesis"] = {k: synthesis.get(k) for k in ("candidates", "realistic", "kept", "generator_seconds",
                                                              "seconds")}
    if args.json:
        print_json(summary)
        return 0
    print(f"model:     {out} (sunet from strokes, encoder {encoder_spec}, {model.n_classes} classes)")
    print(f"strokes:   {len(marked)} marked images, {result.marked_fraction:.2%} of their pixels marked")
    if "expanded_fraction" in result.history[0]:
        print(f"expanded:  {result.history[0]['expanded_fraction']:.2%} of their pixels after the graph cut")
    for h in result.history[1:]:
        print(f"iteration {h['iteration']}: {h['pool_images']} pool images pseudo-labelled, "
              f"{h['machine_labelled']:.1%} of pool pixels, loss {h['loss']:.4f}")
    print(f"stopped:   {result.stopped}")
    if model.postprocess == "agree":
        print(f"labels:    objects the FLIM adaptive decoder ({model.flim_decoder}) also finds "
              f"(predict --postprocess none for the raw labels)")
    if synthesis is not None:
        print(f"synthetic: {synthesis['kept']} of {synthesis['candidates']} candidates added "
              f"(masks: the model's predictions under the strokes)")
    print(f"time:      {summary['seconds']:.1f} s")
    if split_file:
        print(f"split:     {split_file}")
    return 0


def _synthesis_from_strokes(args, model, images, markers, pool, config, names, quiet) -> dict:
    """``train --labels markers --synthetic N``: synthetic samples from the accepted predictions, then more training.

    The masks are the model's predictions with the strokes over them (no ground truth); the
    model is then trained further, warm-started, on the strokes and the synthetic pairs (one
    self-training iteration on the pool when there is one). ``model`` is updated in place.
    """
    from dataclasses import replace

    from hitlseg.pseudo import Schedule, SelfTrainingConfig, learn_from_strokes
    from hitlseg.synthesis import accepted_mask, synthesize_from_annotations

    with progress_bar("synthesis", enabled=not quiet) as progress:
        pairs = [(image, accepted_mask(model.predict(image, postprocess="none").labels, m))
                 for image, m in zip(images, markers)]
        samples, record, _ = synthesize_from_annotations(model, pairs, args.synthetic, steps=args.generator_steps,
                                                         seed=args.seed, progress=progress)
    if not samples:
        return record
    first_info = dict(model.info or {})
    self_training = SelfTrainingConfig(iterations=1 if len(pool) else 0, schedule=Schedule(beta0=0.75, gamma0=1.0))
    with progress_bar("training with synthetic samples", enabled=not quiet) as progress:
        further = learn_from_strokes(images, markers, pool, model=model, config=replace(config, epochs=max(1, config.epochs // 2)),
                                     self_training=self_training, names=names, pool_names=pool.ids, seed=args.seed,
                                     strokes_stage=not len(pool), extra=samples, progress=progress)
    record["further_training"] = [{k: v for k, v in h.items() if k != "chosen"} for h in further.history]
    model.info = {**first_info, "synthesis": record}
    return record


def run_predict(args) -> int:
    import time

    from hitlseg.dataset import Split
    from hitlseg.nets import SegModel
    from hitlseg.nets import workflow
    from hitlseg.validate import check_output_dir

    check_output_dir(args.out)
    executor = executor_from_args(args)  # an unreachable scheduler fails here, before any work
    refine_model = _refine_model(args)
    model = SegModel.load(args.model, device=args.device)
    if args.block is not None:
        return _predict_blocks(args, model, executor)
    dataset = workflow.open_images(args.images, model.preprocessing)
    ids = None
    if args.split:
        ids = getattr(Split.load(args.split, dataset), args.part)
    started = time.perf_counter()
    if args.refine == "shape" and refine_model is None:
        with progress_bar("learning the shape model", enabled=not args.json) as progress:
            refine_model = workflow.fit_shape_model(model, dataset, dataset.ids if ids is None else ids,
                                                    args.refine_class, progress=progress)
    options = {} if refine_model is None else {"model": refine_model}
    with executor, progress_bar("predicting", enabled=not args.json) as progress:
        written = workflow.predict_dataset(model, dataset, args.out, ids, probabilities=args.probabilities,
                                           preview=args.preview, postprocess=args.postprocess, refine=args.refine,
                                           refine_options=options, executor=executor, progress=progress)
    seconds = time.perf_counter() - started
    summary = {"model": args.model, "images": len(written), "out": str(args.out), "refine": args.refine,
               "seconds": seconds, "seconds_per_image": seconds / max(1, len(written))}
    if args.json:
        print_json(summary)
    else:
        print(f"wrote {len(written)} masks to {args.out} ({summary['seconds_per_image']:.3f} s per image)")
    return 0


def _predict_blocks(args, model, executor) -> int:
    """``predict --block``: each image file of --images (or the one file or zarr store) block by block."""
    import time

    from hitlseg.errors import InputError
    from hitlseg.io import is_image_file
    from hitlseg.parallel.blocks import BLOCK_REFINERS, _zarr_path, predict_to_file

    for option in ("split", "postprocess"):
        if getattr(args, option):
            raise InputError(f"--{option}: not available with --block (it needs whole images)")
    if args.refine is not None and args.refine not in BLOCK_REFINERS:
        raise InputError(f"--refine {args.refine}: not available with --block (it fits whole objects); "
                         f"use {', '.join(BLOCK_REFINERS)}")
    refine_model = _refine_model(args)
    refine_options = {} if refine_model is None else {"model": refine_model}
    if args.probabilities or args.preview:
        raise InputError("--probabilities and --preview: not available with --block")
    source = Path(args.images)
    if _zarr_path(source) is not None or source.is_file():
        inputs = [source]
    elif source.is_dir():
        folder = source / "images" if (source / "images").is_dir() else source
        inputs = sorted(p for p in folder.iterdir() if is_image_file(p) or _zarr_path(p) is not None)
    else:
        raise InputError(f"{source}: no such image, zarr store or folder")
    if not inputs:
        raise InputError(f"{source}: no image file or zarr store to predict")
    started = time.perf_counter()
    written = []
    with executor, progress_bar("predicting blocks", enabled=not args.json) as progress:
        for path in inputs:
            written.append(str(predict_to_file(model, path, args.out, block=args.block, halo=args.halo,
                                               executor=executor, refine=args.refine, refine_options=refine_options,
                                               progress=progress)))
    seconds = time.perf_counter() - started
    if args.json:
        print_json({"model": args.model, "images": len(written), "out": str(args.out), "written": written,
                    "block": args.block, "halo": args.halo, "refine": args.refine, "seconds": seconds})
    else:
        print(f"wrote {len(written)} label files to {args.out} block by block ({seconds:.1f} s)")
    return 0


def _refine_model(args):
    """The --refine-model file, checked against --refine before any prediction runs (None when not needed)."""
    from hitlseg.errors import InputError
    from hitlseg.refine import CorrectiveModel, ShapeModel, load_refiner_model

    if args.refine not in ("shape", "corrective"):
        for option in ("refine_model", "refine_class"):
            if getattr(args, option) is not None:
                raise InputError(f"--{option.replace('_', '-')}: only used with --refine shape or corrective")
        return None
    if args.refine_model is None:
        if args.refine == "corrective":
            raise InputError("--refine corrective: needs --refine-model FILE (write one with 'hitlseg refiner corrective')")
        if args.refine_class is None:
            raise InputError("--refine shape: needs --refine-model FILE, or --refine-class K to learn the shape "
                             "model here from the model's confident objects of class K")
        return None
    model = load_refiner_model(args.refine_model)
    expected = ShapeModel if args.refine == "shape" else CorrectiveModel
    if not isinstance(model, expected):
        raise InputError(f"{args.refine_model}: a {type(model).__name__}, but --refine {args.refine} needs a "
                         f"{expected.__name__}")
    if args.refine_class is not None:
        raise InputError("--refine-class: the shape model file already names its class; drop --refine-class")
    return model
