"""``hitlseg select``: the image-selection loop driven by the simulated annotator (the robot).

With ``--out DIR`` the run is written so that ``train`` can take it up:

* ``DIR/selected.json`` (ids in selection order, the settings, the split) and ``DIR/selected.txt``
  (one id per line, for ``robot mark --ids @DIR/selected.txt``);
* ``DIR/rounds.json``: every round's recommendations (closest, most distant, near-duplicates),
  stopping signal and timings;
* ``DIR/markers/ID.png`` (``ID.nii.gz`` for volumes): the robot's markers, as ``robot mark``
  writes them (``train --labels markers --markers DIR/markers``);
* ``DIR/flim.pt``: a FLIM model (the ``--arch`` encoder, by default the three-layer one of
  ``flim fit``) learned from those markers, as ``flim fit`` writes one (``train --encoder flim:DIR``).
"""

from __future__ import annotations

import contextlib
import tempfile
import time
from pathlib import Path

from hitlseg.cli import args as argtypes
from hitlseg.defaults import DEFAULT_POLICY, DEFAULT_PROJECTION, GTFREE_POLICIES, PROJECTIONS
from hitlseg.parallel.executor import add_execution_arguments, executor_from_args

# Names of hitlseg.selection.SELECTORS, spelled out so that building the parser does not import
# torch (every command would pay for it); a test keeps them in step.
SELECTOR_NAMES = ("gtfree", "random", "labeled", "kcenter")
POLICY_NAMES = GTFREE_POLICIES
# hitlseg.selection.recommend.DUPLICATE_TOLERANCE, spelled out for the same reason (a test keeps it in step).
DUPLICATE_TOLERANCE = 0.01

OUT_FILES = ("selected.json", "selected.txt", "rounds.json", "flim.pt")


def duplicate_tolerance(text: str) -> float:
    """A fraction of the pool's descriptor diameter in [0, 1)."""
    import argparse

    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number in [0, 1), got {text!r}") from None
    if not 0 <= value < 1:  # also refuses NaN
        raise argparse.ArgumentTypeError(f"must be a number in [0, 1), got {text!r}")
    return value


def register(commands) -> None:
    """Add the ``select`` command to the sub-parser ``commands``."""

    parser = commands.add_parser(
        "select",
        help="choose images to mark, round by round (ground-truth-free selection or a baseline)",
        description="Run the selection loop: each round the chosen image is marked (by the robot, from its "
        "ground-truth mask), FLIM filters are refitted and the next image is recommended.",
    )
    parser.add_argument("--dataset", required=True, help="dataset folder (images with masks, for the robot)")
    parser.add_argument("--split", help="split JSON (from 'hitlseg split'): choose among its training images only "
                                        "(default: every image of the dataset)")
    parser.add_argument("--out", metavar="DIR",
                        help="folder for the run: selected.json/.txt (ids in order), rounds.json (each round's "
                             "recommendations), markers/ (the robot's markers) and flim.pt (a FLIM model learned "
                             "from them, for 'train --encoder flim:DIR')")
    parser.add_argument("--arch", help="with --out: architecture JSON of the FLIM model in DIR/flim.pt (default: "
                                       "the three-layer encoder of 'flim fit')")
    parser.add_argument("--robot", action="store_true",
                        help="let the simulated annotator mark each selected image from its mask (required)")
    parser.add_argument("--rounds", type=argtypes.positive_int, default=5, help="images to select and mark (default 5)")
    parser.add_argument("--seed", type=argtypes.seed, default=0, help="seed of the first choice, the robot and FLIM (default 0)")
    parser.add_argument("--selector", default="gtfree", choices=list(SELECTOR_NAMES),
                        help="how the next image is chosen (default gtfree)")
    parser.add_argument("--policy", default=DEFAULT_POLICY, choices=list(POLICY_NAMES),
                        help=f"gtfree policy (default {DEFAULT_POLICY}: the most distant image, then the closest, "
                             f"in turn; see the README's Defaults)")
    parser.add_argument("--k", type=argtypes.positive_int, default=5, help="recommendations per list (default 5)")
    parser.add_argument("--duplicate-tolerance", type=duplicate_tolerance, default=DUPLICATE_TOLERANCE,
                        metavar="FRACTION",
                        help="leave out of the recommendations images closer to a selected image than this fraction "
                             f"of the pool's descriptor diameter, reported as near-duplicates (default "
                             f"{DUPLICATE_TOLERANCE}; 0 turns it off)")
    parser.add_argument("--distance", default="min", choices=["min", "last"],
                        help="distance to the selected set: nearest selected image or the last one")
    parser.add_argument("--maps", default="object", choices=["object", "all", "saliency"],
                        help="feature maps in the descriptor (default: kernels from object markers)")
    parser.add_argument("--projection", default=DEFAULT_PROJECTION, choices=list(PROJECTIONS),
                        help="2D projection: t-SNE (openTSNE), PCA or UMAP (umap-learn, the hitlseg[umap] extra; "
                             f"its first layout in a process compiles for about 6 s) (default {DEFAULT_PROJECTION})")
    parser.add_argument("--perplexity", type=argtypes.positive_float, default=30.0, help="t-SNE perplexity (reduced for small pools)")
    parser.add_argument("--superpixels", type=argtypes.positive_int, default=None, help="superpixels per image (default 20 in 2D, 40 in 3D)")
    parser.add_argument("--cache", default=None, help="folder caching superpixels between runs (with --workers/"
                                                      "--scheduler: the zarr stores of superpixels and descriptors)")
    parser.add_argument("--stop-threshold", type=argtypes.non_negative_float, default=0.05,
                        help="relative coverage-radius improvement below which stopping is suggested")
    parser.add_argument("--stop-patience", type=argtypes.positive_int, default=2,
                        help="rounds in a row below the threshold before stopping is suggested (default 2)")
    parser.add_argument("--stop-early", action="store_true", help="end the loop when stopping is suggested")
    parser.add_argument("--max-side", type=argtypes.max_side, default=None, metavar="N",
                        help="working resolution: select among images read with the longest side at most N pixels; "
                             "DIR/flim.pt keeps N (so 'train --encoder flim:DIR' reads at N) and DIR/markers/ are "
                             "written at each image's own size (default: the images' own)")
    parser.add_argument("--device", type=argtypes.device, default=None, help="torch device (default: CUDA when present, else CPU)")
    parser.add_argument("--json", action="store_true", help="print all rounds as JSON")
    add_execution_arguments(parser)
    parser.set_defaults(func=run_select)


