"""``hitlseg info`` and ``hitlseg evaluate``."""

from __future__ import annotations

from hitlseg.cli.common import print_json, progress_bar


def register(commands) -> None:
    """Add the data commands to the sub-parser ``commands``."""
    info = commands.add_parser("info", help="summarise a dataset folder")
    info.add_argument("dataset", help="dataset folder (images/, masks/, markers/ or one folder per case)")
    info.add_argument("--json", action="store_true", help="print JSON")
    info.set_defaults(func=run_info)

    evaluate = commands.add_parser("evaluate", help="compare predicted masks with ground truth")
    evaluate.add_argument("--pred", required=True, help="folder of predicted masks")
    evaluate.add_argument("--truth", required=True, help="folder of ground-truth masks (or a dataset folder)")
    evaluate.add_argument("--json", action="store_true", help="print JSON")
    evaluate.set_defaults(func=run_evaluate)


def _shorten(ids: list[str], limit: int = 8) -> str:
    return ", ".join(ids[:limit]) + (f" ... (+{len(ids) - limit})" if len(ids) > limit else "")


def run_info(args) -> int:
    from hitlseg.dataset import Dataset, describe

    dataset = Dataset.from_folder(args.dataset)
    with progress_bar("reading", enabled=not args.json) as progress:
        summary = describe(dataset, progress)
    from hitlseg.weak.labels import has_image_labels, read_image_labels

    if has_image_labels(dataset):  # labels.csv beside images/: the image-level classes and their counts
        summary["image_labels"] = read_image_labels(dataset).to_dict()
    if args.json:
        print_json(summary)
        return 0
    print(f"dataset:   {summary['root']}")
    print(f"samples:   {summary['samples']}  ({'/'.join(f'{d}D' for d in summary['dimensions'])})")
    shapes = ", ".join(f"{s} ({n})" for s, n in summary["shapes"].items())
    if len(summary["shapes"]) > 6:
        dims = [tuple(map(int, s.split("x"))) for s in summary["shapes"]]
        low = "x".join(str(min(d[i] for d in dims)) for i in range(len(dims[0])))
        high = "x".join(str(max(d[i] for d in dims)) for i in range(len(dims[0])))
        shapes = f"{len(dims)} distinct, per axis from {low} to {high}"
    print(f"shapes:    {shapes}")
    print(f"channels:  {', '.join(map(str, summary['channels']))}")
    print(f"classes:   {', '.join(map(str, summary['classes'])) or 'no masks'}")
    print(f"masks:     {summary['with_masks']} of {summary['samples']}")
    print(f"markers:   {summary['with_markers']} of {summary['samples']}")
    if summary["without_mask"] and summary["with_masks"]:
        print(f"no mask:   {_shorten(summary['without_mask'])}")
    if summary["with_markers"] and summary["without_markers"]:
        print(f"no markers: {_shorten(summary['without_markers'])}")
    if summary.get("image_labels"):
        counts = summary["image_labels"]["counts"]
        print(f"labels:    {len(counts)} image classes: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    if summary["predefined_split"]:
        print("split:     " + ", ".join(f"{k} {v}" for k, v in summary["predefined_split"].items()))
    for item in summary["ignored"]:
        print(f"ignored:   {item['path']} ({item['reason']})")
    return 0


def run_evaluate(args) -> int:
    from hitlseg.evaluation import evaluate_folders

    with progress_bar("evaluating", enabled=not args.json) as progress:
        result = evaluate_folders(args.pred, args.truth, progress=progress)
    if args.json:
        print_json(result)
        return 0
    classes = result["classes"]
    header = "image".ljust(24) + "".join(f"dice{c}".rjust(9) for c in classes) + "mean dice".rjust(11) + "mean hd95".rjust(11)
    print(header)
    for row in result["images"]:
        cells = "".join(f"{row['dice'].get(str(c), float('nan')):9.4f}" for c in classes)
        print(row["id"][:23].ljust(24) + cells + f"{row['mean_dice']:11.4f}{row['mean_hd95']:11.2f}")
    mean = result["mean"]
    cells = "".join(f"{mean['dice'][str(c)]:9.4f}" for c in classes)
    print("mean".ljust(24) + cells + f"{mean['mean_dice']:11.4f}{mean['mean_hd95']:11.2f}")
    return 0
