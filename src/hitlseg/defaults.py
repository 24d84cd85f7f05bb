"""The defaults every command, the Python API and the web app share, with the reason for each.

One place, imported by the modules that use them (and light: no torch), so that ``select``,
``experiment``, ``flim fit``, the robot and the server cannot drift apart.
"""

from __future__ import annotations

#: Rules of the adaptive FLIM decoder (:mod:`hitlseg.flim.decoders`).
DECODERS = ("weights", "labels", "mean")
#: The default decoder rule. ``labels`` is the published labeled-marker decoder, and the only rule
#: that holds in 3D. Measured on held-out images (``benchmarks/flim.py --quick``: schisto 12, wbc1
#: and hippocampus 40), foreground Dice weights / labels / mean: schisto 0.765 / 0.726 / 0.738,
#: wbc1 0.414 / 0.667 / 0.700, hippocampus 0.000 / 0.361 / 0.219. ``weights`` separates objects
#: from background only; ``mean`` does better in 2D with several classes.
DEFAULT_DECODER = "labels"

#: Policies of the ground-truth-free selector (:class:`hitlseg.selection.GTFreeSelector`).
GTFREE_POLICIES = ("most_distant", "closest", "alternate")
#: The default policy. ``alternate`` takes the most distant image (new appearance, which new
#: filters need) and then the closest (a second look at what the last filters saw), round after
#: round: the protocol of the selection experiments and of the simulated annotator.
DEFAULT_POLICY = "alternate"

#: Whether the strokes learner expands a fresh model's strokes by graph cut
#: (:mod:`hitlseg.pseudo.expand`), by number of spatial dimensions. Chosen on wbc1 validation
#: images only (seed-0..2 splits, 5 gtfree-chosen images, robot strokes): mean val Dice without
#: self-training 0.863 -> 0.888; with 5 self-training iterations (split 0) 0.888 -> 0.902, in half
#: the time (fewer pool pixels left to pseudo-label). Not measured on volumes, so off in 3D.
EXPAND_STROKES = {2: True, 3: False}
