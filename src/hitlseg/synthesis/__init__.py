"""Synthetic training samples from altered masks (Mahapatra et al., MICCAI 2018).

"Efficient active learning for image classification and segmentation using a sample selection
and conditional generative adversarial network": the masks of annotated images are altered
(:mod:`~hitlseg.synthesis.alter`), a mask-conditioned GAN generates realistic images for them
(:mod:`~hitlseg.synthesis.generator`), the segmentation model's Bayesian uncertainty picks the
informative ones (:mod:`~hitlseg.synthesis.select`), and they join training with their masks
(:mod:`~hitlseg.synthesis.training`), written to disk marked as synthetic
(:mod:`~hitlseg.synthesis.store`).
"""

from hitlseg.synthesis.alter import (ALTERATIONS, add_object, apply_alteration, elastic, grow, objects,
                                     random_alteration, remove_object, rotate, scale, shrink, translate)
from hitlseg.synthesis.generator import GeneratorConfig, Synthesizer, train_generator
from hitlseg.synthesis.select import (SynthesisResult, feature_distances, mc_dropout_scorer, select_informative,
                                      synthesize_for_training)
from hitlseg.synthesis.store import is_synthetic, read_manifest, synthetic_ids, write_synthetic
from hitlseg.synthesis.training import (SynthesisConfig, accepted_mask, synthesize_from_annotations,
                                        train_with_synthesis)

__all__ = [
    "ALTERATIONS", "GeneratorConfig", "SynthesisConfig", "SynthesisResult", "Synthesizer", "accepted_mask", "add_object",
    "apply_alteration", "elastic", "feature_distances", "grow", "is_synthetic", "mc_dropout_scorer", "objects",
    "random_alteration", "read_manifest", "remove_object", "rotate", "scale", "select_informative", "shrink",
    "synthesize_for_training", "synthesize_from_annotations", "synthetic_ids", "train_generator", "train_with_synthesis", "translate",
    "write_synthetic",
]
