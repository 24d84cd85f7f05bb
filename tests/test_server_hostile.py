"""Server under hostile or unlucky conditions: out-of-range ids, concurrent selects, a full disk,
cross-site requests, malformed Host and Content-Length headers, corrupt image files."""

from __future__ import annotations

import errno
import sqlite3
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from hitlseg.project import Project
from hitlseg.robot import Robot
from hitlseg.server import create_app
from hitlseg.server import security
from hitlseg.server.testing import client, demo_project, marker_body, markers_of, wait_job

PROJECT_IMAGES = 4
TOO_BIG = 2**63  # one past SQLite's largest integer
TOO_SMALL = -(2**63) - 1


def robot_markers(project, image_id, seed=0):
    return Robot(seed).mark(project.mask(image_id), key=image_id)


def assert_json_error(response, *statuses):
    assert response.status_code in statuses, (response.status_code, response.text)
    assert response.headers["content-type"] == "application/json"
    assert response.json()["error"]


# ----------------------------------------------------------------------------- 1. integer ranges


@pytest.mark.parametrize("path", [
    "/api/models/{big}", "/api/models/{big}/metrics", "/api/models/{big}/predictions/{image}.png",
    "/api/models/{big}/predictions/{image}/mask", "/api/models/{small}", "/api/active/uncertainty/{big}/{image}.png",
    "/api/images/{image}/markers?version={big}", "/api/images/{image}/png?slice={big}",
    "/api/images/{image}/png?axis={big}", "/api/images/{image}/png?slice={small}",
    "/api/images/{image}/truth.png?slice={big}", "/api/selection/heatmap/{image}.png?axis={big}",
    "/api/models/1/predictions/{image}.png?slice={big}", "/api/active/uncertainty/1/{image}.png?axis={small}",
])
def test_out_of_range_integers_in_paths_and_queries_are_refused_not_500(http, project, path):
    url = path.format(big=TOO_BIG, small=TOO_SMALL, image=project.image_ids()[0])
    assert_json_error(http.get(url), 404, 422)


@pytest.mark.parametrize("path, body", [
    ("/api/active/propose", {"model_id": TOO_BIG}),
    ("/api/active/retrain", {"model_id": TOO_BIG}),
    ("/api/active/fresh", {"model_id": TOO_BIG}),
    ("/api/active/fresh", {"model_id": 1, "self_training": TOO_BIG}),
    ("/api/active/accept", {"model_id": TOO_BIG, "image_id": "{image}", "base_version": 0}),
    ("/api/active/accept", {"model_id": 1, "image_id": "{image}", "base_version": TOO_BIG}),
    ("/api/active/time", {"image_id": "{image}", "version": TOO_BIG, "seconds": 3}),
])
def test_out_of_range_integers_in_bodies_are_refused_not_500(http, project, path, body):
    body = {k: v.format(image=project.image_ids()[0]) if isinstance(v, str) else v for k, v in body.items()}
    assert_json_error(http.post(path, json=body), 404, 422)
    assert http.get("/api/jobs").json()["jobs"] == []


def test_out_of_range_marker_base_version(http, project):
    image_id = project.image_ids()[0]
    markers = robot_markers(project, image_id)
    assert_json_error(http.put(f"/api/images/{image_id}/markers", json=marker_body(markers, TOO_BIG)), 409, 422)
    assert project.latest_version(image_id) == 0


def test_the_largest_id_is_an_unknown_model(http):
    missing = http.get(f"/api/models/{2**63 - 1}")
    assert missing.status_code == 404 and "not found" in missing.json()["error"]


# ------------------------------------------------------------------------- 2. idempotent select


def test_concurrent_selects_of_one_image_all_succeed(http, project, monkeypatch):
    image_id = project.image_ids()[2]
    original = project.selections

    def slow_selections():  # widen the window between "is it selected?" and recording it
        rows = original()
        time.sleep(0.05)
        return rows

    monkeypatch.setattr(project, "selections", slow_selections)
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda _: http.post("/api/selection/select", json={"image_id": image_id}), range(8)))
    assert [a.status_code for a in answers] == [200] * 8, [a.text for a in answers]
    bodies = [a.json() for a in answers]
    assert sorted(b["already_selected"] for b in bodies) == [False] + [True] * 7
    assert {b["round"] for b in bodies} == {1}
    monkeypatch.undo()
    assert [(s["image_id"], s["round"]) for s in project.selections()] == [(image_id, 1)]


