"""Active learning by predicted quality: the person corrects the worst predictions first.

The no-reference quality model of :mod:`hitlseg.quality` (Galdran et al., MICCAI 2018) rates
each unannotated image's current prediction (the arg-max of the context's probabilities) from
the image and the mask; the images with the lowest predicted Dice are asked first. Without a
quality model the strategy falls back to :func:`hitlseg.quality.expected_dice`, the model's own
estimate from its probabilities (no image needed).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from hitlseg.active.strategies import ActiveStrategy
from hitlseg.errors import InputError


class QualityStrategy(ActiveStrategy):
    """Lowest predicted quality first.

    Parameters
    ----------
    model : QualityModel, path or None
        A quality model (:class:`hitlseg.quality.QualityModel`) or the file it was saved to (read
        once); None: the expected Dice of the probabilities.
    measure : {"dice", "nmi"}
        The quality model's output to rank by.
    seed : int
        Unused (the ranking is deterministic); kept for the strategy contract.
    """

    name = "quality"

    def __init__(self, model=None, measure: str = "dice", seed: int = 0):
        from hitlseg.quality import MEASURES, QualityModel

        super().__init__(seed)
        if measure not in MEASURES:
            raise InputError(f"measure: unknown {measure!r} (use one of {', '.join(MEASURES)})")
        if isinstance(model, (str, Path)):
            model = QualityModel.load(model)
        if model is not None and not isinstance(model, QualityModel):
            raise InputError(f"model: need a QualityModel or its file, got {type(model).__name__}")
        self.model, self.measure = model, measure
        self.criterion = (f"predicted {measure} of the prediction (quality model), lowest first" if model is not None
                          else "expected Dice from the model's own probabilities, lowest first")

    def score(self, context, free):
        if self.model is None:
            from hitlseg.quality import expected_dice

            return {i: -expected_dice(context.probability(i)) for i in free}
        if context.images is None:
            raise InputError("strategy 'quality': needs the pool images in the context (the quality model looks at "
                             "the image and its prediction)")
        missing = [i for i in free if i not in context.images]
        if missing:
            raise InputError(f"strategy 'quality': no image {missing[0]!r} in the context")
        labels = [np.argmax(context.probability(i), axis=0).astype(np.uint8) for i in free]
        scored = self.model.score_many([context.images[i] for i in free], labels, free)
        return {i: -s[self.measure] for i, s in zip(free, scored)}
