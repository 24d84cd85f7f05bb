"""Pseudo-labels and learning from strokes: HISE tripartition, local consistency, schedules, self-training."""

from hitlseg.pseudo.expand import expand_strokes
from hitlseg.pseudo.labels import (IGNORE, Schedule, agreement, check_ignore, choose_images, confidence,
                                   confident_prediction, local_consistency, markers_to_target, merge_strokes, tripartition)
from hitlseg.pseudo.selftrain import (SelfTrainingConfig, StrokesResult, default_strokes_config, learn_from_strokes,
                                      pool_probabilities)

__all__ = [
    "IGNORE",
    "Schedule",
    "SelfTrainingConfig",
    "StrokesResult",
    "agreement",
    "check_ignore",
    "choose_images",
    "confidence",
    "confident_prediction",
    "default_strokes_config",
    "expand_strokes",
    "learn_from_strokes",
    "local_consistency",
    "markers_to_target",
    "merge_strokes",
    "pool_probabilities",
    "tripartition",
]
