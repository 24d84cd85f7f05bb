"""``hitlseg index build|add`` and ``hitlseg search``: content-based image retrieval over a dataset."""

from __future__ import annotations

from hitlseg.cli import args as argtypes
from hitlseg.cli.common import print_json, progress_bar


def register(commands) -> None:
    """Add the ``index`` and ``search`` commands to the sub-parser ``commands``."""
    from hitlseg.retrieval import HASHES, KINDS, SEARCHES

    index = commands.add_parser("index", help="build or extend an image retrieval index",
                                description="Index a dataset's images by descriptors (optionally as binary hash codes) "
                                            "for 'hitlseg search'.")
    actions = index.add_subparsers(dest="action", metavar="ACTION")
    build = actions.add_parser("build", help="describe a dataset's images and write an index folder",
                               description="Describe every image of --dataset (or of --part of --split) with "
                                           "--model's encoder and write the index folder --out (it holds a copy of "
                                           "the model's state, so 'search' needs nothing else).")
    build.add_argument("--dataset", required=True, help="dataset folder (images/ [+ masks/ markers/], or one folder per case)")
    build.add_argument("--split", help="split JSON: index only the ids of --part")
    build.add_argument("--part", choices=("train", "val", "test"), default="train", help="part of --split (default train)")
    build.add_argument("--descriptor", choices=KINDS, default="flim",
                       help="gtfree: sorted superpixel means of first-layer FLIM activations; flim: pooled FLIM "
                            "features; encoder: pooled features of a segmentation network's encoder (default flim)")
    build.add_argument("--model", required=True, help="FLIM model (flim.pt) or segmentation model (.pt) giving the features")
    build.add_argument("--layer", type=int, default=-1, help="encoder layer pooled by flim/encoder (default -1, the last)")
    build.add_argument("--bits", type=argtypes.non_negative_int, default=0,
                       help="binary code length, a multiple of 8 (0: float descriptors, default)")
    build.add_argument("--hash", choices=HASHES, default="itq", help="how codes are made with --bits (default itq)")
    build.add_argument("--labels", metavar="SOURCE",
                       help="labels the deep hash learns from: masks, markers, or a CSV of image-level labels (id,class)")
    build.add_argument("--search", choices=SEARCHES, default="exact", help="exact (default) or ivf (approximate) faiss search")
    build.add_argument("--regions", choices=("masks",), help="describe each image inside its mask only (region index)")
    build.add_argument("--seed", type=argtypes.seed, default=0, help="seed of the hash (default 0)")
    build.add_argument("--device", type=argtypes.device, default=None, help="cpu, cuda ... (default: CUDA when present)")
    build.add_argument("--out", required=True, metavar="INDEX", help="index folder to write")
    build.add_argument("--json", action="store_true", help="print a JSON summary")
    build.set_defaults(func=run_build)

    add = actions.add_parser("add", help="add a dataset's new images to an index (incremental update)",
                             description="Describe the images of --dataset not yet in --index with the index's own "
                                         "model and add them; the hash is not refitted (build again for that).")
    add.add_argument("--index", required=True, help="index folder ('hitlseg index build')")
    add.add_argument("--dataset", required=True, help="dataset folder or folder of images")
    add.add_argument("--model", help="optional: the model file, checked to be the one the index was built with")
    add.add_argument("--device", type=argtypes.device, default=None, help="cpu, cuda ... (default: CUDA when present)")
    add.add_argument("--json", action="store_true", help="print a JSON summary")
    add.set_defaults(func=run_add)
    index.set_defaults(func=lambda args: _usage(index))

    search = commands.add_parser("search", help="find the indexed images most similar to an image or a region",
                                 description="Print the ids of the --index images nearest to --image (inside --mask "
                                             "when given) with their distances (Euclidean, or Hamming with bits); "
                                             "the image's own id comes first when it is in the index.")
    search.add_argument("--index", required=True, help="index folder ('hitlseg index build')")
    search.add_argument("--image", required=True, help="query image file")
    search.add_argument("--mask", help="region query: a mask file of the image (pixels > 0 form the region)")
    search.add_argument("-k", type=argtypes.positive_int, default=10, help="how many images (default 10)")
    search.add_argument("--device", type=argtypes.device, default=None, help="cpu, cuda ... (default: CUDA when present)")
    search.add_argument("--json", action="store_true", help="print the results as JSON")
    search.set_defaults(func=run_search)


def _usage(parser) -> int:
    parser.print_help()
    return 2


def _dataset(folder, preprocessing):
    from hitlseg.nets import workflow

    return workflow.open_images(folder, preprocessing)


