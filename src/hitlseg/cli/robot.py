"""``hitlseg robot mark`` and ``hitlseg robot correct``: the simulated annotator on a dataset.

Marker files are written as label images (0 unmarked, ``c + 1`` for class ``c``): ``OUT/ID.png``
for 2D images and ``OUT/ID.nii.gz`` with the image's affine and header for volumes, so that
``OUT = DATASET/markers`` makes them the samples' markers. When ``OUT`` already holds a marker
file of that id in another name or format (e.g. ``ID-seeds.txt``), that file is rewritten in its
own format instead, so that one id never has two marker files.
"""

from __future__ import annotations

from pathlib import Path

from hitlseg.cli import args as argtypes
from hitlseg.cli.common import print_json, progress_bar
from hitlseg.errors import InputError

_IDS_HELP = "image ids, comma-separated, or @FILE with one id per line"


def register(commands) -> None:
    """Add ``robot mark`` and ``robot correct``."""
    robot = commands.add_parser("robot", help="simulated annotator: markers and corrective strokes from ground-truth masks")
    sub = robot.add_subparsers(dest="robot_command", metavar="COMMAND", required=True)

    mark = sub.add_parser("mark", help="draw the strokes a careful annotator would draw on images with masks")
    mark.add_argument("--dataset", required=True, help="dataset folder (images/ and masks/, or one folder per case)")
    mark.add_argument("--ids", required=True, help=_IDS_HELP)
    mark.add_argument("--out", required=True, help="folder for the marker files (DATASET/markers makes them the dataset's markers)")
    mark.add_argument("--seed", type=argtypes.seed, default=0, help="robot seed (default 0); the same seed gives the same markers")
    mark.add_argument("--max-marked-fraction", type=argtypes.fraction, default=None,
                      help="pixel budget as a fraction of the image, in (0, 1] (default 0.05)")
    mark.add_argument("--json", action="store_true", help="print a JSON summary")
    mark.set_defaults(func=run_mark)

    correct = sub.add_parser("correct", help="draw corrective strokes on the errors of predicted masks")
    correct.add_argument("--dataset", required=True, help="dataset folder with the ground-truth masks")
    correct.add_argument("--predictions", required=True, help="folder of predicted masks ID.ext, as written by 'hitlseg predict'")
    correct.add_argument("--ids", required=True, help=_IDS_HELP)
    correct.add_argument("--out", required=True, help="folder for the marker files")
    correct.add_argument("--round", type=argtypes.non_negative_int, default=0, help="annotation round, part of the robot's key (default 0)")
    correct.add_argument("--seed", type=argtypes.seed, default=0, help="robot seed (default 0)")
    correct.add_argument("--merge", action="store_true",
                         help="add the strokes to the image's markers already in OUT (new strokes win) instead of replacing them")
    correct.add_argument("--json", action="store_true", help="print a JSON summary")
    correct.set_defaults(func=run_correct)


# --------------------------------------------------------------------------------------------
# argument checks (everything is checked before the first file is written)
# --------------------------------------------------------------------------------------------


def _shown(items: list[str], limit: int = 10) -> str:
    return ", ".join(items[:limit]) + (f" ... (+{len(items) - limit})" if len(items) > limit else "")


def _parse_ids(text: str) -> list[str]:
    """Ids from ``a,b,c`` or ``@FILE`` (one id per line; blank lines and ``#`` comments skipped)."""
    if text.startswith("@"):
        path = Path(text[1:])
        try:
            lines = path.read_text().splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise InputError(f"--ids: cannot read id file {path} ({exc})") from None
        ids = [line.strip() for line in lines if line.strip() and not line.strip().startswith("#")]
        source = str(path)
    else:
        ids = [part.strip() for part in text.split(",") if part.strip()]
        source = "--ids"
    if not ids:
        raise InputError(f"{source}: no image ids given")
    return list(dict.fromkeys(ids))


def _check_ids(dataset, ids: list[str]) -> None:
    unknown = [i for i in ids if i not in dataset]
    if unknown:
        raise InputError(f"--ids: {len(unknown)} ids are not samples of {dataset.root}: {_shown(unknown)}")
    no_mask = [i for i in ids if dataset.sample(i).mask_path is None]
    if no_mask:
        raise InputError(f"--ids: {len(no_mask)} ids have no mask in {dataset.root} (the robot needs one): {_shown(no_mask)}")


def _out_folder(out: str) -> Path:
    from hitlseg.validate import check_output_dir

    return check_output_dir(out)


