"""``hitlseg quality``: train a no-reference quality model, and score predictions without ground truth."""

from __future__ import annotations

from hitlseg.cli import args as argtypes
from hitlseg.cli.common import print_json, progress_bar


def register(commands) -> None:
    """Add the ``quality`` command (``train`` and ``score``) to the sub-parser ``commands``."""
    parser = commands.add_parser(
        "quality", help="no-reference segmentation quality: train a quality model, score predictions",
        description="A small CNN that predicts the Dice (and NMI) of a mask from the image and the mask alone "
                    "(Galdran et al., MICCAI 2018). 'train' learns it from degraded versions of a dataset's masks; "
                    "'score' rates predictions without their ground truth, worst first.")
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)

    train = actions.add_parser("train", help="learn a quality model from a dataset's masks (degraded)",
                               description="Degrade every training mask in controlled ways (erosion, dilation, "
                                           "holes, spurious blobs, boundary noise, shifts, class swaps) and learn "
                                           "each degraded mask's Dice and NMI against its truth.")
    train.add_argument("--dataset", required=True, help="dataset folder (images/ and masks/, or one folder per case)")
    train.add_argument("--split", help="split JSON: use only the ids of --part")
    train.add_argument("--part", choices=("train", "val", "test"), default="train", help="part of --split (default train)")
    train.add_argument("--predictions", metavar="DIR",
                       help="folder of real predictions (masks named by image stem) of dataset images, also learned "
                            "from, against their masks")
    train.add_argument("--epochs", type=argtypes.positive_int, default=20, help="training epochs (default 20)")
    train.add_argument("--samples-per-image", type=argtypes.positive_int, default=8, metavar="N",
                       help="degraded masks per training mask (default 8)")
    train.add_argument("--batch-size", type=argtypes.positive_int, default=32, help="samples per step (default 32)")
    train.add_argument("--seed", type=argtypes.seed, default=0, help="seed of the degradations and training (default 0)")
    train.add_argument("--device", type=argtypes.device, default=None, help="cpu, cuda ... (default: CUDA when present)")
    train.add_argument("--out", required=True, metavar="QMODEL", help="quality model file to write (.pt)")
    train.add_argument("--json", action="store_true", help="print a JSON summary")
    train.set_defaults(func=run_train)

    score = actions.add_parser("score", help="predicted quality of each prediction, worst first",
                               description="Score every prediction of --pred (masks named by image stem) on its "
                                           "image in --images; no ground truth is read. Warns when the images "
                                           "differ from the quality model's training data.")
    score.add_argument("--model", required=True, metavar="QMODEL", help="quality model file ('hitlseg quality train')")
    score.add_argument("--images", required=True, help="folder of images, or a dataset folder")
    score.add_argument("--pred", required=True, metavar="DIR", help="folder of predicted masks, named by image stem")
    score.add_argument("--device", type=argtypes.device, default=None, help="cpu, cuda ... (default: CUDA when present)")
    score.add_argument("--json", action="store_true", help="print JSON")
    score.set_defaults(func=run_score)


def _pairs(dataset, ids, folder, role: str, progress=None):
    """Images of ``ids`` and their masks from ``folder`` (matched by stem), checked against the image shapes."""
    from hitlseg.dataset import Dataset
    from hitlseg.errors import InputError
    from hitlseg.progress import report

    flat = Dataset.from_parts(_images_folder(dataset), folder, color=dataset.color, normalize=dataset.normalize,
                              max_side=dataset.max_side)
    missing = [i for i in ids if i not in flat or flat.sample(i).mask_path is None]
    if missing:
        shown = ", ".join(missing[:5]) + (" ..." if len(missing) > 5 else "")
        raise InputError(f"{folder}: no {role} for {len(missing)} image(s): {shown}")
    images, masks = [], []
    for done, sample_id in enumerate(ids):
        report(progress, done, len(ids), f"reading {sample_id}")
        image, _ = flat.image(sample_id)
        images.append(image)
        masks.append(flat.mask(sample_id, image.shape[1:]))
    return images, masks


