"""``hitlseg split``: a seeded train/validation/test split of a dataset, optionally by groups."""

from __future__ import annotations

import argparse
import math

from hitlseg.cli import args as argtypes

DEFAULT_FRACTIONS = (0.6, 0.1, 0.3)


def fractions(text: str) -> tuple[float, float, float]:
    """``TRAIN,VAL,TEST``: three non-negative numbers summing to 1, the training one above 0."""
    parts = [p.strip() for p in text.split(",")]
    try:
        values = tuple(float(p) for p in parts)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be three numbers TRAIN,VAL,TEST such as 0.6,0.1,0.3, got {text!r}") from None
    if len(values) != 3:
        raise argparse.ArgumentTypeError(f"must be three numbers TRAIN,VAL,TEST such as 0.6,0.1,0.3, got {text!r}")
    if not all(math.isfinite(v) and v >= 0 for v in values):
        raise argparse.ArgumentTypeError(f"must be finite numbers >= 0, got {text!r}")
    if abs(sum(values) - 1) > 1e-6:
        raise argparse.ArgumentTypeError(f"must sum to 1, got {text!r} (sum {sum(values):g})")
    if values[0] <= 0:
        raise argparse.ArgumentTypeError(f"the training fraction must be above 0, got {text!r}")
    return values


def register(commands) -> None:
    """Add the ``split`` command to the sub-parser ``commands``."""
    parser = commands.add_parser(
        "split", help="write a seeded train/validation/test split of a dataset (optionally keeping groups together)",
        description="Cut the samples of DATASET into training, validation and test parts and write them as JSON, "
                    "for 'train --split', 'select --split' and 'predict --split'. With --group-by, every image of "
                    "one group (patient, video, slide) goes to the same part, so that near-identical images of "
                    "one group never sit on both sides.")
    parser.add_argument("dataset", metavar="DATASET", help="dataset folder (images/, masks/, markers/ or one folder per case)")
    parser.add_argument("--fractions", type=fractions, default=DEFAULT_FRACTIONS, metavar="TRAIN,VAL,TEST",
                        help="fractions of the parts, summing to 1 (default 0.6,0.1,0.3); with --group-by they "
                             "hold approximately, by image count")
    parser.add_argument("--seed", type=argtypes.seed, default=0, help="seed of the shuffle (default 0)")
    parser.add_argument("--group-by", metavar="FILE|REGEX",
                        help="the group of each image: a CSV/TSV file (columns id,group, or a header naming "
                             "them: id/image/name/file and group/patient/video/slide), a JSON object "
                             "{id: group}, or a regular expression whose first capture group (else whole "
                             "match) in the image id is its group, e.g. '^(patient\\d+)_'")
    parser.add_argument("--out", required=True, metavar="FILE", help="split file to write (JSON)")
    parser.add_argument("--json", action="store_true", help="print a JSON summary")
    parser.set_defaults(func=run_split)


def run_split(args) -> int:
    from hitlseg.cli.common import print_json
    from hitlseg.dataset import Dataset, leaking_groups, make_split, resolve_groups
    from hitlseg.validate import check_output_file

    out = check_output_file(args.out)
    dataset = Dataset.from_folder(args.dataset)
    ids = dataset.ids
    groups = resolve_groups(args.group_by, ids) if args.group_by else None
    split = make_split(ids, args.fractions, args.seed, groups=groups, group_by=args.group_by)
    leaked = leaking_groups(split)
    if leaked:  # make_split never does this; refuse rather than write a leaking split
        raise RuntimeError(f"grouped split leaks groups {sorted(leaked)[:5]}")
    split.save(out)

    parts = {name: getattr(split, name) for name in ("train", "val", "test")}
    group_counts = None
    if split.groups is not None:
        group_counts = {name: len({split.groups[i] for i in members}) for name, members in parts.items()}
    no_mask = [i for i in ids if dataset.sample(i).mask_path is None]
    predefined = dataset.predefined_split() is not None
    summary = {
        "dataset": str(dataset.root), "out": str(out), "images": len(ids), "seed": args.seed,
        "fractions": list(split.fractions), "sizes": {name: len(members) for name, members in parts.items()},
        "group_by": args.group_by, "groups": None if group_counts is None else len(set(split.groups.values())),
        "groups_per_part": group_counts, "groups_on_two_sides": 0 if group_counts is not None else None,
        "without_mask": len(no_mask), "predefined_split": predefined,
    }
    if args.json:
        print_json(summary)
        return 0
    print(f"split:     {len(ids)} images of {dataset.root} (seed {args.seed}) -> {out}")
    for name, members in parts.items():
        share = len(members) / len(ids)
        groups_note = f", {group_counts[name]} groups" if group_counts is not None else ""
        print(f"{name + ':':<10} {len(members):5d} images ({share:.1%}{groups_note})")
    if group_counts is not None:
        print(f"groups:    {summary['groups']} (by {args.group_by}); no group has images in two parts")
    else:
        print("groups:    none: images are split one by one (--group-by keeps a patient, video or slide on one side)")
    if no_mask:
        print(f"note:      {len(no_mask)} images have no mask (training on masks needs them for train and val images)")
    if predefined:
        print("note:      the dataset's train/validation/test folders give a split too; commands use this file "
              "only with --split")
    return 0
