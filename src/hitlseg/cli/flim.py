"""``hitlseg flim fit`` and ``hitlseg flim predict``."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from hitlseg.cli import args as argtypes
from hitlseg.cli.common import print_json, progress_bar
from hitlseg.defaults import DECODER_CHOICES, DECODERS, DEFAULT_DECODER
from hitlseg.errors import InputError


def register(commands) -> None:
    """Add ``flim fit`` and ``flim predict``."""
    flim = commands.add_parser("flim", help="learn FLIM encoders from markers and segment with adaptive decoders")
    sub = flim.add_subparsers(dest="flim_command", metavar="COMMAND", required=True)

    fit = sub.add_parser("fit", help="learn a FLIM encoder from marked images")
    fit.add_argument("--images", required=True, help="folder of images, or a dataset folder with images/ and markers/")
    fit.add_argument("--markers", help="folder of marker files (NAME[-seeds].txt or label images), matched by stem")
    fit.add_argument("--arch", help="architecture JSON (hitlseg's or the FLIM community's arch.json)")
    fit.add_argument("--decoder", default=DEFAULT_DECODER, choices=list(DECODER_CHOICES),
                     help=f"decoder rule stored with the model (default {DEFAULT_DECODER}: the rule that best labels "
                          "the marker pixels; see the README's Defaults)")
    fit.add_argument("--max-side", type=argtypes.max_side, default=None, metavar="N",
                     help="working resolution: read images and markers with the longest side at most N pixels "
                          "(every stroke kept); stored with the model, so 'flim predict' and an sU-Net on this "
                          "encoder read at N and write masks at each input's size (default: the images' own)")
    fit.add_argument("--seed", type=argtypes.seed, default=0)
    fit.add_argument("--device", type=argtypes.device, default="auto", help="cpu, cuda, cuda:N, mps or auto (default)")
    fit.add_argument("--out", required=True, help="model file to write")
    fit.add_argument("--predict", metavar="DIR",
                     help="then segment every image of --images with the new model in the same process (images "
                          "read once, as 'flim predict' would write them) and write the masks to DIR")
    fit.add_argument("--saliency", action="store_true", help="with --predict: also write saliency maps")
    fit.add_argument("--json", action="store_true")
    fit.set_defaults(func=run_fit)

    predict = sub.add_parser("predict", help="segment images with a FLIM model and an adaptive decoder")
    predict.add_argument("--model", required=True)
    predict.add_argument("--images", required=True, help="folder of images, or a dataset folder")
    predict.add_argument("--out", required=True, help="folder for masks (same format as the inputs)")
    predict.add_argument("--decoder", choices=list(DECODERS), help="decoder rule (default: the model's)")
    predict.add_argument("--saliency", action="store_true", help="also write saliency maps")
    predict.add_argument("--device", type=argtypes.device, default="auto", help="cpu, cuda, cuda:N, mps or auto (default)")
    predict.set_defaults(func=run_predict)


def _marked_dataset(images: str, markers: str | None, max_side: int | None = None):
    """A dataset folder (with markers/), or an images folder with a separate markers folder."""
    from hitlseg.dataset import Dataset

    root = Path(images)
    if markers is None and (root / "images").is_dir():
        return Dataset.from_folder(root, max_side=max_side)
    return Dataset.from_parts(root, markers_dir=markers, max_side=max_side)


def _preprocessing_of(dataset) -> dict:
    """The preprocessing a FLIM model stores: how ``dataset`` read its images."""
    preprocessing = {"color": dataset.color, "normalize": dataset.normalize}
    if dataset.max_side is not None:
        preprocessing["max_side"] = dataset.max_side
    return preprocessing


def run_fit(args) -> int:
    from hitlseg.flim import FLIMModel, default_arch, read_arch
    from hitlseg.validate import check_image_size, check_output_dir, check_output_file

    check_output_file(args.out)
    if args.saliency and not args.predict:
        raise InputError("--saliency: writes saliency maps beside the masks of --predict DIR; pass --predict too")
    predict_out = check_output_dir(args.predict, "--predict") if args.predict else None
    dataset = _marked_dataset(args.images, args.markers, args.max_side)
    marked = [s.id for s in dataset if s.markers_path is not None]
    if not marked:
        raise InputError(f"{args.markers or args.images}: no marker file matches an image (names like NAME-seeds.txt or NAME.png)")
    arch = read_arch(args.arch) if args.arch else default_arch()
    images, markers, loaded = [], [], {}
    for sample_id in marked:
        sample = dataset.load(sample_id)
        check_image_size(sample.image.shape[1:], arch, str(dataset.sample(sample_id).image_paths[0]))
        images.append(sample.image)
        markers.append(sample.markers)
        loaded[sample_id] = (sample.image, sample.meta)
    with progress_bar("fitting", enabled=not args.json) as progress:
        model = FLIMModel.fit(images, markers, arch, seed=args.seed, device=args.device, names=marked,
                              preprocessing=_preprocessing_of(dataset),
                              decoder=args.decoder, progress=progress)
    model.save(args.out)
    summary = {
        "model": str(args.out),
        "images": marked,
        "layers": [{"kernels": l.out_channels, "from_object_markers": int((l.kernel_classes > 0).sum())}
                   for l in model.encoder.layers],
        "classes": model.n_classes,
        "decoder": model.decoder,
    }
    if model.decoder_scores:
        summary["decoder_marker_recall"] = model.decoder_scores
    if predict_out is not None:
        with progress_bar("predicting", enabled=not args.json) as progress:
            written = write_predictions(model, dataset, predict_out, saliency=args.saliency, loaded=loaded,
                                        progress=progress)
        summary["predictions"] = {"folder": str(predict_out), "masks": written}
    if args.json:
        print_json(summary)
    else:
        print(f"learned {len(summary['layers'])} layers from {len(marked)} marked images -> {args.out}")
        for index, layer in enumerate(summary["layers"], 1):
            print(f"  layer {index}: {layer['kernels']} kernels ({layer['from_object_markers']} from object markers)")
        chosen = "" if not model.decoder_scores else " (marker recall " + ", ".join(
            f"{rule} {value:.3f}" for rule, value in model.decoder_scores.items()) + ")"
        print(f"decoder: {model.decoder}{chosen}")
        if predict_out is not None:
            print(f"wrote {summary['predictions']['masks']} masks to {predict_out}")
    return 0


def write_predictions(model, dataset, out: Path, *, decoder: str | None = None, saliency: bool = False,
                      loaded: dict | None = None, progress=None) -> int:
    """Masks (and saliency maps) of every image of ``dataset`` in ``out``; returns how many.

    ``loaded`` maps ids to ``(image, meta)`` already read (the fitted images), so that no image
    is decoded twice.
    """
    from hitlseg.io import output_name, write_array
    from hitlseg.io.resample import resample_image, resample_labels

    out.mkdir(parents=True, exist_ok=True)
    loaded = loaded or {}
    for index, sample_id in enumerate(dataset.ids):
        if progress is not None:
            progress(index, len(dataset), sample_id)
        image, meta = loaded.pop(sample_id) if sample_id in loaded else dataset.image(sample_id)
        result = model.predict(image, decoder, name=str(dataset.sample(sample_id).image_paths[0]))
        write_array(out / output_name(sample_id, meta), resample_labels(result.mask, meta.spatial_shape), meta)
        if saliency:
            suffix = ".nii.gz" if meta.ndim == 3 else ".png"
            maps = resample_image(np.asarray(result.saliency, dtype=np.float32), meta.spatial_shape)
            for k, channel in enumerate(maps, 1):
                tag = "" if len(maps) == 1 else f"_class{k}"
                write_array(out / f"{sample_id}_saliency{tag}{suffix}", channel, meta)
    if progress is not None:
        progress(len(dataset), len(dataset), "")
    return len(dataset)


def run_predict(args) -> int:
    from hitlseg.flim import FLIMModel
    from hitlseg.nets.workflow import open_images
    from hitlseg.validate import check_output_dir

    out = check_output_dir(args.out)
    model = FLIMModel.load(args.model, device=args.device)
    dataset = open_images(args.images, model.preprocessing)
    with progress_bar("predicting") as progress:
        written = write_predictions(model, dataset, out, decoder=args.decoder, saliency=args.saliency, progress=progress)
    print(f"wrote {written} masks to {out}")
    return 0
