"""``hitlseg experiment selection`` and ``experiment active``: protocols over data splits, with reports."""

from __future__ import annotations

import argparse
import shlex
import sys

from hitlseg.cli import args as argtypes
from hitlseg.cli.common import progress_bar
from hitlseg.defaults import DECODER_CHOICES, DEFAULT_DECODER, DEFAULT_POLICY, GTFREE_POLICIES
from hitlseg.parallel.executor import add_execution_arguments, executor_from_args


def register(commands) -> None:
    """Add ``experiment selection`` and ``experiment active``."""
    experiment = commands.add_parser("experiment", help="experiment protocols with reports")
    sub = experiment.add_subparsers(dest="experiment_command", metavar="PROTOCOL", required=True)
    selection = sub.add_parser("selection", help="compare image-selection methods over data splits")
    selection.add_argument("--dataset", required=True, help="dataset folder with masks")
    selection.add_argument("--splits", type=argtypes.positive_int, default=3)
    selection.add_argument("--images", type=argtypes.positive_int, default=5, help="images each method selects")
    selection.add_argument("--methods", default="gtfree,random,labeled,kcenter")
    selection.add_argument("--policy", default=DEFAULT_POLICY, choices=list(GTFREE_POLICIES),
                           help=f"gtfree policy (default {DEFAULT_POLICY}: see the README's Defaults)")
    selection.add_argument("--decoder", default=DEFAULT_DECODER, choices=list(DECODER_CHOICES),
                           help=f"adaptive decoder rule (default {DEFAULT_DECODER}: see the README's Defaults)")
    selection.add_argument("--descriptor-stride", type=argtypes.positive_int, default=2,
                           help="descriptor activations every N pixels (default 2; 1 is exact)")
    selection.add_argument("--descriptor-fill", default="zero", choices=["zero", "edge", "quantile"],
                           help="how superpixel profiles are brought to the pool's superpixel count "
                                "(default zero: the paper's sorted means, padded)")
    selection.add_argument("--baseline", default="all", choices=["all", "none"],
                           help="'all': train the all-backprop U-Net on the training split")
    selection.add_argument("--no-sunet", action="store_true", help="skip the sU-Net decoders")
    selection.add_argument("--strokes", action="store_true",
                           help="also train each method's model from the robot's strokes alone (strokes learner, "
                                "self-training on the other training images)")
    selection.add_argument("--self-training", type=argtypes.non_negative_int, default=3,
                           help="self-training iterations with --strokes (3 keeps a study affordable; train uses 5)")
    selection.add_argument("--epochs", type=argtypes.positive_int, default=10, help="epochs of the sU-Net decoders and the baseline")
    selection.add_argument("--eval-limit", type=argtypes.positive_int, help="score at most this many validation/test images")
    selection.add_argument("--refine", default="", metavar="REFINERS",
                           help="comma-separated refiners (graphcut, crf, levelset; default none): also score the "
                                "sU-Net decoders' (and --strokes models') probabilities refined by each, default "
                                "settings, as extra rows such as sunet+crf (the adaptive decoder is not refined)")
    selection.add_argument("--quality-model", metavar="FILE", default=None,
                           help="quality model ('hitlseg quality train'): also score every trained network's test "
                                "predictions without ground truth, beside their true Dice, in the report")
    selection.add_argument("--seed", type=argtypes.seed, default=0)
    selection.add_argument("--out", required=True, help="output folder (re-running resumes)")
    add_execution_arguments(selection)
    selection.set_defaults(func=run_selection)
    register_active(sub)
    register_weak(sub)


def run_selection(args) -> int:
    from hitlseg.dataset import Dataset
    from hitlseg.experiments import ProtocolConfig, run_protocol, write_report
    from hitlseg.experiments.protocol import compute_seconds
    from hitlseg.validate import check_output_dir

    check_output_dir(args.out)
    config = ProtocolConfig(splits=args.splits, images=args.images, methods=tuple(m.strip() for m in args.methods.split(",") if m.strip()),
                            policy=args.policy, decoder=args.decoder,
                            stride=args.descriptor_stride, fill=args.descriptor_fill, sunet=not args.no_sunet,
                            baseline=args.baseline == "all", epochs=args.epochs,
                            strokes=args.strokes, self_training=args.self_training, eval_limit=args.eval_limit,
                            refine=tuple(r.strip() for r in args.refine.split(",") if r.strip()), seed=args.seed,
                            quality_model=args.quality_model)
    dataset = Dataset.from_folder(args.dataset)
    executor = executor_from_args(args)  # an unreachable scheduler fails here, before any work
    with executor, progress_bar("experiment") as progress:
        results = run_protocol(dataset, args.out, config, progress=progress,
                               log=lambda line: print(line, file=sys.stderr, flush=True),
                               executor=executor if executor.distributed else None)
    command = "hitlseg " + " ".join(shlex.quote(a) for a in sys.argv[1:]) if sys.argv[0].endswith("hitlseg") else None
    report = write_report(results, args.out, command=command, wall_seconds=compute_seconds(results))
    print(f"report: {report}")
    return 0