def test_select_answers_a_selection_made_meanwhile_by_another_process(http, project, monkeypatch):
    image_id = project.image_ids()[1]
    project.add_selection(image_id, "other process")
    original, calls = project.selections, []

    def stale_first():  # the first look misses the other process's selection
        calls.append(1)
        return [] if len(calls) == 1 else original()

    monkeypatch.setattr(project, "selections", stale_first)
    answer = http.post("/api/selection/select", json={"image_id": image_id})
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"image_id": image_id, "round": 1, "already_selected": True}


# ---------------------------------------------------------------------------- 3. storage errors


def _failing_write(number, message):
    def write(*args, **kwargs):
        raise OSError(number, message, "/x")

    return write


@pytest.mark.parametrize("number, message, status, words", [
    (errno.ENOSPC, "No space left on device", 507, "/x: no space left on device"),
    (errno.EDQUOT, "Disk quota exceeded", 507, "/x: no space left on device"),
    (errno.EACCES, "Permission denied", 503, "Permission denied"),
    (errno.EROFS, "Read-only file system", 503, "Read-only file system"),
    (errno.EIO, "Input/output error", 500, "Input/output error"),
])
def test_a_failed_marker_write_is_answered_in_json_and_keeps_the_saved_version(http, project, monkeypatch,
                                                                                number, message, status, words):
    image_id = project.image_ids()[0]
    first = robot_markers(project, image_id)
    assert http.put(f"/api/images/{image_id}/markers", json=marker_body(first, 0)).status_code == 200
    monkeypatch.setattr("hitlseg.project.markers.save_npy", _failing_write(number, message))
    second = first.copy()
    second[:4, :4] = 1
    refused = http.put(f"/api/images/{image_id}/markers", json=marker_body(second, 1))
    assert_json_error(refused, status)
    assert words in refused.json()["error"] and "/x" in refused.json()["error"]
    monkeypatch.undo()
    served = http.get(f"/api/images/{image_id}/markers").json()
    assert served["version"] == 1
    np.testing.assert_array_equal(markers_of(served), first)
    assert [h["version"] for h in http.get(f"/api/images/{image_id}/markers/history").json()["versions"]] == [1]


def test_a_full_database_is_answered_507(http, project, monkeypatch):
    def full(*args, **kwargs):
        error = sqlite3.OperationalError("database or disk is full")
        error.sqlite_errorcode, error.sqlite_errorname = 13, "SQLITE_FULL"
        raise error

    monkeypatch.setattr(project, "add_selection", full)
    refused = http.post("/api/selection/select", json={"image_id": project.image_ids()[0]})
    assert_json_error(refused, 507)
    assert "no space left on device" in refused.json()["error"]


def test_a_job_failing_on_a_full_disk_says_so(http):
    jobs = http.app.state.hitlseg.jobs
    job = jobs.submit("write", lambda progress: _failing_write(errno.ENOSPC, "No space left on device")())
    failed = wait_job(http, job.id)
    assert failed["state"] == "failed" and failed["error"].startswith("/x: no space left on device")


def test_storage_error_messages():
    status, message = security.storage_error(OSError(errno.ENOSPC, "No space left on device"), "PUT /a")
    assert status == 507 and message.startswith("PUT /a: no space left on device")
    assert security.storage_error(OSError(errno.EPERM, "Operation not permitted", "/p"))[0] == 503
    assert security.storage_error(FileNotFoundError(errno.ENOENT, "No such file or directory", "/m.pt"))[0] == 500


# ------------------------------------------------------------------------ 4. cross-site requests


@pytest.fixture
def marked(project):
    """The conftest project with robot markers on its first image (so that learning would start a job)."""
    image_id = project.image_ids()[0]
    project.save_markers(image_id, robot_markers(project, image_id), 0, author="robot")
    return image_id


def test_a_cross_site_text_plain_post_starts_no_job(http, marked):
    refused = http.post("/api/selection/learn", content=b"{}",
                        headers={"Origin": "http://evil.example", "Content-Type": "text/plain"})
    assert_json_error(refused, 403)
    assert "cross-site" in refused.json()["error"]
    assert http.get("/api/jobs").json()["jobs"] == []
    assert http.get("/api/selection").json()["rounds"] == []


