"""The selection loop: state (projection, recommendations, stopping signal per round), learning
filters (a background job), heatmaps of filter attention, choosing the next image."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Query
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field

from hitlseg.server.deps import ServerState, state
from hitlseg.server.imaging import check_view
from hitlseg.server.params import axis_query, slice_query

router = APIRouter(prefix="/api/selection", tags=["selection"])


class SelectRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    image_id: str = Field(min_length=1, max_length=500)
    source: str = Field("person", min_length=1, max_length=100, description="Who chose it (person or policy)")


@router.get("", summary="The loop's state: rounds with stopping signal, last projection and recommendations")
def get_selection(s: ServerState = Depends(state)):
    data = s.loop.summary()
    job = s.jobs.active("learn")
    data["job"] = job.to_dict(result=False) if job is not None else None
    return data


@router.post("/learn", status_code=202, summary="Learn filters from newly saved markers (a job) and recommend",
             responses={400: {"description": "No image has markers, or a newly marked image lacks background or "
                                             "object strokes (named in the message); no job is started"}})
def learn(s: ServerState = Depends(state)):
    s.loop.check_pending()  # 400 naming each image without background or object strokes; no job
    job = s.jobs.submit("learn", s.loop.learn, {"pending": s.loop.pending()},
                        summary=lambda r: {"rounds": (r or {}).get("rounds", [])})
    return job.to_dict()


@router.get("/heatmap/{image_id}.png", summary="Where the current filters fire on an image (PNG; 3D: one slice)",
            response_class=Response, responses={200: {"content": {"image/png": {}}}})
def heatmap(image_id: str, slice: int | None = slice_query(), axis: int = axis_query(),
            s: ServerState = Depends(state)):
    info = s.require_image(image_id)
    index, axis = check_view(info["ndim"], info["shape"], slice, axis)
    return Response(s.loop.heatmap(image_id, index, axis), media_type="image/png",
                    headers={"Cache-Control": "no-cache"})


@router.get("/similar/{image_id}", summary="The pool images most similar to an image, by the current filters' "
            "descriptor (nearest first, with distances)",
            responses={404: {"description": "Unknown image, no filters learned yet, or an unreadable image"}})
def similar(image_id: str, k: int = Query(6, ge=1, le=50, description="how many images"),
            s: ServerState = Depends(state)):
    s.require_image(image_id)
    return s.loop.similar(image_id, k)


@router.post("/select", summary="Choose an image for marking (recorded as the next selection round; idempotent)")
def select(body: SelectRequest, s: ServerState = Depends(state)):
    s.require_image(body.image_id)
    round_, already = s.loop.select(body.image_id, body.source)
    return {"image_id": body.image_id, "round": round_, "already_selected": already}
