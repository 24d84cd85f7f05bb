"""Integer parameters of the API, bounded to what the project's SQLite store can hold.

SQLite integers are signed 64-bit: a larger id reaching a query raises :class:`OverflowError`
(a 500). Every integer the routers take from a path, a query or a JSON body is therefore bounded
here, so an out-of-range number is a 422 ``{"error": ...}`` before any query runs, and an
in-range id the project does not hold stays a 404.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Path, Query

#: Largest integer SQLite stores (and the largest id or version the API accepts).
MAX_INT = 2**63 - 1
MIN_INT = -(2**63)

#: A model id in a path (ids start at 1).
ModelIdPath = Annotated[int, Path(ge=1, le=MAX_INT, description="Model id")]


def slice_query(description: str = "3D: slice index (default: middle)"):
    """The ``?slice=`` query parameter of picture routes (checked against the image by ``check_view``)."""
    return Query(None, ge=MIN_INT, le=MAX_INT, description=description)


def axis_query(description: str = "3D: axis the slice is taken along (0, 1 or 2)"):
    """The ``?axis=`` query parameter of picture routes (checked against the image by ``check_view``)."""
    return Query(0, ge=MIN_INT, le=MAX_INT, description=description)
