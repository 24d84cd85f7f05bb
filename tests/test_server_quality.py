"""Server: predicted quality of a model's segmentations (issue 16.6) — one image's score, the ranking
of all images worst first (a job), and the clear errors without a quality model or with a wrong one."""

from __future__ import annotations

import numpy as np
import pytest

from hitlseg.errors import InputError
from hitlseg.project import Project
from hitlseg.quality import QualityModel, train_quality
from hitlseg.server import create_app
from hitlseg.server.testing import client, marked_demo_project, wait_job

N = 6


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return marked_demo_project(tmp_path_factory.mktemp("quality") / "project", n=N)


@pytest.fixture(scope="module")
def quality_file(root, tmp_path_factory):
    """A small quality model trained on the demo project's own masks (read as the project reads images)."""
    with Project.open(root) as project:
        ids = project.image_ids()
        images = [project.image(i) for i in ids]
        masks = [project.mask(i) for i in ids]
    model = train_quality(images, masks, epochs=2, samples_per_image=3, size=32, seed=0)
    return model.save(tmp_path_factory.mktemp("qmodel") / "quality.pt")


@pytest.fixture(scope="module")
def served(root, quality_file):
    """The app with the quality model, and the id of an adaptive model trained through the API."""
    with Project.open(root) as project, client(create_app(project, eval_limit=2, prepare=False,
                                                          quality_model=quality_file)) as http:
        job = http.post("/api/models/train", json={"kind": "adaptive"}).json()
        done = wait_job(http, job["id"], timeout=120)
        assert done["state"] == "done", done["error"]
        yield http, done["result"]["id"]


def test_one_prediction_is_scored_like_the_library_does(served, root, quality_file):
    http, model_id = served
    assert http.get("/api/quality").json()["available"] is True
    image_id = http.get("/api/images").json()["images"][0]["id"]
    response = http.get(f"/api/models/{model_id}/quality/{image_id}")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["image_id"] == image_id and 0 <= body["dice"] <= 1 and "nmi" in body
    # the same figure as the library's, on the same prediction
    from hitlseg.flim import FLIMModel

    with Project.open(root) as project:
        model_path = project.model_path(model_id)
        image = project.image(image_id)
    labels = FLIMModel.load(model_path).predict(image).mask
    expected = QualityModel.load(quality_file).score(image, labels, image_id)
    assert body["dice"] == pytest.approx(expected["dice"], abs=1e-4)


def test_ranking_is_a_job_and_puts_the_worst_first(served):
    http, model_id = served
    job = http.post(f"/api/models/{model_id}/quality")
    assert job.status_code == 202, job.text
    done = wait_job(http, job.json()["id"], timeout=120)
    assert done["state"] == "done", done["error"]
    ranking = done["result"]["ranking"]
    assert len(ranking) == N and [r["dice"] for r in ranking] == sorted(r["dice"] for r in ranking)
    first = ranking[0]
    again = http.get(f"/api/models/{model_id}/quality/{first['image_id']}").json()
    assert again["dice"] == first["dice"]  # the job filled the same cache the per-image route reads


def test_unknown_ids_are_404(served):
    http, model_id = served
    assert http.get(f"/api/models/{model_id}/quality/no-such-image").status_code == 404
    assert http.get("/api/models/9999/quality/whatever").status_code == 404
    assert http.post("/api/models/9999/quality").status_code == 404


def test_without_a_quality_model_the_app_says_how_to_get_one(root):
    with Project.open(root) as project, client(create_app(project, prepare=False)) as http:
        info = http.get("/api/quality").json()
        assert info["available"] is False and "--quality-model" in info["reason"]
        model_id = http.get("/api/models").json()["models"][0]["id"]
        image_id = http.get("/api/images").json()["images"][0]["id"]
        response = http.get(f"/api/models/{model_id}/quality/{image_id}")
        assert response.status_code == 400 and "hitlseg quality train" in response.text
        assert http.post(f"/api/models/{model_id}/quality").status_code == 400


def test_a_quality_model_for_other_images_is_refused_at_start(root, tmp_path):
    rng = np.random.default_rng(0)
    images = [rng.random((3, 32, 32)).astype(np.float32) for _ in range(2)]
    masks = [(rng.random((32, 32)) > 0.5).astype(np.uint8) for _ in range(2)]
    rgb = train_quality(images, masks, epochs=1, samples_per_image=2, size=16,
                        preprocessing={"color": "rgb", "normalize": "none"}).save(tmp_path / "rgb.pt")
    with Project.open(root) as project:
        with pytest.raises(InputError, match="read with"):
            create_app(project, prepare=False, quality_model=rgb)
        with pytest.raises(InputError, match="not a file"):
            create_app(project, prepare=False, quality_model=tmp_path / "missing.pt")
