"""``hitlseg experiment selection`` and ``experiment active``: protocols over data splits, with reports."""

from __future__ import annotations

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
    selection.set_defaults(func=run_selection)
    register_active(sub)


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
    with progress_bar("experiment") as progress:
        results = run_protocol(dataset, args.out, config, progress=progress,
                               log=lambda line: print(line, file=sys.stderr, flush=True))
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
                                  baseline_epochs=args.baseline_epochs, reference=args.reference,
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
