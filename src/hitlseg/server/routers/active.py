"""The Improve view: the next image to correct (a job), uncertainty heatmaps, starting from the
prediction, the editor's annotation time, warm-started retraining and retraining from scratch (jobs),
quality per round."""

from __future__ import annotations

from fastapi import APIRouter, Depends
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field

from hitlseg.server.deps import ServerState, state
from hitlseg.server.imaging import check_view
from hitlseg.server.params import MAX_INT, ModelIdPath, axis_query, slice_query

router = APIRouter(prefix="/api/active", tags=["active learning"])


class ProposeRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    model_id: int = Field(ge=1, le=MAX_INT, description="The sU-Net whose predictions are scored")
    strategy: str = Field("entropy", min_length=1, max_length=40, description="Active-learning strategy")
    n: int = Field(1, ge=1, le=20, description="Images to propose")


class AcceptRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    model_id: int = Field(ge=1, le=MAX_INT)
    image_id: str = Field(min_length=1, max_length=500)
    base_version: int = Field(ge=0, le=MAX_INT, description="Marker version the person is looking at (409 when stale)")


class TimeRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    image_id: str = Field(min_length=1, max_length=500)
    version: int = Field(ge=1, le=MAX_INT, description="The marker version the time was spent on")
    seconds: float = Field(gt=0, le=86400, description="Seconds of editing before that save")


class RetrainRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    model_id: int = Field(ge=1, le=MAX_INT, description="The sU-Net to continue (warm start)")
    epochs: int = Field(15, ge=1, le=200)


class FreshRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    model_id: int = Field(ge=1, le=MAX_INT, description="The sU-Net whose round's labels are learned again")
    epochs: int = Field(50, ge=1, le=200, description="Epochs on the strokes")
    self_training: int = Field(5, ge=0, le=10, description="Self-training iterations over the unmarked images")


@router.get("", summary="Rounds (quality per model), the person's effort so far, the last proposal, a running job")
def get_active(s: ServerState = Depends(state)):
    data = s.improve.summary()
    job = s.jobs.active("propose") or s.jobs.active("retrain")
    data["job"] = job.to_dict(result=False) if job is not None else None
    return data


@router.post("/propose", status_code=202, summary="Score the pool and propose the next image(s) to correct (a job)")
def propose(body: ProposeRequest, s: ServerState = Depends(state)):
    s.improve.segmodel(body.model_id)  # 404 / clear error before queueing
    job = s.jobs.submit("propose", lambda progress: s.improve.propose(body.model_id, body.strategy, body.n, progress),
                        body.model_dump(), dedupe=False)
    return job.to_dict()


@router.get("/uncertainty/{model_id}/{image_id}.png", summary="Pixel entropy of a model's prediction (PNG; 3D: one slice)",
            response_class=Response, responses={200: {"content": {"image/png": {}}}})
def uncertainty(model_id: ModelIdPath, image_id: str, slice: int | None = slice_query(), axis: int = axis_query(),
                s: ServerState = Depends(state)):
    from hitlseg.active import uncertainty_map
    from hitlseg.selection.heatmap import overlay, png_bytes

    info = s.require_image(image_id)
    index, axis = check_view(info["ndim"], info["shape"], slice, axis)
    model = s.improve.segmodel(model_id)
    image = s.project.image(image_id)
    heat = overlay(image, uncertainty_map(model, image), alpha=0.55, slice_index=index, axis=axis)
    return Response(png_bytes(heat), media_type="image/png",
                    headers={"Cache-Control": "private, max-age=3600"})


@router.post("/accept", summary="Start from the prediction: its confident pixels become markers under the person's strokes")
def accept(body: AcceptRequest, s: ServerState = Depends(state)):
    s.require_image(body.image_id)
    return s.improve.accept(body.model_id, body.image_id, body.base_version)


@router.post("/review", summary="Review with a graph cut: the model's probabilities cut with the image's strokes "
                               "become its accepted mask")
def review(body: AcceptRequest, s: ServerState = Depends(state)):
    s.require_image(body.image_id)
    return s.improve.review(body.model_id, body.image_id, body.base_version)


@router.get("/accepted/{image_id}.png", summary="The accepted mask of an image's current markers overlaid on it (PNG; "
            "3D: one slice)", response_class=Response, responses={200: {"content": {"image/png": {}}}})
def accepted_png(image_id: str, slice: int | None = slice_query(), axis: int = axis_query(),
                 s: ServerState = Depends(state)):
    from hitlseg.selection.heatmap import png_bytes, take_slice
    from hitlseg.server.imaging import label_overlay

    info = s.require_image(image_id)
    index, axis = check_view(info["ndim"], info["shape"], slice, axis)
    labels = take_slice(s.improve.accepted_mask(image_id), index, axis, info["ndim"])
    rgb = s.renderer.view(image_id, index, axis)
    return Response(png_bytes(label_overlay(rgb, labels, 0.45)), media_type="image/png",
                    headers={"Cache-Control": "no-store"})


@router.post("/time", summary="Seconds the person spent editing an image before a save (the effort record)")
def record_time(body: TimeRequest, s: ServerState = Depends(state)):
    s.require_image(body.image_id)
    s.improve.record_time(body.image_id, body.version, body.seconds)
    return {"image_id": body.image_id, "version": body.version, "seconds": body.seconds}


@router.post("/retrain", status_code=202, summary="Continue a model on every marked image (warm start; a job)")
def retrain(body: RetrainRequest, s: ServerState = Depends(state)):
    s.improve.check_retrain(body.model_id)  # 404 / 400 (e.g. an image without object strokes) before any job
    job = s.jobs.submit("retrain", lambda progress: s.improve.retrain(body.model_id, body.epochs, progress),
                        body.model_dump(), dedupe=False, summary=lambda r: {"model_id": (r or {}).get("id")})
    return job.to_dict()


@router.post("/fresh", status_code=202, summary="Retrain from scratch on every label: new filters, the study loop's "
                                                "refresh recipe (a job)")
def retrain_fresh(body: FreshRequest, s: ServerState = Depends(state)):
    s.improve.check_retrain(body.model_id)
    job = s.jobs.submit("retrain", lambda progress: s.improve.retrain_fresh(body.model_id, body.epochs,
                                                                            body.self_training, progress),
                        body.model_dump(), dedupe=False, summary=lambda r: {"model_id": (r or {}).get("id")})
    return job.to_dict()
