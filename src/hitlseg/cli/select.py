"""``hitlseg select``: the image-selection loop driven by the simulated annotator (the robot)."""

from __future__ import annotations

import time

from hitlseg.cli import args as argtypes

# Names of hitlseg.selection.SELECTORS and GTFREE_POLICIES, spelled out so that building the
# parser does not import torch (every command would pay for it); a test keeps them in step.
SELECTOR_NAMES = ("gtfree", "random", "labeled", "kcenter")
POLICY_NAMES = ("most_distant", "closest", "alternate")


def register(commands) -> None:
    """Add the ``select`` command to the sub-parser ``commands``."""

    parser = commands.add_parser(
        "select",
        help="choose images to mark, round by round (ground-truth-free selection or a baseline)",
        description="Run the selection loop: each round the chosen image is marked (by the robot, from its "
        "ground-truth mask), FLIM filters are refitted and the next image is recommended.",
    )
    parser.add_argument("--dataset", required=True, help="dataset folder (images with masks, for the robot)")
    parser.add_argument("--robot", action="store_true",
                        help="let the simulated annotator mark each selected image from its mask (required)")
    parser.add_argument("--rounds", type=argtypes.positive_int, default=5, help="images to select and mark (default 5)")
    parser.add_argument("--seed", type=argtypes.seed, default=0, help="seed of the first choice, the robot and FLIM (default 0)")
    parser.add_argument("--selector", default="gtfree", choices=list(SELECTOR_NAMES),
                        help="how the next image is chosen (default gtfree)")
    parser.add_argument("--policy", default="most_distant", choices=list(POLICY_NAMES),
                        help="gtfree policy (default most_distant)")
    parser.add_argument("--k", type=argtypes.positive_int, default=5, help="recommendations per list (default 5)")
    parser.add_argument("--distance", default="min", choices=["min", "last"],
                        help="distance to the selected set: nearest selected image or the last one")
    parser.add_argument("--maps", default="object", choices=["object", "all", "saliency"],
                        help="feature maps in the descriptor (default: kernels from object markers)")
    parser.add_argument("--projection", default="tsne", choices=["tsne", "pca"], help="2D projection (default tsne)")
    parser.add_argument("--perplexity", type=argtypes.positive_float, default=30.0, help="t-SNE perplexity (reduced for small pools)")
    parser.add_argument("--superpixels", type=argtypes.positive_int, default=None, help="superpixels per image (default 20 in 2D, 40 in 3D)")
    parser.add_argument("--cache", default=None, help="folder caching superpixels between runs")
    parser.add_argument("--stop-threshold", type=argtypes.non_negative_float, default=0.05,
                        help="relative coverage-radius improvement below which stopping is suggested")
    parser.add_argument("--stop-patience", type=argtypes.positive_int, default=2,
                        help="rounds in a row below the threshold before stopping is suggested (default 2)")
    parser.add_argument("--stop-early", action="store_true", help="end the loop when stopping is suggested")
    parser.add_argument("--device", type=argtypes.device, default=None, help="torch device (default: CUDA when present, else CPU)")
    parser.add_argument("--json", action="store_true", help="print all rounds as JSON")
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
    print(f"  normalised coverage radius {stop.normalized_radius:.3f} ({change}; raw {stop.radius:.4g} of diameter "
          f"{stop.diameter:.4g}); suggestion: {stop.suggestion} ({stop.reason})")
    times = " ".join(f"{k} {v:.2f}s" for k, v in result.timings.items() if k != "stopping")
    print(f"  timings: {times}")
    for note in result.notes:
        print(f"  note: {note}")


def run_select(args) -> int:
    from hitlseg.cli.common import print_json, progress_bar
    from hitlseg.dataset import Dataset
    from hitlseg.errors import InputError
    from hitlseg.robot import Robot
    from hitlseg.selection import SelectionSession, SuperpixelCache, make_selector
    from hitlseg.validate import check_output_dir

    if not args.robot:
        raise InputError("--robot: the command line runs the loop with the simulated annotator; pass --robot "
                         "(a person marks images in the web interface)")
    if args.cache:
        check_output_dir(args.cache, "--cache")
    dataset = Dataset.from_folder(args.dataset)
    missing = [i for i in dataset.ids if dataset.sample(i).mask_path is None]
    if missing:
        shown = ", ".join(missing[:5]) + (" ..." if len(missing) > 5 else "")
        raise InputError(f"{args.dataset}: the robot marks images from their masks, but {len(missing)} image(s) "
                         f"have none: {shown}")
    if args.rounds > len(dataset):
        raise InputError(f"--rounds: {args.rounds} rounds but the dataset has only {len(dataset)} images")
    options = {"seed": args.seed}
    if args.selector == "gtfree":
        options.update(policy=args.policy, distance=args.distance)
    selector = make_selector(args.selector, **options)
    robot = Robot(args.seed)

    started = time.perf_counter()
    with progress_bar("preparing", enabled=not args.json) as progress:
        cache = SuperpixelCache(args.cache) if args.cache else None
        session = SelectionSession(dataset, n_superpixels=args.superpixels, superpixel_cache=cache, seed=args.seed,
                                   maps=args.maps, distance=args.distance, k=args.k, projection=args.projection,
                                   perplexity=args.perplexity, stop_threshold=args.stop_threshold,
                                   stop_patience=args.stop_patience,
                                   device=args.device, progress=progress)
    prepare_s = time.perf_counter() - started
    masks = {}
    if args.selector == "labeled":
        masks = {i: dataset.mask(i, session.images[i].shape[1:]) for i in session.ids}

    rounds = []
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
        if not args.json:
            _print_round(result, chosen_by)
        if args.stop_early and result.stopping.stop:
            break

    if args.json:
        print_json({
            "dataset": str(dataset.root),
            "pool": len(session.ids),
            "selector": args.selector,
            "policy": args.policy if args.selector == "gtfree" else None,
            "seed": args.seed,
            "prepare_s": prepare_s,
            "selected": list(session.selected),
            "rounds": [r.to_dict(coords=False) for r in rounds],
        })
    else:
        print(f"selected: {', '.join(session.selected)}")
    return 0
