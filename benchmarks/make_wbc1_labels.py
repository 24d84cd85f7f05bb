"""Write a synthetic image-level label for wbc1 into a linked copy of the dataset (for the weak-supervision protocol).

The rule (:mod:`hitlseg.weak.synthetic`), derived for this test only: ``large`` when the nucleus
(mask label 2) covers a larger fraction of the image than the median fraction over all images,
else ``small``. ``--out`` gets ``images/`` and ``masks/`` as symbolic links to the source's and a
new ``labels.csv``; the source folder is never written to. Prints one JSON line.

Usage::

    python benchmarks/make_wbc1_labels.py --out /tmp/wbc1_labelled
    hitlseg experiment weak --dataset /tmp/wbc1_labelled --out /tmp/weak_wbc1
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path

DEFAULT = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "wbc1"


def main(argv=None) -> int:
    """Make the copy and print ``{"out", "images", "counts", "rule"}``."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from _emit import emit

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default=str(DEFAULT), help="source dataset folder (read only)")
    parser.add_argument("--label", type=int, default=2, help="mask label whose area decides (default 2, nucleus)")
    parser.add_argument("--out", required=True, help="new folder for the linked copy")
    args = parser.parse_args(argv)
    from hitlseg.weak.synthetic import labelled_copy

    out, labels = labelled_copy(args.dataset, args.out, args.label)
    emit({"out": str(out), "images": len(labels), "counts": dict(sorted(Counter(labels.values()).items())),
          "rule": f"large if the fraction of mask label {args.label} > the median over the images, else small"})
    return 0


if __name__ == "__main__":
    sys.exit(main())
