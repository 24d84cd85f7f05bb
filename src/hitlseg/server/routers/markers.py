"""Versioned markers of an image: read (any version), save (refused when based on a stale version), history.

Markers travel as ``{"shape": [...], "encoding": "uint8-zlib-base64", "data": "..."}``: the uint8
label array (0 unmarked, c+1 for class c) zlib-compressed and base64-encoded (see
:mod:`hitlseg.server.imaging`).

A save follows the rule of :func:`hitlseg.project.readiness.check_saveable`: an image without saved
markers takes no empty first version (400 "no strokes to save", nothing written); erasing every
stroke of an image that has markers is a new version; a save identical to the latest version (and
based on it) writes nothing and answers that version with ``"unchanged": true``, so that saving
twice neither grows the history nor makes the selection loop learn the same strokes again. The
answer's ``missing`` says, in words, what the saved strokes still lack for learning (background or
object strokes; None when nothing is, or when the save holds no stroke: an erased image is not
learned from), the rule of :func:`hitlseg.project.readiness.check_learnable`.
"""

from __future__ import annotations

import numpy as np
from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, ConfigDict, Field

from hitlseg.errors import InputError
from hitlseg.project.readiness import check_saveable, problem
from hitlseg.server.deps import ServerState, state
from hitlseg.server.imaging import MARKER_ENCODING, decode_labels, encode_labels
from hitlseg.server.params import MAX_INT
from hitlseg.server.security import NotFoundError

router = APIRouter(prefix="/api/images", tags=["markers"])


class MarkerSave(BaseModel):
    """A marker save: the edited labels and the version they were edited from."""

    model_config = ConfigDict(extra="forbid", strict=True)

    base_version: int = Field(ge=0, le=MAX_INT, description="Version the edit started from (0: the image had none)")
    shape: list[int] = Field(min_length=2, max_length=3, description="Spatial shape of the label array")
    encoding: str = Field(MARKER_ENCODING, description=f"Always {MARKER_ENCODING!r}")
    data: str = Field(min_length=1, description="base64 of the zlib-compressed uint8 labels, C order")
    author: str | None = Field(None, max_length=100, description="Who saved (default 'web')")


def _markers_payload(image_id: str, array, version: int) -> dict:
    return {"image_id": image_id, "version": version, "shape": list(array.shape), "encoding": MARKER_ENCODING,
            "data": encode_labels(array), "n_marked": int((array > 0).sum())}


@router.get("/{image_id}/markers", summary="Markers of an image: the latest version, or ?version=N")
def get_markers(image_id: str, version: int | None = Query(None, ge=0, le=MAX_INT), s: ServerState = Depends(state)):
    s.require_image(image_id)
    if version is not None and version > s.project.latest_version(image_id):
        raise NotFoundError(f"markers of image {image_id!r}: no version {version} "
                            f"(latest is {s.project.latest_version(image_id)})")
    array, got = s.project.load_markers(image_id, version)
    return _markers_payload(image_id, array, got)


@router.put("/{image_id}/markers", summary="Save markers as a new version (409 when base_version is stale)",
            responses={400: {"description": "Among others: an empty save of an image without saved markers "
                                            "(\"no strokes to save\"); nothing is written"}})
def put_markers(image_id: str, body: MarkerSave, s: ServerState = Depends(state)):
    info = s.require_image(image_id)
    if body.encoding != MARKER_ENCODING:
        raise InputError(f"encoding: only {MARKER_ENCODING!r} is accepted, got {body.encoding!r}")
    shape = tuple(info["shape"])
    if tuple(body.shape) != shape:
        raise InputError(f"shape: {tuple(body.shape)} differs from the shape {shape} of image {image_id!r}")
    array = decode_labels(body.data, shape)
    top = int(array.max()) if array.size else 0
    if top > s.classes + 1:
        raise InputError(f"markers: label {top} is not a class of this project (labels are 0 unmarked, 1 background, "
                         f"2..{s.classes + 1} for classes 1..{s.classes})")
    answer = {"image_id": image_id, "n_marked": int((array > 0).sum()),
              "class_counts": {str(c): int((array == c).sum()) for c in range(1, top + 1) if (array == c).any()},
              "missing": problem(array, s.classes, s.class_names) if array.any() else None}
    latest = s.project.latest_version(image_id)
    if not latest:
        check_saveable(array, None, name=f"image {image_id!r}")  # 400 "no strokes to save": nothing is written
    elif body.base_version == latest:
        try:
            stored, _ = s.project.load_markers(image_id, latest)
        except InputError:  # an unreadable latest version: the save replaces it
            stored = None
        if stored is not None and not check_saveable(array, stored):
            return answer | {"version": latest, "unchanged": True}  # the same as the latest version: nothing written
    version = s.project.save_markers(image_id, array, body.base_version, author=body.author or "web")
    return answer | {"version": version, "unchanged": False}


@router.post("/{image_id}/markers/merge",
             summary="Merge an edit refused as stale with the latest version (three-way; writes nothing)")
def merge_markers_route(image_id: str, body: MarkerSave, s: ServerState = Depends(state)):
    """The merge of the person's edit (made from ``base_version``) and the latest saved version: pixels only
    one side changed take that side's value; pixels both changed differently are conflicts, left unmarked
    and returned as a mask. Nothing is stored: the person reviews the merge and saves it on ``version``."""
    from hitlseg.project.merge import merge_markers

    info = s.require_image(image_id)
    shape = tuple(info["shape"])
    if body.encoding != MARKER_ENCODING:
        raise InputError(f"encoding: only {MARKER_ENCODING!r} is accepted, got {body.encoding!r}")
    if tuple(body.shape) != shape:
        raise InputError(f"shape: {tuple(body.shape)} differs from the shape {shape} of image {image_id!r}")
    mine = decode_labels(body.data, shape)
    latest = s.project.latest_version(image_id)
    if body.base_version > latest:
        raise NotFoundError(f"markers of image {image_id!r}: no version {body.base_version} (latest is {latest})")
    theirs, _ = s.project.load_markers(image_id, latest) if latest else (np.zeros(shape, np.uint8), 0)
    base = s.project.load_markers(image_id, body.base_version)[0] if body.base_version else np.zeros(shape, np.uint8)
    result = merge_markers(mine, theirs, base)
    return {"image_id": image_id, "version": latest, "shape": list(shape), "encoding": MARKER_ENCODING,
            "data": encode_labels(result.markers), "n_marked": int((result.markers > 0).sum()),
            "conflicts": encode_labels(result.conflicts.astype(np.uint8)), "n_conflicts": result.n_conflicts,
            "theirs": encode_labels(theirs)}


@router.get("/{image_id}/markers/history", summary="Every saved version of an image's markers, oldest first")
def marker_history(image_id: str, s: ServerState = Depends(state)):
    s.require_image(image_id)
    history = [{k: v for k, v in entry.items() if k != "file"} for entry in s.project.marker_history(image_id)]
    return {"image_id": image_id, "versions": history}
