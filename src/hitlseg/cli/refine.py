"""``hitlseg refiner``: learn the refiners that need training (active shape model, corrective learning)."""

from __future__ import annotations

from hitlseg.cli import args as argtypes
from hitlseg.cli.common import print_json, progress_bar


def register(commands) -> None:
    """Add the ``refiner`` command to the sub-parser ``commands``."""
    parser = commands.add_parser(
        "refiner", help="learn a shape or corrective model for 'predict --refine shape|corrective'",
        description="Learn a refiner and write it as one .npz file of plain arrays. 'shape': an active shape model "
                    "of the objects of one class (2D), from the dataset's masks, or with --model from that "
                    "model's confident predictions (no mask read). 'corrective': a classifier of --model's "
                    "systematic errors, from images with masks (Wang et al. 2011).")
    parser.add_argument("kind", choices=("shape", "corrective"), help="which refiner to learn")
    parser.add_argument("--dataset", required=True, help="dataset folder (images/ and masks/, or one folder per case)")
    parser.add_argument("--split", help="split JSON: use only the ids of --part")
    parser.add_argument("--part", choices=("train", "val", "test"), default="train", help="part of --split (default train)")
    parser.add_argument("--model", help="segmentation model file ('hitlseg train'): the host of corrective "
                                        "learning (required), or the source of confident shapes for 'shape'")
    parser.add_argument("--class", dest="class_index", type=argtypes.positive_int, metavar="K",
                        help="the class of the shape model (required for 'shape')")
    parser.add_argument("--seed", type=argtypes.seed, default=0, help="seed of the corrective classifier (default 0)")
    parser.add_argument("--device", type=argtypes.device, default=None, help="cpu, cuda ... (default: CUDA when present)")
    parser.add_argument("--out", required=True, metavar="FILE", help="model file to write (.npz)")
    parser.add_argument("--json", action="store_true", help="print a JSON summary")
    parser.set_defaults(func=run_refiner)


def run_refiner(args) -> int:
    import time

    from hitlseg.dataset import Dataset, Split
    from hitlseg.errors import InputError
    from hitlseg.nets import SegModel, workflow
    from hitlseg.validate import check_output_file

    out = check_output_file(args.out)
    if args.kind == "shape" and args.class_index is None:
        raise InputError("--class: 'refiner shape' needs the class K whose objects it models")
    if args.kind == "corrective" and args.model is None:
        raise InputError("--model: 'refiner corrective' needs the segmentation model whose errors it learns")
    if args.kind == "corrective" and args.class_index is not None:
        raise InputError("--class: only used by 'refiner shape'")
    host = SegModel.load(args.model, device=args.device) if args.model else None
    dataset = workflow.open_images(args.dataset, host.preprocessing) if host is not None else Dataset.from_folder(args.dataset)
    ids = list(getattr(Split.load(args.split, dataset), args.part)) if args.split else list(dataset.ids)
    started = time.perf_counter()
    with progress_bar(f"learning the {args.kind} model", enabled=not args.json) as progress:
        if args.kind == "shape":
            model = workflow.fit_shape_model(host, dataset, ids, args.class_index, from_masks=host is None,
                                             progress=progress)
        else:
            model = workflow.fit_corrective_model(host, dataset, ids, seed=args.seed, progress=progress)
    model.save(out)
    summary = {"kind": args.kind, "out": str(out), "images": len(ids), "seconds": time.perf_counter() - started}
    if args.kind == "shape":
        summary.update(class_index=model.class_index, shapes=model.n_shapes, modes=model.n_modes)
    if args.json:
        print_json(summary)
    elif args.kind == "shape":
        print(f"wrote {out}: shape model of class {model.class_index} from {model.n_shapes} objects, "
              f"{model.n_modes} modes")
    else:
        print(f"wrote {out}: corrective model from {len(ids)} images")
    return 0