def register_active(sub) -> None:
    """Add ``experiment active``."""
    active = sub.add_parser("active", help="compare active-learning strategies: test Dice against annotation effort")
    active.add_argument("--dataset", required=True, help="dataset folder with masks (the robot annotates from them)")
    active.add_argument("--strategies", default="random,fg_random,entropy,coreset",
                        help="comma-separated strategies (random, fg_random, entropy, margin, least_confidence, bald, "
                             "ensemble, consistency, suggestive, coreset, knapsack, dasl)")
    active.add_argument("--splits", type=argtypes.positive_int, default=3)
    active.add_argument("--images", type=argtypes.positive_int, default=5, help="round-0 images (ground-truth-free selection)")
    active.add_argument("--rounds", type=argtypes.non_negative_int, default=10)
    active.add_argument("--per-round", type=argtypes.positive_int, default=1, help="images corrected per round")
    active.add_argument("--budget", type=argtypes.positive_float, help="seconds of effort per round for the knapsack strategy")
    active.add_argument("--initial-self-training", type=argtypes.non_negative_int, default=5, help="self-training iterations of round 0")
    active.add_argument("--self-training", type=argtypes.non_negative_int, default=1, help="self-training iterations per round")
    active.add_argument("--epochs", type=argtypes.positive_int, default=5, help="warm-started epochs on the strokes per round")
    active.add_argument("--pool-limit", type=argtypes.positive_int, default=60, help="pool images self-training uses per round")
    active.add_argument("--synthetic", type=argtypes.non_negative_int, default=0,
                        help="also run every strategy with N synthetic samples per annotated image per round "
                             "(a '<strategy>+synthetic' arm; Mahapatra et al. 2018)")
    active.add_argument("--generator-steps", type=argtypes.positive_int, default=400,
                        help="generator training steps of the first synthesis round (default 400)")
    active.add_argument("--generator-refresh-steps", type=argtypes.positive_int, default=100,
                        help="generator steps of every later round, continuing the previous generator (default 100)")
    active.add_argument("--review-passes", type=argtypes.non_negative_int, default=0,
                        help="0: one pass of corrective strokes per queried image; N: the robot reviews the prediction "
                             "with up to N passes of strokes (each refined by a graph cut) and the image trains on "
                             "the accepted mask")
    active.add_argument("--correction", choices=("strokes", "fill"), default="strokes",
                        help="how the robot corrects an error region: strokes along it (default) or painting it")
    active.add_argument("--refresh", action=argparse.BooleanOptionalAction, default=True,
                        help="after each loop's last round, retrain from scratch on all its labels (about one round-0 "
                             "training; reported beside the warm-started model; default on)")
    active.add_argument("--baseline-epochs", type=argtypes.non_negative_int, default=30,
                        help="epochs of the all-backprop U-Net reference (0: use --reference)")
    active.add_argument("--reference", type=argtypes.fraction, help="fixed reference Dice when --baseline-epochs 0")
    active.add_argument("--eval-limit", type=argtypes.positive_int, help="score at most this many test images")
    active.add_argument("--seed", type=argtypes.seed, default=0)
    active.add_argument("--out", required=True, help="output folder (re-running resumes)")
    add_execution_arguments(active)
    active.set_defaults(func=run_active)


def run_active(args) -> int:
    from hitlseg.dataset import Dataset
    from hitlseg.experiments.active import ActiveProtocolConfig, run_active_protocol
    from hitlseg.experiments.active_report import write_active_report
    from hitlseg.validate import check_output_dir

    check_output_dir(args.out)
    config = ActiveProtocolConfig(strategies=tuple(s.strip() for s in args.strategies.split(",") if s.strip()),
                                  splits=args.splits, images=args.images, rounds=args.rounds, per_round=args.per_round,
                                  budget=args.budget, initial_self_training=args.initial_self_training,
                                  self_training=args.self_training, epochs=args.epochs, pool_limit=args.pool_limit,
                                  synthetic=args.synthetic, generator_steps=args.generator_steps,
                                  generator_refresh_steps=args.generator_refresh_steps,
                                  review_passes=args.review_passes, correction=args.correction, refresh=args.refresh, baseline_epochs=args.baseline_epochs, reference=args.reference,
                                  eval_limit=args.eval_limit, seed=args.seed)
    dataset = Dataset.from_folder(args.dataset)
    executor = executor_from_args(args)  # an unreachable scheduler fails here, before any work
    with executor, progress_bar("experiment") as progress:
        results = run_active_protocol(dataset, args.out, config, progress=progress,
                                      log=lambda line: print(line, file=sys.stderr, flush=True),
                                      executor=executor if executor.distributed else None)
    command = "hitlseg " + " ".join(shlex.quote(a) for a in sys.argv[1:]) if sys.argv[0].endswith("hitlseg") else None
    print(f"report: {write_active_report(results, args.out, command=command)}")
    return 0


