"""``hitlseg weak train``: joint classification + segmentation from image-level labels and a simulated oracle."""

from __future__ import annotations

from pathlib import Path

from hitlseg.cli import args as argtypes
from hitlseg.cli.common import print_json, progress_bar
from hitlseg.weak.splits import holdout_ids


def register(commands) -> None:
    """Add the ``weak`` commands to the sub-parser ``commands``."""
    weak = commands.add_parser("weak", help="weak supervision from image-level labels (labels.csv)")
    sub = weak.add_subparsers(dest="weak_command", metavar="COMMAND", required=True)
    train = sub.add_parser("train", help="train a classifier + segmenter from labels.csv, with oracle rounds "
                                         "(simulated from the masks) and neighbour pseudo-labels")
    train.add_argument("--dataset", required=True, help="dataset folder with images/, masks/ (for the simulated oracle) "
                                                        "and labels.csv (id,class)")
    train.add_argument("--labels", metavar="CSV", help="image-level labels (default: DATASET/labels.csv)")
    train.add_argument("--oracle", choices=("masks", "strokes"), default="masks",
                       help="what the simulated oracle gives per chosen image: its full mask, or robot strokes (default masks)")
    train.add_argument("--rounds", type=argtypes.positive_int, default=2, help="oracle rounds (default 2)")
    train.add_argument("--per-round", type=argtypes.positive_int, default=2, metavar="N",
                       help="images the oracle annotates per round (default 2)")
    train.add_argument("--strategy", choices=("random", "uncertainty"), default="random",
                       help="how the oracle's images are chosen after the first round (default random)")
    train.add_argument("--encoder", choices=("backprop", "flim"), default="backprop",
                       help="backprop: a trained encoder; flim: a frozen FLIM encoder fitted on strokes of the "
                            "first round's images (default backprop)")
    train.add_argument("--no-pseudo", dest="pseudo", action="store_false",
                       help="train on the oracle's images only (standard active learning, no pseudo-labels)")
    train.add_argument("--warmup-epochs", type=argtypes.non_negative_int, default=10,
                       help="classifier-only epochs before the first round (default 10)")
    train.add_argument("--epochs", type=argtypes.positive_int, default=10, help="joint epochs per round (default 10)")
    train.add_argument("--lr", type=argtypes.positive_float, default=1e-3, help="learning rate of Adam (default 1e-3)")
    train.add_argument("--batch-size", type=argtypes.positive_int, default=1, help="images per step (default 1)")
    train.add_argument("--cam", choices=("cam", "gradcam", "gradcam++"), default="cam",
                       help="activation map used as the pseudo-labels' prior (default cam)")
    train.add_argument("--norm", choices=("instance", "none", "batch"), default="instance",
                       help="normalisation of the network (default instance)")
    train.add_argument("--holdout", type=argtypes.non_negative_float, default=0.2, metavar="F",
                       help="fraction of the images (with masks) held out for the per-round Dice and accuracy; "
                            "never trained on (default 0.2; 0: no evaluation)")
    train.add_argument("--max-side", type=argtypes.max_side, default=None, metavar="N",
                       help="read every image with its longest side at most N pixels (stored with the model)")
    train.add_argument("--seed", type=argtypes.seed, default=0, help="seed of the hold-out, the oracle's choices, "
                                                                     "the strokes and the training")
    train.add_argument("--device", type=argtypes.device, default=None, help="cpu, cuda, ... (default: CUDA when present)")
    train.add_argument("--out", required=True, metavar="MODEL",
                       help="model file to write: a segmentation model ('hitlseg predict' reads it) that also "
                            "holds the classification head and the per-round history")
    train.add_argument("--json", action="store_true", help="print a JSON summary")
    train.set_defaults(func=run_train)


def run_train(args) -> int:
    """``hitlseg weak train``: read the labels, hold out ``--holdout``, train in rounds, save the model."""
    from hitlseg.dataset import Dataset
    from hitlseg.weak.joint import WeakConfig, weak_train
    from hitlseg.validate import check_output_file
    from hitlseg.weak.labels import read_image_labels

    check_output_file(args.out)  # before minutes of training
    dataset = Dataset.from_folder(args.dataset, max_side=args.max_side)
    labels = read_image_labels(dataset, args.labels)
    config = WeakConfig(rounds=args.rounds, per_round=args.per_round, oracle=args.oracle, strategy=args.strategy,
                        encoder=args.encoder, pseudo=args.pseudo, warmup_epochs=args.warmup_epochs, epochs=args.epochs,
                        lr=args.lr, batch_size=args.batch_size, cam_method=args.cam, norm=args.norm, seed=args.seed,
                        device=args.device)
    train_ids, eval_ids = holdout_ids(dataset, args.holdout, args.seed)
    with progress_bar("weak train", enabled=not args.json) as progress:
        result = weak_train(dataset, labels, config, train_ids=train_ids, eval_ids=eval_ids, progress=progress)
    result.model.info["weak"]["eval_ids"] = eval_ids
    path = result.model.save(Path(args.out))
    summary = {"model": str(path), "classes": list(result.classes), "train_images": len(train_ids),
               "eval_images": len(eval_ids), "oracle_ids": result.oracle_ids, "rounds": result.history}
    if args.json:
        print_json(summary)
        return 0
    print(f"model:    {path}")
    print(f"classes:  {', '.join(result.classes)}")
    print(f"images:   {len(train_ids)} training, {len(eval_ids)} held out")
    print("round  oracle  pseudo  accuracy  dice   cam_dice  seconds")
    for row in result.history:
        def cell(key, width=7):
            value = row.get(key)
            return (f"{value:.3f}" if isinstance(value, float) else "-").ljust(width)

        print(f"{row['round']:<6} {row['oracle_images']:<7} {row['pseudo_images']:<7} {cell('accuracy', 9)} "
              f"{cell('dice')}{cell('cam_dice', 9)} {row['seconds']:.1f}")
    return 0
