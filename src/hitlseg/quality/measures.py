"""What the quality model learns to predict: the similarity of a mask to the true one.

Two measures, both in [0, 1] (Galdran et al., MICCAI 2018, regress a similarity of the degraded
segmentation to the reference): the mean foreground Dice over classes 1..K
(:func:`hitlseg.metrics.mean_dice`, a class absent from both masks counting 1), and the
normalised mutual information of the two label maps (scikit-learn's arithmetic-mean NMI; 1
when both are constant).
"""

from __future__ import annotations

import numpy as np

from hitlseg.metrics import mean_dice

#: The measures a quality model predicts, in the order of its outputs.
MEASURES = ("dice", "nmi")


def similarity(pred: np.ndarray, truth: np.ndarray, n_classes: int) -> dict[str, float]:
    """``{"dice": mean foreground Dice over 1..n_classes, "nmi": normalised mutual information}``."""
    from sklearn.metrics import normalized_mutual_info_score

    pred, truth = np.asarray(pred), np.asarray(truth)
    dice = mean_dice(pred, truth, labels=range(1, int(n_classes) + 1))
    nmi = float(normalized_mutual_info_score(truth.ravel(), pred.ravel()))
    return {"dice": float(dice), "nmi": min(max(nmi, 0.0), 1.0)}