def _format_list(pairs) -> str:
    return ", ".join(f"{i} ({d:.3g})" for i, d in pairs) or "-"


def _print_round(result, chosen_by: str) -> None:
    stop = result.stopping
    # signed change of the normalised radius since the previous round: + when it rose
    change = "first round" if stop.relative_change is None else f"{-stop.relative_change:+.1%} since the previous round"
    print(f"round {result.round}: selected {result.image_id} ({chosen_by}; {result.n_maps} maps)")
    print(f"  most distant: {_format_list(result.recommendation.most_distant)}")
    print(f"  closest:      {_format_list(result.recommendation.closest)}")
    for duplicate in result.recommendation.near_duplicates:
        print(f"  skipped: {duplicate.id}, near-duplicate of {duplicate.of} (distance {duplicate.distance:.3g})")
    print(f"  normalised coverage radius {stop.normalized_radius:.3f} ({change}; raw {stop.radius:.4g} of diameter "
          f"{stop.diameter:.4g}); suggestion: {stop.suggestion} ({stop.reason})")
    times = " ".join(f"{k} {v:.2f}s" for k, v in result.timings.items() if k != "stopping")
    print(f"  timings: {times}")
    for note in result.notes:
        print(f"  note: {note}")


def run_select(args) -> int:
    from hitlseg.cli.common import print_json, progress_bar
    from hitlseg.dataset import Dataset, Split
    from hitlseg.errors import InputError
    from hitlseg.robot import Robot
    from hitlseg.selection import SelectionSession, SuperpixelCache, make_selector
    from hitlseg.validate import check_output_dir

    if not args.robot:
        raise InputError("--robot: the command line runs the loop with the simulated annotator; pass --robot "
                         "(a person marks images in the web interface)")
    if args.cache:
        check_output_dir(args.cache, "--cache")
    if args.arch and not args.out:
        raise InputError("--arch: sets the FLIM model written to --out DIR; pass --out too")
    out = _check_out(args.out) if args.out else None
    arch = None
    if out is not None:
        from hitlseg.flim import default_arch, read_arch

        arch = read_arch(args.arch) if args.arch else default_arch()
    dataset = Dataset.from_folder(args.dataset, max_side=args.max_side)
    split = None
    if args.split:
        split = Split.load(args.split, dataset)
        if len(split.train) < 2:
            raise InputError(f"{args.split}: the training part has {len(split.train)} image(s); selection needs at least 2")
        dataset = dataset.subset(split.train)
    missing = [i for i in dataset.ids if dataset.sample(i).mask_path is None]
    if missing:
        shown = ", ".join(missing[:5]) + (" ..." if len(missing) > 5 else "")
        raise InputError(f"{args.dataset}: the robot marks images from their masks, but {len(missing)} image(s) "
                         f"{'of the training part ' if split else ''}have none: {shown}")
    if args.rounds > len(dataset):
        where = f"the training part of {args.split}" if split else "the dataset"
        raise InputError(f"--rounds: {args.rounds} rounds but {where} has only {len(dataset)} images")
    if arch is not None:
        _check_fit_sizes(dataset, arch)
    options = {"seed": args.seed}
    if args.selector == "gtfree":
        options.update(policy=args.policy, distance=args.distance)
    selector = make_selector(args.selector, **options)
    robot = Robot(args.seed)

    executor = executor_from_args(args)  # an unreachable scheduler fails here, before any work
    with executor, contextlib.ExitStack() as stack:
        store = None
        if executor.distributed:  # the session streams: superpixels and descriptors in zarr stores
            store = args.cache or stack.enter_context(tempfile.TemporaryDirectory(prefix="hitlseg-select-"))
        started = time.perf_counter()
        with progress_bar("preparing", enabled=not args.json) as progress:
            cache = SuperpixelCache(args.cache) if args.cache and store is None else None
            session = SelectionSession(dataset, n_superpixels=args.superpixels, superpixel_cache=cache, seed=args.seed,
                                       maps=args.maps, distance=args.distance,
                                       duplicate_tolerance=args.duplicate_tolerance, k=args.k,
                                       projection=args.projection, perplexity=args.perplexity,
                                       stop_threshold=args.stop_threshold, stop_patience=args.stop_patience,
                                       device=args.device, progress=progress, executor=executor, store=store)
        prepare_s = time.perf_counter() - started
        return _loop(args, dataset, session, selector, robot, out, arch, prepare_s)