def _shapes(dataset, ids: list[str]) -> dict[str, tuple[int, ...]]:
    """Spatial shape of each image from file headers, checked against its mask's."""
    from hitlseg.io import peek_image

    shapes = {}
    for sample_id in ids:
        sample = dataset.sample(sample_id)
        _, shape = peek_image(sample.image_paths)
        _, mask_shape = peek_image(sample.mask_path)
        if tuple(mask_shape) != tuple(shape):
            raise InputError(f"{sample.mask_path}: mask shape {tuple(mask_shape)} differs from image "
                             f"{sample.image_paths[0]} shape {tuple(shape)}")
        shapes[sample_id] = tuple(shape)
    return shapes


def _existing_markers(out: Path, ids: list[str]) -> dict[str, Path]:
    """Marker files already in ``out`` for ``ids``, found by stem the way the dataset finds them."""
    from hitlseg.dataset import MARKER_STEM
    from hitlseg.io import is_image_file, stem_of, suffix_of
    from hitlseg.io.formats import MARKER_TEXT_SUFFIXES

    if not out.is_dir():
        return {}
    wanted = set(ids)
    found: dict[str, list[Path]] = {}
    for path in sorted(out.iterdir()):
        if not (is_image_file(path) or (path.is_file() and not path.name.startswith(".")
                                        and suffix_of(path) in MARKER_TEXT_SUFFIXES)):
            continue
        stem = MARKER_STEM.sub("", stem_of(path))
        if stem in wanted:
            found.setdefault(stem, []).append(path)
    for stem, paths in found.items():
        if len(paths) > 1:
            raise InputError(f"{out}: more than one marker file for {stem!r}: {', '.join(p.name for p in paths)}")
    return {stem: paths[0] for stem, paths in found.items()}


def _targets(out: Path, ids: list[str], shapes: dict[str, tuple[int, ...]]) -> dict[str, Path]:
    """The marker file to write for each id: the existing one, else ``ID.png`` (2D) or ``ID.nii.gz`` (3D)."""
    from hitlseg.io import suffix_of
    from hitlseg.io.formats import MARKER_TEXT_SUFFIXES, VOLUME_SUFFIXES

    writable = {2: (".png", ".tif", ".tiff", ".bmp"), 3: VOLUME_SUFFIXES}
    existing = _existing_markers(out, ids)
    targets = {}
    for sample_id in ids:
        ndim = len(shapes[sample_id])
        path = existing.get(sample_id)
        if path is None:
            path = out / f"{sample_id}{'.png' if ndim == 2 else '.nii.gz'}"
        elif suffix_of(path) not in MARKER_TEXT_SUFFIXES + writable[ndim]:
            raise InputError(f"{path}: existing marker file cannot be rewritten with {ndim}D markers in its format "
                             f"(use {', '.join(MARKER_TEXT_SUFFIXES + writable[ndim])}); remove it or choose another --out")
        targets[sample_id] = path
    return targets


def _prediction_files(folder: str, ids: list[str], shapes: dict[str, tuple[int, ...]]) -> dict[str, Path]:
    """The predicted mask ``FOLDER/ID.ext`` of each id, its shape checked against the image's."""
    from hitlseg.io import is_image_file, peek_image, stem_of

    root = Path(folder)
    if not root.is_dir():
        raise InputError(f"{root}: predictions folder not found")
    wanted = set(ids)
    found: dict[str, list[Path]] = {}
    for path in sorted(root.iterdir()):
        if is_image_file(path) and stem_of(path) in wanted:
            found.setdefault(stem_of(path), []).append(path)
    missing = [i for i in ids if i not in found]
    if missing:
        raise InputError(f"{root}: no predicted mask for {len(missing)} ids: {_shown(missing)}")
    files = {}
    for sample_id in ids:
        paths = found[sample_id]
        if len(paths) > 1:
            raise InputError(f"{root}: more than one prediction for {sample_id!r}: {', '.join(p.name for p in paths)}")
        _, shape = peek_image(paths[0])
        if tuple(shape) != shapes[sample_id]:
            raise InputError(f"{paths[0]}: prediction shape {tuple(shape)} differs from the image shape {shapes[sample_id]}")
        files[sample_id] = paths[0]
    return files


def _robot(seed: int, **options):
    from hitlseg.robot import Robot

    return Robot(seed=seed, **{k: v for k, v in options.items() if v is not None})


# --------------------------------------------------------------------------------------------
# writing
# --------------------------------------------------------------------------------------------


def _write(dataset, sample_id: str, path: Path, markers):
    """Write ``markers`` atomically; NIfTI files take the geometry of the sample's image."""
    from hitlseg.io import is_volume, read_image, write_markers

    meta = None
    if is_volume(path):
        _, meta = read_image(dataset.sample(sample_id).image_paths[0], normalize="none")
    return write_markers(path, markers, meta)