@pytest.mark.parametrize("headers", [
    {"Origin": "http://evil.example"},
    {"Origin": "null"},
    {"Origin": "http://127.0.0.1:9999"},  # another port of this machine: another site's page
    {"Origin": "https://127.0.0.1.evil.example"},
    {"Origin": "http://127.0.0.1/"},
    {"Sec-Fetch-Site": "cross-site"},
    {"Sec-Fetch-Site": "same-site"},  # without an Origin to compare
    {"Sec-Fetch-Site": "same-site", "Origin": "http://localhost:3000"},
    {"Sec-Fetch-Site": "same-origin", "Origin": "http://evil.example"},
    {"Sec-Fetch-Site": "sideways"},
])
def test_cross_site_state_changes_are_refused(http, project, headers):
    image_id = project.image_ids()[0]
    for method, path, body in (("POST", "/api/selection/select", {"image_id": image_id}),
                               ("PUT", f"/api/images/{image_id}/markers",
                                marker_body(robot_markers(project, image_id), 0)),
                               ("POST", "/api/jobs/nope/cancel", None)):
        refused = http.request(method, path, json=body, headers=headers)
        assert_json_error(refused, 403)
    assert project.selections() == [] and project.latest_version(image_id) == 0
    assert http.get("/api/project", headers=headers).status_code == 200  # reads are not refused


@pytest.mark.parametrize("host, headers", [
    ("127.0.0.1", {}),  # curl, scripts, the Python client
    ("127.0.0.1", {"Origin": "http://127.0.0.1"}),  # the page's own requests
    ("127.0.0.1", {"Origin": "http://127.0.0.1:80"}),
    ("localhost:8000", {"Origin": "http://localhost:8000", "Sec-Fetch-Site": "same-origin"}),
    ("[::1]:8000", {"Origin": "http://[::1]:8000"}),
    ("localhost:8000", {"Origin": "http://LOCALHOST:8000", "Sec-Fetch-Site": "same-site"}),
    ("127.0.0.1:8000", {"Sec-Fetch-Site": "same-origin"}),
    ("127.0.0.1:8000", {"Sec-Fetch-Site": "none"}),
])
def test_same_origin_state_changes_pass(http, project, host, headers):
    answer = http.post("/api/selection/select", json={"image_id": project.image_ids()[0]},
                       headers={"host": host, **headers})
    assert answer.status_code == 200, answer.text


def test_cross_site_is_refused_with_a_token_too(project):
    app = create_app(project, host="0.0.0.0", prepare=False)
    auth = {"Authorization": f"Bearer {app.state.hitlseg.token}"}
    with client(app, base_url="http://192.168.1.5:8000") as http:
        body = {"image_id": project.image_ids()[0]}
        refused = http.post("/api/selection/select", json=body, headers={**auth, "Origin": "http://evil.example"})
        assert_json_error(refused, 403)
        assert http.post("/api/selection/select", json=body,
                         headers={**auth, "Origin": "http://192.168.1.5:8000"}).status_code == 200


def test_same_origin_rules():
    assert security.same_origin("http://localhost", "localhost:80")
    assert security.same_origin("https://example.org", "example.org", "https")
    assert not security.same_origin("http://localhost:8001", "localhost:8000")
    assert not security.same_origin("null", "localhost") and not security.same_origin("", "localhost")
    assert not security.same_origin("http://localhost:8000", "localhost:abc")


# ------------------------------------------------------------------------- 5. strict Host parsing


@pytest.mark.parametrize("host", ["[::1].evil.com", "[::1]:80.evil.com", "127.0.0.1.evil.com", "localhost:abc",
                                  "localhost:8000:1", "", " ", "localhost:", "localhost:99999", "[::1", "::1",
                                  "localhost.evil.com:80", "evil.com#@localhost", "localhost@evil.com",
                                  "[127.0.0.1]", "[::1]junk", "localhost:8000 x"])
def test_hostile_host_headers_are_refused(http, host):
    refused = http.get("/api/project", headers={"host": host})
    assert_json_error(refused, 403)


@pytest.mark.parametrize("host", ["127.0.0.1:8000", "localhost", "[::1]:8000", "LOCALHOST", "[::1]", "LocalHost:1"])
def test_loopback_host_headers_pass(http, host):
    assert http.get("/api/project", headers={"host": host}).status_code == 200


def test_parse_host():
    assert security.parse_host("[::1]:8000") == ("::1", 8000)
    assert security.parse_host("LOCALHOST") == ("localhost", None)
    assert security.parse_host("127.0.0.1:80") == ("127.0.0.1", 80)
    for hostile in ("[::1].evil.com", "localhost:abc", "", None):
        assert security.parse_host(hostile) is None


# ---------------------------------------------------------------------------- 6. duplicate headers


def _select_request(http, project, headers):
    body = b'{"image_id": "%s"}' % project.image_ids()[0].encode()
    return http.post("/api/selection/select", content=body,
                     headers=[("content-type", "application/json")] + [(k, v.replace("N", str(len(body))))
                                                                        for k, v in headers])


