"""The defaults every command, the Python API and the web app share, with the reason for each.

One place, imported by the modules that use them (and light: no torch), so that ``select``,
``experiment``, ``flim fit``, the robot and the server cannot drift apart.
"""

from __future__ import annotations

#: Rules of the adaptive FLIM decoder (:mod:`hitlseg.flim.decoders`).
DECODERS = ("weights", "labels", "mean", "gauss")
#: ``auto`` picks, when a FLIM model is fitted, the rule that best labels the model's own marker
#: pixels (mean recall over marker classes; ``weights`` only with one object class), so no ground
#: truth is needed. Measured on held-out images (``benchmarks/decoders.py``: schisto 12 with the
#: human markers, wbc1 and hippocampus 40 with robot markers), foreground Dice of
#: weights / labels / mean / gauss: schisto 0.765 / 0.726 / 0.738 / 0.736, wbc1 0.414 / 0.667 /
#: 0.700 / 0.654, hippocampus 0.000 / 0.393 / 0.224 / 0.305; the marker score ranks the best rule
#: first on schisto (weights) and hippocampus (labels) and ties labels with mean on wbc1.
DECODER_CHOICES = ("auto",) + DECODERS
#: The default decoder rule of a fitted model (see above).
DEFAULT_DECODER = "auto"

#: Policies of the ground-truth-free selector (:class:`hitlseg.selection.GTFreeSelector`).
GTFREE_POLICIES = ("most_distant", "closest", "alternate")
#: The default policy. ``alternate`` takes the most distant image (new appearance, which new
#: filters need) and then the closest (a second look at what the last filters saw), round after
#: round: the protocol of the selection experiments and of the simulated annotator.
DEFAULT_POLICY = "alternate"

#: 2D projections of the selection view (:func:`hitlseg.selection.projection.project`): t-SNE
#: (openTSNE), PCA, UMAP (umap-learn, the ``hitlseg[umap]`` extra).
PROJECTIONS = ("tsne", "pca", "umap")
#: t-SNE, the projection of the paper's selection view; UMAP is an option, not the default, since
#: umap-learn is an optional extra and its first layout in a process compiles for about 6 s.
DEFAULT_PROJECTION = "tsne"

#: Whether the strokes learner expands a fresh model's strokes by graph cut
#: (:mod:`hitlseg.pseudo.expand`), by number of spatial dimensions. Chosen on wbc1 validation
#: images only (seed-0..2 splits, 5 gtfree-chosen images, robot strokes): mean val Dice without
#: self-training 0.863 -> 0.888; with 5 self-training iterations (split 0) 0.888 -> 0.902, in half
#: the time (fewer pool pixels left to pseudo-label). Not measured on volumes, so off in 3D.
EXPAND_STROKES = {2: True, 3: False}

#: Post-processing a fresh strokes-learner model keeps (:mod:`hitlseg.nets.postprocess`), by number
#: of spatial dimensions: ``agree`` keeps the objects the FLIM adaptive decoder also finds. Chosen
#: on validation images only: wbc1 validation (seed-0..2 splits, 30 images each, the expanded
#: learner on 5 gtfree-chosen robot-marked images) mean Dice 0.878 / 0.890 / 0.904 -> 0.911 /
#: 0.899 / 0.921; schisto leave-one-out over its 5 human-marked images (train on 4, score the
#: fifth's mask) 0.387 -> 0.588 (expanded learner) and 0.266 -> 0.536 (strokes only). Not
#: validated on volumes (hippocampus test: -0.005), so off in 3D. A person can still choose
#: ``none`` or ``largest`` at prediction.
STROKES_POSTPROCESS = {2: "agree", 3: "none"}
