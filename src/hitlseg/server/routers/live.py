"""Live segmentation in the marker editor: a graph cut of the current image from the strokes on screen.

Every stroke the person draws in the editor's Live mode posts the current (unsaved) markers; the
answer is a label array from :class:`hitlseg.refine.LiveGraphCut`, which the page shows as an
overlay and can accept as markers. Nothing is stored: the markers are saved, as always, by
``PUT /api/images/{id}/markers``. The graphs live in :class:`hitlseg.server.live.LiveService`.
"""

from __future__ import annotations

import time

from fastapi import APIRouter, Depends
from pydantic import BaseModel, ConfigDict, Field

from hitlseg.errors import InputError
from hitlseg.server.deps import ServerState, state
from hitlseg.server.imaging import MARKER_ENCODING, decode_labels, encode_labels

router = APIRouter(prefix="/api/images", tags=["live segmentation"])


class LiveRequest(BaseModel):
    """The strokes on screen, in the markers' encoding."""

    model_config = ConfigDict(extra="forbid", strict=True)

    shape: list[int] = Field(min_length=2, max_length=3, description="Spatial shape of the label array")
    encoding: str = Field(MARKER_ENCODING, description=f"Always {MARKER_ENCODING!r}")
    data: str = Field(min_length=1, description="base64 of the zlib-compressed uint8 markers (0 unmarked, c+1 class c)")


@router.post("/{image_id}/live", summary="Live graph cut of an image from the strokes on screen (stores nothing)",
             responses={400: {"description": "Strokes of fewer than two classes (background and an object), or "
                                             "markers that do not fit the image"}})
def live_segmentation(image_id: str, body: LiveRequest, s: ServerState = Depends(state)):
    """Labels (0 background, k class k) of a graph cut with the strokes as hard constraints and colour models
    fitted to them (Boykov-Jolly; :class:`hitlseg.refine.LiveGraphCut`)."""
    info = s.require_image(image_id)
    if body.encoding != MARKER_ENCODING:
        raise InputError(f"encoding: only {MARKER_ENCODING!r} is accepted, got {body.encoding!r}")
    shape = tuple(info["shape"])
    if tuple(body.shape) != shape:
        raise InputError(f"shape: {tuple(body.shape)} differs from the shape {shape} of image {image_id!r}")
    markers = decode_labels(body.data, shape)
    top = int(markers.max()) if markers.size else 0
    if top > s.classes + 1:
        raise InputError(f"markers: label {top} is not a class of this project (labels are 0 unmarked, 1 background, "
                         f"2..{s.classes + 1} for classes 1..{s.classes})")
    started = time.perf_counter()
    labels = s.live.segment(image_id, markers)
    seconds = time.perf_counter() - started
    return {"image_id": image_id, "shape": list(shape), "encoding": MARKER_ENCODING, "data": encode_labels(labels),
            "counts": {str(c): int((labels == c).sum()) for c in range(s.classes + 1)}, "seconds": seconds}
