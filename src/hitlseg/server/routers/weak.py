"""Image-level labels and class activation maps: labels per image, a CAM classifier (a job), CAM heatmaps."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Depends, Query
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field

from hitlseg.server.deps import ServerState, state
from hitlseg.server.imaging import check_view
from hitlseg.server.params import axis_query, slice_query
from hitlseg.server.weak import DEFAULT_EPOCHS, MAX_EPOCHS

router = APIRouter(prefix="/api/weak", tags=["weak supervision"])


class LabelRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    label: str | None = Field(max_length=200, description="The image's class name; null removes its label")
    author: str | None = Field(None, max_length=100)


class TrainRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    epochs: int = Field(DEFAULT_EPOCHS, ge=1, le=MAX_EPOCHS, description="Classifier training epochs")


@router.get("", summary="Image classes with counts, every image's label, the latest classifier, a running job")
def get_weak(s: ServerState = Depends(state)):
    data = s.weak.summary()
    job = s.jobs.active("train-cam")
    data["job"] = job.to_dict(result=False) if job is not None else None
    return data


@router.put("/labels/{image_id}", summary="Give an image its class (recorded as an event; null removes it)")
def put_label(image_id: str, body: LabelRequest, s: ServerState = Depends(state)):
    s.require_image(image_id)
    return s.weak.set_label(image_id, body.label, body.author)


@router.post("/train", status_code=202, summary="Train a CAM classifier on the labelled images (a job)",
             responses={400: {"description": "The labelled images do not make two classes; no job is started"}})
def train(body: TrainRequest, s: ServerState = Depends(state)):
    s.weak.check_train()
    job = s.jobs.submit("train-cam", lambda progress: s.weak.train(body.epochs, progress), body.model_dump(),
                        dedupe=False, summary=lambda r: {"model_id": (r or {}).get("id")})
    return job.to_dict()


@router.get("/classify/{image_id}", summary="The latest classifier's class probabilities of an image")
def classify(image_id: str, s: ServerState = Depends(state)):
    s.require_image(image_id)
    return s.weak.classify(image_id)


@router.get("/cam/{image_id}.png", summary="Class activation map over an image (PNG; 3D: one slice)",
            response_class=Response, responses={200: {"content": {"image/png": {}}}})
def cam(image_id: str, target: str | None = Query(None, max_length=200, alias="class",
                                                  description="class whose map to draw (default: the predicted one)"),
        method: Literal["cam", "gradcam", "gradcam++"] = "cam", slice: int | None = slice_query(),
        axis: int = axis_query(), s: ServerState = Depends(state)):
    info = s.require_image(image_id)
    index, axis = check_view(info["ndim"], info["shape"], slice, axis)
    return Response(s.weak.cam_png(image_id, target, index, axis, method), media_type="image/png",
                    headers={"Cache-Control": "no-cache"})