def _loop(args, dataset, session, selector, robot, out, arch, prepare_s) -> int:
    """The rounds of ``hitlseg select`` on a prepared session, then what ``--out`` and ``--json`` ask for."""
    from hitlseg.cli.common import print_json, progress_bar

    masks = {}
    if args.selector == "labeled":
        masks = {i: dataset.mask(i, session.images[i].shape[1:]) for i in session.ids}

    rounds, chosen = [], []
    for index in range(args.rounds):
        tick = time.perf_counter()
        image_id = selector.query(session.context(masks if args.selector == "labeled" else None), 1)[0]
        choose_s = time.perf_counter() - tick
        mask = masks.get(image_id)
        if mask is None:
            mask = dataset.mask(image_id, session.images[image_id].shape[1:])
        markers = robot.mark(mask, key=image_id)
        result = session.step(image_id, markers)
        result.timings["choose"] = choose_s
        chosen_by = "first image, seeded random" if index == 0 else (
            f"gtfree {args.policy}" if args.selector == "gtfree" else args.selector)
        rounds.append(result)
        chosen.append(chosen_by)
        if not args.json:
            _print_round(result, chosen_by)
        if args.stop_early and result.stopping.stop:
            break

    written = None
    if out is not None:
        with progress_bar("FLIM model", enabled=not args.json) as progress:
            written = _write_out(out, args, dataset, session, rounds, chosen, arch, progress)
    if args.json:
        print_json({
            "dataset": str(dataset.root),
            "split": args.split,
            "pool": len(session.ids),
            "selector": args.selector,
            "policy": args.policy if args.selector == "gtfree" else None,
            "seed": args.seed,
            "duplicate_tolerance": args.duplicate_tolerance,
            "prepare_s": prepare_s,
            "selected": list(session.selected),
            "rounds": [r.to_dict(coords=False) for r in rounds],
            "out": written,
        })
    else:
        print(f"selected: {', '.join(session.selected)}")
        if written is not None:
            print(f"wrote:    {written['selected']} (ids in order), {written['rounds']} (recommendations),")
            print(f"          {written['markers']} ({len(session.selected)} marker files), {written['flim_model']} "
                  f"(FLIM model: 'hitlseg train --encoder flim:{out}')")
    return 0


