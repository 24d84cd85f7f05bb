"""Server: the selection router — learning filters as a job, projection, recommendations, stopping
signal, heatmaps, choosing the next image, and a loop that survives a restart."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from hitlseg.errors import InputError
from hitlseg.project import Project
from hitlseg.robot import Robot
from hitlseg.server import create_app
from hitlseg.server.testing import client, demo_project, marker_body, wait_job

N = 10


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    """A 10-image demo project; two images marked by the robot and learned (module-wide, built once)."""
    folder = tmp_path_factory.mktemp("selection") / "project"
    demo_project(folder, n=N).close()
    return folder


@pytest.fixture(scope="module")
def http(root):
    with Project.open(root) as project, client(create_app(project)) as c:
        yield c


def mark(http, project, image_id, seed=0):
    markers = Robot(seed).mark(project.mask(image_id), key=image_id)
    version = project.latest_version(image_id)
    response = http.put(f"/api/images/{image_id}/markers", json=marker_body(markers, version))
    assert response.status_code == 200, response.text
    return markers


def learn(http):
    job = http.post("/api/selection/learn")
    assert job.status_code == 202, job.text
    assert job.json()["kind"] == "learn"
    return wait_job(http, job.json()["id"], timeout=120)


def test_before_any_marker(tmp_path):
    with demo_project(tmp_path / "p", n=4) as project, client(create_app(project)) as http:
        state = http.get("/api/selection").json()
        assert state["rounds"] == [] and state["current"] is None and state["selected"] == []
        assert state["proposal"] in project.image_ids()  # the first image to mark
        refused = http.post("/api/selection/learn")
        assert refused.status_code == 400 and "no image has markers" in refused.json()["error"]
        heat = http.get(f"/api/selection/heatmap/{project.image_ids()[0]}.png")
        assert heat.status_code == 404 and "no filters yet" in heat.json()["error"]
        similar = http.get(f"/api/selection/similar/{project.image_ids()[0]}")
        assert similar.status_code == 404 and "no filters yet" in similar.json()["error"]


def test_learn_gives_projection_recommendations_and_stopping(http, root):
    project = Project.open(root)
    ids = project.image_ids()
    first, second = ids[3], ids[7]
    mark(http, project, first)
    pending = http.get("/api/selection").json()
    assert pending["pending"] == [first] and pending["marked"] == {first: 1} and pending["learned"] == {}

    job = learn(http)
    assert job["state"] == "done", job["error"]
    assert job["result"]["rounds"] == [{"image_id": first, "version": 1, "round": 1}]
    mark(http, project, second, seed=1)
    assert learn(http)["state"] == "done"

    state = http.get("/api/selection").json()
    assert [r["round"] for r in state["rounds"]] == [1, 2]
    assert [r["image_id"] for r in state["rounds"]] == [first, second]
    assert state["pending"] == [] and state["learned"] == {first: 1, second: 1}
    assert [s["image_id"] for s in state["selected"]] == [first, second]  # marked images count as selected
    current = state["current"]
    assert current["round"] == 2 and current["selected"] == [first, second]
    assert set(current["projection"]["coords"]) == set(ids)
    assert all(len(xy) == 2 and all(np.isfinite(xy)) for xy in current["projection"]["coords"].values())
    rec = current["recommendation"]
    closest = [r["id"] for r in rec["closest"]]
    distant = [r["id"] for r in rec["most_distant"]]
    assert len(closest) == 5 and len(distant) == 5
    assert not ({first, second} & (set(closest) | set(distant)))
    assert [r["distance"] for r in rec["closest"]] == sorted(r["distance"] for r in rec["closest"])
    assert [r["distance"] for r in rec["most_distant"]] == sorted((r["distance"] for r in rec["most_distant"]), reverse=True)
    for round_ in state["rounds"]:
        assert {"radius", "normalized_radius", "relative_change", "stop", "reason"} <= set(round_["stopping"])
    assert state["rounds"][0]["stopping"]["relative_change"] is None
    assert state["rounds"][1]["stopping"]["relative_change"] is not None
    # superpixels were computed once, into the project's array store
    assert len(project.array_keys("superpixels")) == N
    runs = project.runs(kind="server:learn")
    assert [r["status"] for r in runs] == ["done", "done"]

    again = learn(http)  # nothing new: no round
    assert again["state"] == "done" and again["result"]["rounds"] == []
    assert len(http.get("/api/selection").json()["rounds"]) == 2


def test_heatmap_png(http, root):
    project = Project.open(root)
    image_id = project.image_ids()[0]
    response = http.get(f"/api/selection/heatmap/{image_id}.png")
    assert response.status_code == 200 and response.headers["content-type"] == "image/png"
    picture = np.asarray(Image.open(io.BytesIO(response.content)))
    assert picture.shape == tuple(project.image_info(image_id)["shape"]) + (3,)
    assert picture.std() > 0
    assert http.get("/api/selection/heatmap/nope.png").status_code == 404


def test_similar_images_are_the_nearest_by_the_current_descriptor(http, root):
    """Issue 16.6: the "similar images" strip: nearest first by the last round's descriptors, itself left out."""
    ids = Project.open(root).image_ids()
    query = ids[5]
    answer = http.get(f"/api/selection/similar/{query}", params={"k": 4})
    assert answer.status_code == 200, answer.text
    data = answer.json()
    assert data["image_id"] == query and data["round"] == 2 and data["descriptor"] == "gtfree"
    session = http.app.state.hitlseg.loop.session
    x = session.descriptors
    distance = np.linalg.norm(x - x[session.ids.index(query)], axis=1)
    expected = [session.ids[i] for i in np.argsort(distance, kind="stable") if session.ids[i] != query][:4]
    assert [hit["id"] for hit in data["similar"]] == expected and [hit["rank"] for hit in data["similar"]] == [1, 2, 3, 4]
    np.testing.assert_allclose([hit["distance"] for hit in data["similar"]],
                               np.sort(distance[[session.ids.index(i) for i in expected]]), rtol=1e-4)
    assert len(http.get(f"/api/selection/similar/{query}", params={"k": 50}).json()["similar"]) == N - 1
    assert http.get("/api/selection/similar/nope").status_code == 404
    assert http.get(f"/api/selection/similar/{query}", params={"k": 0}).status_code == 422