def _images_folder(dataset):
    from hitlseg.errors import InputError

    folders = {path.parent for sample in dataset for path in sample.image_paths}
    if len(folders) != 1:
        raise InputError(f"{dataset.root}: predictions are matched to images of one folder (images/), "
                         f"but this dataset has one folder per case")
    return folders.pop()


def run_train(args) -> int:
    import time
    from pathlib import Path

    from hitlseg.dataset import Dataset, Split
    from hitlseg.errors import InputError
    from hitlseg.nets.workflow import load_pairs, n_classes_of
    from hitlseg.quality import train_quality
    from hitlseg.validate import check_output_file

    out = check_output_file(args.out)
    dataset = Dataset.from_folder(args.dataset)
    if args.split:
        ids = list(getattr(Split.load(args.split, dataset), args.part))
    else:
        ids = dataset.with_masks()
    if not ids:
        raise InputError(f"{args.dataset}: no sample has a mask, so there is nothing to learn quality from")
    if args.predictions is not None and not Path(args.predictions).is_dir():
        raise InputError(f"--predictions: {args.predictions}: folder not found")
    started = time.perf_counter()
    with progress_bar("quality model", enabled=not args.json) as progress:
        pairs = load_pairs(dataset, ids, "training")
        k = n_classes_of(pairs, ids)
        extra = []
        if args.predictions is not None:
            images, predictions = _pairs(dataset, ids, Path(args.predictions), "prediction")
            extra = [(image, prediction, mask) for image, prediction, (_, mask) in zip(images, predictions, pairs)]
        model = train_quality([image for image, _ in pairs], [mask for _, mask in pairs], n_classes=k, extra=extra,
                              epochs=args.epochs, samples_per_image=args.samples_per_image, batch_size=args.batch_size,
                              preprocessing={"color": dataset.color, "normalize": dataset.normalize},
                              seed=args.seed, device=args.device, progress=progress)
    model.info["dataset"] = str(args.dataset)
    model.save(out)
    summary = {"out": str(out), "images": len(ids), "n_classes": k, "real_predictions": len(extra),
               "degraded_samples": model.info["degraded_samples"], "best_epoch": model.info["best_epoch"],
               "val_pearson_dice": model.info["val_pearson_dice"], "seconds": time.perf_counter() - started}
    if args.json:
        print_json(summary)
    else:
        r = model.info["val_pearson_dice"]
        print(f"wrote {out}: quality model of {k} classes from {len(ids)} images ({summary['degraded_samples']} "
              f"degraded masks, {len(extra)} predictions)" + (f", validation r {r:.3f}" if r is not None else ""))
    return 0


def run_score(args) -> int:
    from pathlib import Path

    from hitlseg.errors import InputError
    from hitlseg.nets.workflow import open_images
    from hitlseg.quality import QualityModel, rank_predictions

    model = QualityModel.load(args.model, device=args.device)
    pred = Path(args.pred)
    if not pred.is_dir():
        raise InputError(f"--pred: {pred}: folder not found")
    dataset = open_images(args.images, model.preprocessing)
    ids = dataset.ids
    with progress_bar("scoring", enabled=not args.json) as progress:
        images, masks = _pairs(dataset, ids, pred, "prediction")
        result = rank_predictions(model, dict(zip(ids, images)), dict(zip(ids, masks)), progress=progress)
    if args.json:
        print_json({"model": str(args.model), "images": len(ids), **result})
        return 0
    width = max(len(r["id"]) for r in result["ranking"])
    print(f"{'image':<{width}}  predicted Dice  predicted NMI")
    for row in result["ranking"]:
        print(f"{row['id']:<{width}}  {row['dice']:14.3f}  {row['nmi']:13.3f}")
    print(f"{'mean':<{width}}  {result['mean']['dice']:14.3f}  {result['mean']['nmi']:13.3f}")
    return 0