@pytest.mark.parametrize("headers", [
    [("content-length", "N"), ("content-length", "999999999")],
    [("content-length", "999999999"), ("content-length", "N")],
    [("content-length", "N"), ("content-length", "0")],
    [("host", "127.0.0.1"), ("host", "evil.example")],
    [("origin", "http://127.0.0.1"), ("origin", "http://evil.example")],
])
def test_headers_repeated_with_different_values_are_refused(http, project, headers):
    refused = _select_request(http, project, headers)
    assert_json_error(refused, 400)
    assert "repeated" in refused.json()["error"]
    assert project.selections() == []


def test_repeated_identical_content_length_passes(http, project):
    assert _select_request(http, project, [("content-length", "N"), ("content-length", "N")]).status_code == 200


@pytest.mark.parametrize("length", ["abc", "-1", "1, 2", ""])
def test_malformed_content_length_is_refused(http, project, length):
    assert_json_error(_select_request(http, project, [("content-length", length)]), 400)


# ---------------------------------------------------------------------------- 7. corrupt images


@pytest.fixture
def fragile(tmp_path):
    """A 6-image project with copied files, robot markers on the first two; returns (root, ids)."""
    root = tmp_path / "fragile"
    with demo_project(root, n=6, copy=True) as project:
        ids = project.image_ids()
        for image_id in ids[:2]:
            project.save_markers(image_id, robot_markers(project, image_id), 0, author="robot")
    return root, ids


def corrupt(root, image_id, how="garbage"):
    """Overwrite (or delete) the file of ``image_id`` in the project at ``root``."""
    with Project.open(root) as project:
        path = Path(project.image_info(image_id)["paths"][0])
    if how == "garbage":
        path.write_bytes(b"\x89PNG not really" + bytes(range(256)) * 4)
    else:
        path.unlink()


def test_learning_skips_a_corrupt_image(fragile):
    root, ids = fragile
    corrupt(root, ids[4])  # unmarked: left out of the pool
    corrupt(root, ids[1])  # marked: its round is skipped
    with Project.open(root) as project, client(create_app(project, prepare=False)) as http:
        job = http.post("/api/selection/learn")
        assert job.status_code == 202, job.text
        done = wait_job(http, job.json()["id"], timeout=180)
        assert done["state"] == "done", done["error"]
        assert [r["image_id"] for r in done["result"]["rounds"]] == [ids[0]]
        for image_id in (ids[4], ids[1]):
            assert any(repr(image_id) in w and "skipped" in w for w in done["warnings"]), done["warnings"]
        assert done["result"]["warnings"] == done["warnings"]
        coords = done["result"]["current"]["projection"]["coords"]
        assert set(coords) == set(ids) - {ids[4], ids[1]}
        assert project.runs(kind="server:learn")[-1]["result"]["warnings"] == done["warnings"]

        again = wait_job(http, http.post("/api/selection/learn").json()["id"], timeout=60)  # only the corrupt one left
        assert again["state"] == "failed" and "none of the newly marked images can be read" in again["error"]
        assert repr(ids[1]) in again["error"]


def test_training_skips_corrupt_and_missing_images(fragile):
    root, ids = fragile
    corrupt(root, ids[3])  # held out (evaluation)
    corrupt(root, ids[5], how="delete")
    corrupt(root, ids[1])  # marked
    with Project.open(root) as project, client(create_app(project, prepare=False, eval_limit=10)) as http:
        job = http.post("/api/models/train", json={"kind": "adaptive"})
        assert job.status_code == 202, job.text
        done = wait_job(http, job.json()["id"], timeout=180)
        assert done["state"] == "done", done["error"]
        model = done["result"]
        assert model["params"]["images"] == {ids[0]: 1}
        assert set(model["params"]["skipped_images"]) == {ids[1], ids[3], ids[5]}
        assert model["metrics"]["images"] == 2  # ids[2], ids[4]
        assert len(done["warnings"]) == 3 and all("skipped" in w for w in done["warnings"])
        assert any("not found" in w for w in done["warnings"] if repr(ids[5]) in w)

    corrupt(root, ids[0])  # no readable marked image is left
    with Project.open(root) as project, client(create_app(project, prepare=False)) as http:
        failed = wait_job(http, http.post("/api/models/train", json={"kind": "adaptive"}).json()["id"], timeout=60)
        assert failed["state"] == "failed" and "no marked image can be read" in failed["error"]
        assert repr(ids[0]) in failed["error"] and repr(ids[1]) in failed["error"]