def test_select_the_next_image(http, root):
    project = Project.open(root)
    state = http.get("/api/selection").json()
    chosen = state["current"]["recommendation"]["most_distant"][0]["id"]
    response = http.post("/api/selection/select", json={"image_id": chosen})
    assert response.status_code == 200
    assert response.json() == {"image_id": chosen, "round": 3, "already_selected": False}
    assert http.post("/api/selection/select", json={"image_id": chosen}).json()["already_selected"] is True
    assert project.selections()[-1] == {**project.selections()[-1], "image_id": chosen, "source": "person"}
    images = {i["id"]: i for i in http.get("/api/images").json()["images"]}
    assert images[chosen]["selected_round"] == 3
    assert http.post("/api/selection/select", json={"image_id": "nope"}).status_code == 404
    assert http.post("/api/selection/select", json={"image": chosen}).status_code == 422
    assert http.post("/api/selection/select", json={"image_id": 5}).status_code == 422

    mark(http, project, chosen, seed=2)
    assert http.get("/api/selection").json()["pending"] == [chosen]
    assert learn(http)["state"] == "done"
    state = http.get("/api/selection").json()
    assert state["current"]["round"] == 3 and state["current"]["image_id"] == chosen


def test_new_strokes_on_a_learned_image_make_a_new_round(http, root):
    project = Project.open(root)
    first = http.get("/api/selection").json()["rounds"][0]["image_id"]
    markers, version = project.load_markers(first)
    markers = markers.copy()
    markers[0, :10] = 1
    assert http.put(f"/api/images/{first}/markers", json=marker_body(markers, version)).status_code == 200
    assert http.get("/api/selection").json()["pending"] == [first]
    learn(http)
    state = http.get("/api/selection").json()
    assert state["rounds"][-1]["image_id"] == first and state["rounds"][-1]["version"] == version + 1
    assert state["current"]["selected"].count(first) == 1


def test_the_loop_survives_a_restart(http, root):
    before = http.get("/api/selection").json()
    image_id = before["current"]["recommendation"]["closest"][0]["id"]
    heat_before = http.get(f"/api/selection/heatmap/{image_id}.png").content
    with Project.open(root) as project, client(create_app(project)) as fresh:
        after = fresh.get("/api/selection").json()  # answered from the project's log, at once
        assert after["current"] == before["current"] and after["rounds"] == before["rounds"]
        jobs = fresh.get("/api/jobs").json()["jobs"]
        assert [j["kind"] for j in jobs] == ["prepare"]  # the session is rebuilt in the background
        assert wait_job(fresh, jobs[0]["id"])["state"] == "done"
        assert fresh.get("/api/selection").json()["session_ready"] is True
        # replaying the logged rounds with the same marker versions gives the same filters
        assert fresh.get(f"/api/selection/heatmap/{image_id}.png").content == heat_before


def one_kind(project, image_id, keep: str) -> np.ndarray:
    """The robot's markers of ``image_id`` with only its background (``keep="background"``) or object strokes."""
    markers = Robot(0).mark(project.mask(image_id), key=image_id)
    return np.where(markers == 1, markers, 0) if keep == "background" else np.where(markers >= 2, markers, 0)


def test_learning_refuses_an_image_with_one_kind_of_strokes(tmp_path):
    with demo_project(tmp_path / "p", n=4) as project, client(create_app(project, prepare=False)) as http:
        complete, background, objects = project.image_ids()[:3]
        for image_id, markers in ((complete, Robot(0).mark(project.mask(complete), key=complete)),
                                  (background, one_kind(project, background, "background")),
                                  (objects, one_kind(project, objects, "objects"))):
            assert http.put(f"/api/images/{image_id}/markers", json=marker_body(markers, 0)).status_code == 200
        refused = http.post("/api/selection/learn")
        assert refused.status_code == 400, refused.text
        error = refused.json()["error"]
        assert error.startswith("learn filters: ")
        assert f"image {background!r}: only background strokes; mark at least one object class" in error
        assert f"image {objects!r}: only strokes of class" in error and "mark the background too" in error
        assert repr(complete) not in error
        assert http.get("/api/jobs").json()["jobs"] == [] and project.runs(kind="server:learn") == []
        # the job checks too (a save may come between the request and the job)
        with pytest.raises(InputError, match="only background strokes"):
            http.app.state.hitlseg.loop.learn()
        assert http.get("/api/selection").json()["rounds"] == []