def _budgets(text: str) -> tuple[float, ...]:
    """``--budgets``: comma-separated fractions of the training images, each in (0, 1)."""
    import argparse
    import math

    values = []
    for item in (t.strip() for t in text.split(",")):
        try:
            value = float(item)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected comma-separated fractions such as 0.1,0.2, got {item!r}") from None
        if not (math.isfinite(value) and 0 < value < 1):
            raise argparse.ArgumentTypeError(f"each budget must be a fraction of the training images in (0, 1), got {item!r}")
        values.append(value)
    return tuple(values)


def _weak_methods(text: str) -> tuple[str, ...]:
    """``--methods``: comma-separated names of :data:`hitlseg.experiments.weak.METHODS`."""
    import argparse

    METHODS = WEAK_METHODS
    names = tuple(m.strip() for m in text.split(",") if m.strip())
    unknown = [m for m in names if m not in METHODS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"unknown method(s) {', '.join(map(repr, unknown)) or 'none given'} "
                                         f"(use some of {', '.join(METHODS)})")
    return names


WEAK_METHODS = ("all_foreground", "cam_only", "no_pseudo", "joint", "full")  # hitlseg.experiments.weak.METHODS (a test checks)


def register_weak(sub) -> None:
    """Add ``experiment weak`` (imports nothing heavy: the command line starts fast)."""
    METHODS = WEAK_METHODS
    weak = sub.add_parser("weak", help="weak supervision from labels.csv: trivial mask, CAM-only, active learning "
                                       "without and with pseudo-labels (joint), full supervision, per oracle budget")
    weak.add_argument("--dataset", required=True, help="dataset folder with masks and labels.csv (meta.csv with a "
                                                       "split column: its train part trains, every other part is a test group)")
    weak.add_argument("--labels", metavar="CSV", help="image-level labels (default: DATASET/labels.csv)")
    weak.add_argument("--budgets", type=_budgets, default=(0.1,), metavar="F[,F..]",
                      help="oracle budgets, fractions of the training images (default 0.1)")
    weak.add_argument("--rounds", type=argtypes.positive_int, default=2, help="oracle rounds (default 2)")
    weak.add_argument("--warmup-epochs", type=argtypes.non_negative_int, default=10, help="classifier epochs first (default 10)")
    weak.add_argument("--epochs", type=argtypes.positive_int, default=10, help="joint epochs per round (default 10)")
    weak.add_argument("--methods", type=_weak_methods, default=METHODS, metavar="M[,M..]",
                      help=f"comma-separated, some of {', '.join(METHODS)} (default all)")
    weak.add_argument("--oracle", choices=("masks", "strokes"), default="masks", help="what the simulated oracle gives")
    weak.add_argument("--norm", choices=("instance", "none", "batch"), default="instance")
    weak.add_argument("--holdout", type=argtypes.non_negative_float, default=0.2,
                      help="test fraction when the dataset has no meta.csv split (default 0.2)")
    weak.add_argument("--no-crf", dest="cam_crf", action="store_false", help="skip CAM-only refined by the dense CRF")
    weak.add_argument("--overlays", type=argtypes.non_negative_int, default=2, help="test images per group drawn (default 2)")
    weak.add_argument("--max-side", type=argtypes.max_side, default=None, metavar="N",
                      help="read every image with its longest side at most N pixels")
    weak.add_argument("--seed", type=argtypes.seed, default=0)
    weak.add_argument("--device", type=argtypes.device, default=None, help="cpu, cuda, ... (default: CUDA when present)")
    weak.add_argument("--out", required=True, help="output folder (re-running resumes)")
    weak.set_defaults(func=run_weak)


def run_weak(args) -> int:
    """``hitlseg experiment weak``: run (or resume) the study, write the report, print its path."""
    from hitlseg.dataset import Dataset
    from hitlseg.experiments.weak import WeakProtocolConfig, run_weak_protocol
    from hitlseg.experiments.weak_report import write_weak_report
    from hitlseg.validate import check_output_dir

    config = WeakProtocolConfig(methods=args.methods, budgets=args.budgets, rounds=args.rounds,
                                warmup_epochs=args.warmup_epochs, epochs=args.epochs, oracle=args.oracle,
                                norm=args.norm, cam_crf=args.cam_crf, holdout=args.holdout, overlays=args.overlays,
                                seed=args.seed, device=args.device)
    check_output_dir(args.out)
    dataset = Dataset.from_folder(args.dataset, max_side=args.max_side)
    with progress_bar("experiment") as progress:
        results = run_weak_protocol(dataset, args.out, config, labels=args.labels, progress=progress,
                                    log=lambda line: print(line, file=sys.stderr, flush=True))
    command = "hitlseg " + " ".join(shlex.quote(a) for a in sys.argv[1:]) if sys.argv[0].endswith("hitlseg") else None
    print(f"report: {write_weak_report(results, args.out, command=command)}")
    return 0
