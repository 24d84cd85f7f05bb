"""No-reference segmentation quality: how good is a mask, without its ground truth?

Galdran et al., "A no-reference quality metric for retinal vessel tree segmentation" (MICCAI
2018): degrade true masks in controlled ways (:mod:`~hitlseg.quality.degrade`), teach a small
CNN the similarity of each degraded mask to its truth from the image and the mask
(:func:`train_quality`, :class:`QualityModel`), then score any prediction without ground truth:
rank predictions (:func:`rank_predictions`), choose a threshold per image
(:func:`choose_threshold`), or ask the person about the worst predictions first (the active
learning strategy ``quality``). A model records its training data's fingerprint and warns on
data that differs (:mod:`~hitlseg.quality.fingerprint`).
"""

from hitlseg.quality.degrade import DEGRADATIONS, degrade, random_degradation
from hitlseg.quality.fingerprint import INTENSITY_TOLERANCE, STD_RATIO, check_domain, compare, fingerprint
from hitlseg.quality.measures import MEASURES, similarity
from hitlseg.quality.model import QualityModel, QualityNet
from hitlseg.quality.train import train_quality
from hitlseg.quality.uses import (THRESHOLDS, choose_threshold, expected_dice, otsu_threshold, rank_predictions,
                                  threshold_labels)

__all__ = [
    "DEGRADATIONS", "INTENSITY_TOLERANCE", "MEASURES", "QualityModel", "QualityNet", "STD_RATIO", "THRESHOLDS",
    "check_domain", "choose_threshold", "compare", "degrade", "expected_dice", "fingerprint", "otsu_threshold",
    "random_degradation", "rank_predictions", "similarity", "threshold_labels", "train_quality",
]
