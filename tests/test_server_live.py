"""Server: live graph-cut segmentation of the marker editor (POST /api/images/{id}/live)."""

from __future__ import annotations

import numpy as np
import pytest

from hitlseg.project import Project
from hitlseg.robot import Robot
from hitlseg.server import create_app
from hitlseg.server.imaging import decode_labels
from hitlseg.server.testing import client, demo_project, marker_body


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("live") / "project"
    demo_project(root, n=3).close()
    with Project.open(root) as project, client(create_app(project, prepare=False)) as http:
        yield project, http


def _body(markers):
    body = marker_body(markers, 0)
    del body["base_version"]
    return body


def test_live_segmentation_follows_the_strokes_and_stores_nothing(setup):
    project, http = setup
    image_id = project.image_ids()[0]
    mask = project.mask(image_id)
    strokes = Robot(0).mark(mask, key=image_id)
    r = http.post(f"/api/images/{image_id}/live", json=_body(strokes))
    assert r.status_code == 200, r.text
    answer = r.json()
    labels = decode_labels(answer["data"], tuple(answer["shape"]))
    assert labels.shape == mask.shape and labels.max() <= 2
    marked = strokes > 0
    assert np.array_equal(labels[marked], strokes[marked] - 1)  # strokes are hard constraints
    assert sum(answer["counts"].values()) == mask.size and answer["seconds"] > 0
    from hitlseg.refine import LiveGraphCut

    assert np.array_equal(labels, LiveGraphCut(project.image(image_id)).segment(strokes, n_labels=3))
    assert project.latest_version(image_id) == 0  # nothing saved
    again = http.post(f"/api/images/{image_id}/live", json=_body(strokes)).json()  # the cached graph: same answer
    assert again["data"] == answer["data"]


@pytest.mark.parametrize("case,status,message", [
    ("one class", 400, "two classes"),
    ("no strokes", 400, "two classes"),
    ("wrong shape", 400, "differs from the shape"),
    ("label beyond the classes", 400, "not a class of this project"),
    ("unknown image", 404, "not found"),
])
def test_live_segmentation_errors(setup, case, status, message):
    project, http = setup
    image_id = project.image_ids()[1]
    shape = project.mask(image_id).shape
    markers = np.zeros(shape, np.uint8)
    if case == "one class":
        markers[5:10, 5:10] = 1
    elif case == "wrong shape":
        markers = np.zeros((shape[0] + 1, shape[1]), np.uint8)
    elif case == "label beyond the classes":
        markers[5:10, 5:10] = 9
    target = "nope" if case == "unknown image" else image_id
    r = http.post(f"/api/images/{target}/live", json=_body(markers))
    assert r.status_code == status and message in r.json()["error"], r.text
