"""Images of the project, addressed by id only: list, registration, display PNG, thumbnails."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Query
from fastapi.responses import Response

from hitlseg.selection.heatmap import png_bytes, take_slice
from hitlseg.server.deps import ServerState, state
from hitlseg.server.imaging import MARKER_ENCODING, PALETTE, check_view, label_overlay
from hitlseg.server.params import axis_query, slice_query
from hitlseg.server.security import NotFoundError

router = APIRouter(prefix="/api", tags=["images"])

IMAGE_CACHE = {"Cache-Control": "private, max-age=3600"}


@router.get("/project", summary="The project: name, images, classes, colours, options")
def project_info(s: ServerState = Depends(state)):
    infos = s.project.images()
    return {
        "name": s.project.name,
        "created_at": s.project.meta.get("created_at"),
        "images": len(infos),
        "dimensions": sorted({i["ndim"] for i in infos}),
        "channels": sorted({i["channels"] for i in infos}),
        "with_masks": sum(i["has_mask"] for i in infos),
        "classes": s.classes,
        "class_names": ["Background"] + s.class_names,
        "palette": [PALETTE[c % len(PALETTE)] for c in range(s.classes + 1)],
        "marker_encoding": MARKER_ENCODING,
        "max_body": s.max_body,
        "token_required": s.token is not None,
        "selections": len(s.project.selections()),
        "models": len(s.project.list_models()),
        "options": s.options,
    }


@router.get("/images", summary="Every image: shape, ground truth, latest marker version, selection round")
def list_images(s: ServerState = Depends(state)):
    versions = s.project.latest_versions()
    rounds = {row["image_id"]: row["round"] for row in s.project.selections()}
    return {"images": [s.public_info(info) | {"marker_version": versions.get(info["id"], 0),
                                              "selected_round": rounds.get(info["id"])}
                       for info in s.project.images()]}


@router.get("/images/{image_id}", summary="One image's registration")
def get_image(image_id: str, s: ServerState = Depends(state)):
    info = s.require_image(image_id)
    rounds = {row["image_id"]: row["round"] for row in s.project.selections()}
    return s.public_info(info) | {"marker_version": s.project.latest_version(image_id),
                                  "selected_round": rounds.get(image_id)}


@router.get("/images/{image_id}/png", summary="The image as display RGB PNG (3D: one slice)",
            response_class=Response, responses={200: {"content": {"image/png": {}}}})
def image_png(image_id: str, slice: int | None = slice_query(), axis: int = axis_query(),
              s: ServerState = Depends(state)):
    info = s.require_image(image_id)
    index, axis = check_view(info["ndim"], info["shape"], slice, axis)
    return Response(s.renderer.png(image_id, index, axis), media_type="image/png", headers=IMAGE_CACHE)


@router.get("/images/{image_id}/thumbnail", summary="A small PNG of the image (3D: middle slice)",
            response_class=Response, responses={200: {"content": {"image/png": {}}}})
def image_thumbnail(image_id: str, size: int = Query(96, ge=16, le=512), s: ServerState = Depends(state)):
    s.require_image(image_id)
    return Response(s.renderer.thumbnail_png(image_id, size), media_type="image/png", headers=IMAGE_CACHE)


@router.get("/images/{image_id}/truth.png", summary="The ground-truth mask overlaid on the image (PNG; 3D: one slice)",
            response_class=Response, responses={200: {"content": {"image/png": {}}}})
def truth_png(image_id: str, slice: int | None = slice_query(), axis: int = axis_query(),
              alpha: float = Query(0.45, ge=0.0, le=1.0), s: ServerState = Depends(state)):
    info = s.require_image(image_id)
    if not info["has_mask"]:
        raise NotFoundError(f"image {image_id!r} has no ground-truth mask")
    index, axis = check_view(info["ndim"], info["shape"], slice, axis)
    labels = take_slice(s.project.mask(image_id), index, axis, info["ndim"])
    return Response(png_bytes(label_overlay(s.renderer.view(image_id, index, axis), labels, alpha)),
                    media_type="image/png", headers=IMAGE_CACHE)
