"""Models of the project: train (a job), list, metrics, predictions overlaid on any image, mask download."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Depends, Query
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field

from hitlseg.selection.heatmap import png_bytes, take_slice
from hitlseg.server.deps import ServerState, state
from hitlseg.server.imaging import check_view, label_overlay
from hitlseg.server.params import ModelIdPath, axis_query, slice_query
from hitlseg.server.training import (DEFAULT_DECODER, DEFAULT_EPOCHS, DEFAULT_SELF_TRAINING, MAX_EPOCHS, MAX_SELF_TRAINING,
                                     WEB_REFINERS)

RefineQuery = Literal[WEB_REFINERS]

router = APIRouter(prefix="/api/models", tags=["models"])


class TrainRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    kind: Literal["sunet", "adaptive"] = Field(description="sU-Net (frozen FLIM encoder + trained decoder) or "
                                                           "FLIM with an adaptive decoder (no training)")
    epochs: int = Field(DEFAULT_EPOCHS, ge=1, le=MAX_EPOCHS, description="sU-Net training epochs")
    decoder: Literal["auto", "labels", "weights", "mean", "gauss"] = Field(
        DEFAULT_DECODER, description="Adaptive decoder rule (auto: the rule that best labels the marker pixels)")
    self_training: int = Field(DEFAULT_SELF_TRAINING, ge=0, le=MAX_SELF_TRAINING,
                               description="sU-Net: pseudo-label iterations over the unmarked images (0: strokes only)")


def _model_row(record: dict) -> dict:
    return {k: record[k] for k in ("id", "kind", "created_at", "params", "metrics")}


@router.get("", summary="Every model, oldest first")
def list_models(s: ServerState = Depends(state)):
    return {"models": [_model_row(m) for m in s.project.list_models() if m["kind"] != "cam"]}  # cam: /api/weak


@router.post("/train", status_code=202, summary="Train a model on the marked images (a job)",
             responses={400: {"description": "No image has markers, or the marked images together lack background "
                                             "or object strokes; no job is started"}})
def train(body: TrainRequest, s: ServerState = Depends(state)):
    s.models.check_ready("train")  # 400 when the marked images lack background or object strokes; no job
    job = s.jobs.submit(f"train-{body.kind}", lambda progress: s.models.train(body.kind, body.epochs, body.decoder, progress,
                                                                                   body.self_training),
                        body.model_dump(), dedupe=False, summary=lambda r: {"model_id": (r or {}).get("id")})
    return job.to_dict()


@router.get("/{model_id}", summary="One model")
def get_model(model_id: ModelIdPath, s: ServerState = Depends(state)):
    return _model_row(s.models.record(model_id))


def _refine_query():
    return Query(None, description="Refine an sU-Net's prediction (hitlseg.refine, default settings): graph cut, "
                                   "dense CRF or Chan-Vese level sets per object")


@router.get("/{model_id}/metrics", summary="Stored metrics (held-out Dice) and, with ?image_id=, that image's Dice")
def metrics(model_id: ModelIdPath, image_id: str | None = Query(None), refine: RefineQuery | None = _refine_query(),
            s: ServerState = Depends(state)):
    if image_id is not None:
        s.require_image(image_id)
    return s.models.metrics(model_id, image_id, refine)


@router.get("/{model_id}/predictions/{image_id}.png", summary="Prediction overlaid on the image (PNG; 3D: one slice)",
            response_class=Response, responses={200: {"content": {"image/png": {}}}})
def prediction_png(model_id: ModelIdPath, image_id: str, slice: int | None = slice_query(), axis: int = axis_query(),
                   alpha: float = Query(0.45, ge=0.0, le=1.0), refine: RefineQuery | None = _refine_query(),
                   s: ServerState = Depends(state)):
    info = s.require_image(image_id)
    s.models.record(model_id)
    index, axis = check_view(info["ndim"], info["shape"], slice, axis)
    labels = take_slice(s.models.labels(model_id, image_id, refine), index, axis, info["ndim"])
    rgb = s.renderer.view(image_id, index, axis)
    return Response(png_bytes(label_overlay(rgb, labels, alpha)), media_type="image/png",
                    headers={"Cache-Control": "private, max-age=3600"})


@router.get("/{model_id}/predictions/{image_id}/mask", summary="Download the predicted mask in the input's format",
            response_class=Response)
def prediction_mask(model_id: ModelIdPath, image_id: str, s: ServerState = Depends(state)):
    s.require_image(image_id)
    s.models.record(model_id)
    data, name, media = s.models.mask_file(model_id, image_id)
    return Response(data, media_type=media, headers={"Content-Disposition": f'attachment; filename="{name}"'})


@router.get("/{model_id}/predictions/{image_id}/preview.png",
            summary="Download a colour picture of the predicted mask (class colours; 3D: a contact sheet of slices)",
            response_class=Response, responses={200: {"content": {"image/png": {}}}})
def prediction_preview(model_id: ModelIdPath, image_id: str, s: ServerState = Depends(state)):
    s.require_image(image_id)
    s.models.record(model_id)
    data, name = s.models.preview_file(model_id, image_id)
    return Response(data, media_type="image/png", headers={"Content-Disposition": f'attachment; filename="{name}"'})


# ------------------------------------------------------------------------ predicted quality (no ground truth)

quality_router = APIRouter(prefix="/api/quality", tags=["models"])


@quality_router.get("", summary="Whether a quality model is loaded (hitlseg serve --quality-model), and what it knows")
def quality_info(s: ServerState = Depends(state)):
    return s.quality.info()


@router.get("/{model_id}/quality/{image_id}", summary="Predicted quality (Dice, NMI) of the model's segmentation of "
                                                       "one image, by the quality model; no ground truth is read",
            responses={400: {"description": "No quality model, or one for other images or classes"}})
def prediction_quality(model_id: ModelIdPath, image_id: str, s: ServerState = Depends(state)):
    s.require_image(image_id)
    s.models.record(model_id)
    return s.quality.score(model_id, image_id)


@router.post("/{model_id}/quality", status_code=202,
             summary="Rank every image by the predicted quality of the model's segmentation, worst first (a job)",
             responses={400: {"description": "No quality model loaded; no job is started"}})
def rank_quality(model_id: ModelIdPath, s: ServerState = Depends(state)):
    s.models.record(model_id)
    s.quality.require()
    job = s.jobs.submit(f"quality-model-{int(model_id)}", lambda progress: s.quality.ranking(model_id, progress),
                        {"model_id": int(model_id)},
                        summary=lambda r: {"model_id": (r or {}).get("model_id"), "mean_dice": (r or {}).get("mean_dice")})
    return job.to_dict()
