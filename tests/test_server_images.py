"""Server: the images router (project, list, display PNG, thumbnails), the page and its assets, OpenAPI."""

from __future__ import annotations

import io
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from hitlseg.selection.heatmap import display_rgb
from hitlseg.server import create_app
from hitlseg.server.app import STATIC, plotly_path
from hitlseg.server.testing import client
from tests.helpers import write_nifti

PROJECT_IMAGES = 6


def _png(response) -> np.ndarray:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/png"
    return np.asarray(Image.open(io.BytesIO(response.content)))


def test_project_summary(http, project):
    data = http.get("/api/project").json()
    assert data["images"] == 6 and data["dimensions"] == [2] and data["channels"] == [3]
    assert data["with_masks"] == 6
    assert data["classes"] == 2  # detected from the WBC masks (cytoplasm, nucleus)
    assert data["class_names"] == ["Background", "Class 1", "Class 2"]
    assert len(data["palette"]) == 3 and all(re.fullmatch(r"#[0-9a-f]{6}", c) for c in data["palette"])
    assert data["marker_encoding"] == "uint8-zlib-base64"
    assert data["token_required"] is False


def test_list_images_by_id_without_paths(http, project):
    images = http.get("/api/images").json()["images"]
    assert [i["id"] for i in images] == project.image_ids()
    first = images[0]
    assert first["shape"] == list(project.image_info(first["id"])["shape"])
    assert first["has_mask"] is True and first["marker_version"] == 0 and first["selected_round"] is None
    assert str(project.root) not in http.get("/api/images").text  # no file path leaves the server
    assert "paths" not in first and "mask_path" not in first
    one = http.get(f"/api/images/{first['id']}").json()
    assert one["id"] == first["id"] and one["marker_version"] == 0


def test_image_png_is_the_display_rgb(http, project):
    image_id = project.image_ids()[2]
    shown = _png(http.get(f"/api/images/{image_id}/png"))
    expected = np.round(display_rgb(project.image(image_id)) * 255).astype(np.uint8)
    assert shown.shape == expected.shape
    assert np.abs(shown.astype(int) - expected).max() <= 1


def test_ground_truth_overlay(http, project):
    image_id = project.image_ids()[1]
    overlay = _png(http.get(f"/api/images/{image_id}/truth.png"))
    plain = _png(http.get(f"/api/images/{image_id}/png"))
    changed = np.any(overlay != plain, axis=-1)
    mask = project.mask(image_id)
    assert changed[mask > 0].mean() > 0.95 and not changed[mask == 0].any()


def test_thumbnail_fits_the_size(http, project):
    image_id = project.image_ids()[0]
    small = _png(http.get(f"/api/images/{image_id}/thumbnail", params={"size": 40}))
    assert max(small.shape[:2]) == 40 and small.shape[2] == 3
    assert http.get(f"/api/images/{image_id}/thumbnail", params={"size": 5}).status_code == 422


@pytest.mark.parametrize("path", ["/api/images/nope", "/api/images/nope/png", "/api/images/nope/thumbnail",
                                  "/api/images/..%2F..%2Fetc%2Fpasswd/png", "/api/images/nope/markers"])
def test_unknown_image_is_a_json_404(http, path):
    response = http.get(path)
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/json"
    assert "error" in response.json()


def test_unknown_routes_and_methods_answer_json(http):
    missing = http.get("/api/nothing-here")
    assert missing.status_code == 404 and "error" in missing.json()
    wrong = http.delete("/api/images")
    assert wrong.status_code == 405 and "error" in wrong.json()