def run_build(args) -> int:
    import time

    from hitlseg.dataset import Split
    from hitlseg.errors import InputError
    from hitlseg.retrieval import index_dataset, load_describer
    from hitlseg.validate import check_output_dir

    out = check_output_dir(args.out)
    if args.bits and args.hash == "deep" and not args.labels:
        raise InputError("--labels: '--hash deep' learns from labels: masks, markers, or a CSV of image-level labels")
    if args.labels and not (args.bits and args.hash == "deep"):
        raise InputError("--labels: only used by '--hash deep' (with --bits)")
    options = {"layer": args.layer} if args.descriptor != "gtfree" else {}
    describer = load_describer(args.descriptor, args.model, options, args.device)
    dataset = _dataset(args.dataset, describer.preprocessing)
    ids = list(getattr(Split.load(args.split, dataset), args.part)) if args.split else list(dataset.ids)
    started = time.perf_counter()
    with progress_bar("indexing", enabled=not args.json) as progress:
        index = index_dataset(dataset, ids, describer, bits=args.bits, hash=args.hash, labels=args.labels,
                              search=args.search, regions=args.regions, seed=args.seed, progress=progress)
    index.save(out)
    summary = {"out": str(out), **_summary(index), "seconds": time.perf_counter() - started}
    if args.json:
        print_json(summary)
    else:
        codes = f"{index.bits}-bit {index.hash} codes" if index.bits else "float descriptors"
        print(f"wrote {out}: {len(index)} images, {args.descriptor} descriptor of dimension {index.dimension}, {codes}")
    return 0


def _summary(index) -> dict:
    meta = index.meta()
    return {k: meta[k] for k in ("count", "descriptor", "encoder_digest", "dimension", "bits", "hash", "search",
                                 "memory_bytes") if k in meta}


def run_add(args) -> int:
    import time

    from hitlseg.retrieval import RetrievalIndex, add_dataset, load_describer

    index = RetrievalIndex.load(args.index, device=args.device)
    if index.describer is None:
        from hitlseg.errors import InputError

        raise InputError(f"{args.index}: the index holds no model (model.pt), so new images cannot be described")
    if args.model:
        index.check_signature(load_describer(index.signature["descriptor"], args.model, index.signature.get("options"),
                                             args.device))
    dataset = _dataset(args.dataset, index.describer.preprocessing)
    started = time.perf_counter()
    with progress_bar("adding", enabled=not args.json) as progress:
        added = add_dataset(index, dataset, progress=progress)
    if added:
        index.save(args.index)
    summary = {"index": str(args.index), "added": len(added), **_summary(index), "seconds": time.perf_counter() - started}
    if args.json:
        print_json(summary)
    else:
        print(f"added {len(added)} images to {args.index} ({len(index)} in all)")
    return 0


def run_search(args) -> int:
    from pathlib import Path

    from hitlseg.errors import InputError
    from hitlseg.io import read_image, read_mask, stem_of
    from hitlseg.retrieval import RetrievalIndex, similar_images

    index = RetrievalIndex.load(args.index, device=args.device)
    if index.describer is None:
        raise InputError(f"{args.index}: the index holds no model (model.pt), so a query image cannot be described")
    image_path = Path(args.image)
    if not image_path.is_file():
        raise InputError(f"{image_path}: query image not found")
    preprocessing = index.describer.preprocessing
    image, meta = read_image(image_path, color=preprocessing.get("color", "lab"),
                             normalize=preprocessing.get("normalize", "percentile"))
    mask = None
    if args.mask:
        if not Path(args.mask).is_file():
            raise InputError(f"{args.mask}: mask file not found")
        mask, _ = read_mask(args.mask)
    if preprocessing.get("max_side"):
        from hitlseg.io.resample import resample_image, resample_labels, working_shape

        shape = working_shape(meta.spatial_shape, preprocessing["max_side"])
        image = resample_image(image, shape)
        if mask is not None:
            if tuple(mask.shape) != tuple(meta.spatial_shape):
                raise InputError(f"{args.mask}: mask shape {mask.shape} differs from the image's {meta.spatial_shape}")
            mask = resample_labels(mask, shape)
    hits = similar_images(index, image, args.k, mask=mask, query_id=stem_of(image_path), name=str(image_path))
    if args.json:
        print_json({"index": str(args.index), "image": str(image_path), "region": args.mask, "results": hits})
    else:
        for hit in hits:
            print(f"{hit['id']}\t{hit['distance']:.6g}")
    return 0