def _check_out(path: str) -> Path:
    """The --out folder, checked before any work: writable, and its files not folders."""
    from hitlseg.errors import InputError
    from hitlseg.validate import check_output_dir, check_output_file

    out = check_output_dir(path)
    for name in OUT_FILES:
        check_output_file(out / name, f"--out {name}")
    markers = out / "markers"
    if markers.exists() and not markers.is_dir():
        raise InputError(f"{markers}: --out markers must be a folder, but it is a file")
    return out


def _check_fit_sizes(dataset, arch) -> None:
    """Every pool image can be taken by the FLIM model's encoder (from file headers)."""
    from hitlseg.io import peek_image
    from hitlseg.io.resample import working_shape
    from hitlseg.validate import check_image_size

    for sample in dataset:
        shape = working_shape(peek_image(sample.image_paths)[1], dataset.max_side)
        check_image_size(shape, arch, str(sample.image_paths[0]))


def _marker_file(out: Path, sample_id: str, ndim: int) -> Path:
    """``OUT/markers/ID.png`` (2D) or ``ID.nii.gz`` (3D): the names ``robot mark`` writes."""
    return out / "markers" / f"{sample_id}{'.png' if ndim == 2 else '.nii.gz'}"


def _previous_markers(out: Path) -> list[Path]:
    """Marker files a previous ``select --out`` run wrote into ``out`` (named in its selected.json)."""
    import json

    try:
        previous = json.loads((out / "selected.json").read_text())
        files = previous["marker_files"]
    except (OSError, ValueError, KeyError, TypeError):
        return []
    if not isinstance(files, list):
        return []
    paths = []
    for name in files:
        path = out / "markers" / str(name)
        if isinstance(name, str) and "/" not in name and "\\" not in name and path.is_file():
            paths.append(path)
    return paths


def _write_out(out: Path, args, dataset, session, rounds, chosen, arch, progress) -> dict:
    """Write the run to ``out`` (markers and model first, selected.json last); returns the paths."""
    from hitlseg.flim import FLIMModel
    from hitlseg.io import peek_image, read_image, write_markers
    from hitlseg.io.resample import resample_labels
    from hitlseg.plain import to_plain
    from hitlseg.project.files import write_json, write_text

    selected = list(session.selected)
    images = [session.images[i] for i in selected]
    markers = [session.markers[i] for i in selected]
    preprocessing = {"color": dataset.color, "normalize": dataset.normalize}
    if dataset.max_side is not None:
        preprocessing["max_side"] = dataset.max_side
    model = FLIMModel.fit(images, markers, arch, seed=args.seed, device=args.device, names=selected,
                          preprocessing=preprocessing, progress=progress)
    (out / "markers").mkdir(parents=True, exist_ok=True)
    stale = _previous_markers(out)
    files = []
    for sample_id, marks in zip(selected, markers):
        path = _marker_file(out, sample_id, marks.ndim)
        meta = None
        if marks.ndim == 3:  # volumes keep the image's geometry
            _, meta = read_image(dataset.sample(sample_id).image_paths[0], normalize="none")
        if dataset.max_side is not None:  # marked at the working resolution, stored on the image's own grid
            marks = resample_labels(marks, peek_image(dataset.sample(sample_id).image_paths)[1])
        write_markers(path, marks, meta)
        files.append(path)
    model_file = model.save(out / "flim.pt")
    kept = {p.resolve() for p in files}
    for path in stale:  # a previous run's markers of images not selected now would be taken as strokes
        if path.resolve() not in kept:
            path.unlink(missing_ok=True)
    rounds_data = [{"chosen_by": by, **r.to_dict(coords=False)} for r, by in zip(rounds, chosen)]
    rounds_file = write_json(out / "rounds.json", to_plain(rounds_data, json_floats=True), indent=2)
    write_text(out / "selected.txt", "".join(f"{i}\n" for i in selected))
    info = {
        "selected": selected,
        "dataset": str(dataset.root.resolve()),
        "split": str(Path(args.split).resolve()) if args.split else None,
        "pool": len(session.ids),
        "selector": args.selector,
        "policy": args.policy if args.selector == "gtfree" else None,
        "seed": args.seed,
        "duplicate_tolerance": args.duplicate_tolerance,
        "rounds": len(rounds),
        "marker_files": [p.name for p in files],
        "flim_model": "flim.pt",
        "arch": args.arch,
    }
    selected_file = write_json(out / "selected.json", info, indent=2)
    return {"selected": str(selected_file), "selected_txt": str(out / "selected.txt"), "rounds": str(rounds_file),
            "markers": str(out / "markers"), "flim_model": str(model_file)}