def test_volume_slices(tmp_path):
    from hitlseg.project import Project

    rng = np.random.default_rng(0)
    volume = rng.integers(0, 1000, (6, 10, 14)).astype(np.int16)
    write_nifti(tmp_path / "data" / "case1" / "flair.nii.gz", volume)
    write_nifti(tmp_path / "data" / "case2" / "flair.nii.gz", volume[::-1].copy())
    with Project.init(tmp_path / "project", dataset=tmp_path / "data") as project:
        with client(create_app(project, prepare=False)) as http:
            image_id = project.image_ids()[0]
            assert http.get("/api/images").json()["images"][0]["shape"] == [6, 10, 14]
            assert _png(http.get(f"/api/images/{image_id}/png")).shape == (10, 14, 3)  # middle axial slice
            assert _png(http.get(f"/api/images/{image_id}/png", params={"slice": 3, "axis": 1})).shape == (6, 14, 3)
            assert _png(http.get(f"/api/images/{image_id}/png", params={"slice": 0, "axis": 2})).shape == (6, 10, 3)
            out = http.get(f"/api/images/{image_id}/png", params={"slice": 6, "axis": 0})
            assert out.status_code == 400 and "out of range" in out.json()["error"]
            assert http.get(f"/api/images/{image_id}/png", params={"axis": 3}).status_code == 400
            assert _png(http.get(f"/api/images/{image_id}/thumbnail")).shape[:2] == (10, 14)  # never enlarged
            missing = http.get(f"/api/images/{image_id}/truth.png")
            assert missing.status_code == 404 and "no ground-truth mask" in missing.json()["error"]


def test_page_and_assets_need_no_cdn(http):
    page = http.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    for element in ("projection-plot", "editor-canvas", "closest-list", "distant-list", "heatmap-img", "save-markers",
                    "learn-filters", "train-btn", "prediction-img", "slice-slider", "stopping-table"):
        assert f'id="{element}"' in page.text
    scripts = re.findall(r'<script[^>]*src="([^"]+)"', page.text)
    assert scripts == ["/static/vendor/plotly.min.js", "/static/js/main.js"]  # main.js imports the other modules
    for path in (STATIC / "index.html", STATIC / "style.css", *sorted((STATIC / "js").glob("*.js"))):
        text = path.read_text()
        assert not re.search(r"https?://", text.replace("http://www.w3.org", "")), path.name  # nothing fetched from elsewhere
    plotly = http.get("/static/vendor/plotly.min.js")
    assert plotly.status_code == 200 and "javascript" in plotly.headers["content-type"]
    assert plotly.content == Path(plotly_path()).read_bytes()  # the copy shipped in the plotly package
    main = http.get("/static/js/main.js")
    assert main.status_code == 200 and "javascript" in main.headers["content-type"]
    assert http.get("/static/missing.js").status_code == 404


def test_openapi_lists_every_router(http):
    schema = http.get("/openapi.json").json()
    paths = set(schema["paths"])
    for path in ("/api/images", "/api/images/{image_id}/png", "/api/images/{image_id}/markers",
                 "/api/images/{image_id}/markers/history", "/api/selection", "/api/selection/learn",
                 "/api/selection/heatmap/{image_id}.png", "/api/selection/select", "/api/models", "/api/models/train",
                 "/api/models/{model_id}/predictions/{image_id}.png", "/api/models/{model_id}/predictions/{image_id}/mask",
                 "/api/models/{model_id}/metrics", "/api/jobs", "/api/jobs/{job_id}", "/api/active", "/api/active/propose",
                 "/api/active/uncertainty/{model_id}/{image_id}.png", "/api/active/accept", "/api/active/time",
                 "/api/active/retrain", "/api/active/fresh", "/api/images/{image_id}/live", "/api/weak", "/api/weak/labels/{image_id}",
                 "/api/weak/train", "/api/weak/classify/{image_id}", "/api/weak/cam/{image_id}.png"):
        assert path in paths, path
    assert {tag for item in schema["paths"].values() for op in item.values() for tag in op.get("tags", [])} == {
        "images", "markers", "live segmentation", "selection", "models", "active learning", "jobs",
        "weak supervision"}
    docs = http.get("/docs")
    assert docs.status_code == 200 and "cdn" not in docs.text  # Swagger UI from the installed package
    assert http.get("/static/vendor/swagger/swagger-ui-bundle.js").status_code == 200
    assert http.get("/static/vendor/swagger/swagger-ui.css").status_code == 200
    assert http.get("/static/vendor/swagger/..%2Fsecret").status_code == 404