def _print_rows(rows: list[dict], out: Path, what: str, extra: str = "") -> None:
    width = max(len(r["id"]) for r in rows)
    for row in rows:
        line = f"{row['id'].ljust(width)}  {row['marked']:8d} px  {100 * row['fraction']:6.2f} %"
        if "errors" in row:
            line += f"  ({row['errors']} error pixels, {row['total']} marked in file)"
        print(f"{line}  -> {row['path']}")
    print(f"wrote {len(rows)} {what} to {out}{extra}")


def run_mark(args) -> int:
    from hitlseg.dataset import Dataset
    from hitlseg.progress import report

    dataset = Dataset.from_folder(args.dataset)
    ids = _parse_ids(args.ids)
    _check_ids(dataset, ids)
    out = _out_folder(args.out)
    robot = _robot(args.seed, max_marked_fraction=args.max_marked_fraction)
    shapes = _shapes(dataset, ids)
    targets = _targets(out, ids, shapes)

    import numpy as np

    from hitlseg.dataset import task_classes

    masks = {i: dataset.mask(i, shapes[i]) for i in ids}  # all read and checked before any file is written
    task_classes({str(dataset.sample(i).mask_path): np.unique(m) for i, m in masks.items()})
    rows = []
    with progress_bar("marking", enabled=not args.json) as progress:
        for done, sample_id in enumerate(ids):
            report(progress, done, len(ids), sample_id)
            markers = robot.mark(masks[sample_id], key=sample_id)
            path = _write(dataset, sample_id, targets[sample_id], markers)
            marked = int((markers > 0).sum())
            rows.append({"id": sample_id, "marked": marked, "fraction": marked / markers.size, "path": str(path)})
        report(progress, len(ids), len(ids), "done")
    if args.json:
        print_json({"out": str(out), "seed": robot.seed, "images": rows})
    else:
        _print_rows(rows, out, "marker files", f" (seed {robot.seed})")
    return 0


def run_correct(args) -> int:
    import numpy as np

    from hitlseg.dataset import Dataset
    from hitlseg.io import read_mask, read_markers, suffix_of
    from hitlseg.io.formats import MARKER_TEXT_SUFFIXES
    from hitlseg.progress import report

    dataset = Dataset.from_folder(args.dataset)
    ids = _parse_ids(args.ids)
    _check_ids(dataset, ids)
    out = _out_folder(args.out)
    robot = _robot(args.seed)
    shapes = _shapes(dataset, ids)
    predictions = _prediction_files(args.predictions, ids, shapes)
    targets = _targets(out, ids, shapes)
    if args.merge:  # check the markers to merge with before anything is written
        from hitlseg.io import peek_image

        for sample_id, path in targets.items():
            if not path.exists():
                continue
            if suffix_of(path) in MARKER_TEXT_SUFFIXES:
                read_markers(path, shapes[sample_id])
                continue
            _, shape = peek_image(path)
            if tuple(shape) != shapes[sample_id]:
                raise InputError(f"{path}: markers have shape {tuple(shape)} but the image has shape {shapes[sample_id]}")

    rows = []
    with progress_bar("correcting", enabled=not args.json) as progress:
        for done, sample_id in enumerate(ids):
            report(progress, done, len(ids), sample_id)
            shape = shapes[sample_id]
            mask = dataset.mask(sample_id, shape)
            prediction, _ = read_mask(predictions[sample_id])
            if tuple(prediction.shape) != shape:
                raise InputError(f"{predictions[sample_id]}: prediction shape {prediction.shape} differs from the image shape {shape}")
            strokes = robot.correct(mask, prediction, key=(sample_id, args.round))
            target = targets[sample_id]
            markers = strokes
            merged = bool(args.merge and target.exists())
            if merged:
                markers = np.where(strokes > 0, strokes, read_markers(target, shape)).astype(np.uint8)
            path = _write(dataset, sample_id, target, markers)
            marked = int((strokes > 0).sum())
            rows.append({"id": sample_id, "marked": marked, "fraction": marked / strokes.size,
                         "errors": int((prediction.astype(np.int64) != mask.astype(np.int64)).sum()),
                         "total": int((markers > 0).sum()), "merged": merged, "path": str(path)})
        report(progress, len(ids), len(ids), "done")
    if args.json:
        print_json({"out": str(out), "seed": robot.seed, "round": args.round, "merge": bool(args.merge), "images": rows})
    else:
        _print_rows(rows, out, "corrective marker files", f" (seed {robot.seed}, round {args.round}"
                                                          f"{', merged' if args.merge else ''})")
    return 0
