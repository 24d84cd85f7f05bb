"""Server: the markers router — versioned saves, stale-version conflicts, strict validation of uploads."""

from __future__ import annotations

import base64
import threading
import zlib

import numpy as np
import pytest

from hitlseg.server import create_app
from hitlseg.server.testing import client, marker_body, markers_of


@pytest.fixture
def image(project):
    image_id = project.image_ids()[1]
    return image_id, tuple(project.image_info(image_id)["shape"])


def strokes(shape, seed):
    """Markers with background (1) and class 1 (2) and class 2 (3) strokes."""
    rng = np.random.default_rng(seed)
    markers = np.zeros(shape, np.uint8)
    for label in (1, 2, 3):
        row = int(rng.integers(0, shape[0]))
        start = int(rng.integers(0, shape[1] // 2))
        markers[row, start : start + 20] = label
    return markers


def test_save_and_load_versions(http, project, image):
    image_id, shape = image
    empty = http.get(f"/api/images/{image_id}/markers").json()
    assert empty["version"] == 0 and empty["n_marked"] == 0 and not markers_of(empty).any()

    first = strokes(shape, 1)
    saved = http.put(f"/api/images/{image_id}/markers", json=marker_body(first, 0, author="ana"))
    assert saved.status_code == 200, saved.text
    assert saved.json()["version"] == 1 and saved.json()["n_marked"] == int((first > 0).sum())
    second = strokes(shape, 2)
    assert http.put(f"/api/images/{image_id}/markers", json=marker_body(second, 1)).json()["version"] == 2

    latest = http.get(f"/api/images/{image_id}/markers").json()
    assert latest["version"] == 2
    np.testing.assert_array_equal(markers_of(latest), second)
    old = http.get(f"/api/images/{image_id}/markers", params={"version": 1}).json()
    np.testing.assert_array_equal(markers_of(old), first)
    np.testing.assert_array_equal(project.load_markers(image_id, 1)[0], first)  # what the store holds

    history = http.get(f"/api/images/{image_id}/markers/history").json()["versions"]
    assert [h["version"] for h in history] == [1, 2]
    assert [h["author"] for h in history] == ["ana", "web"]
    assert history[0]["n_marked"] == int((first > 0).sum())
    assert "file" not in history[0]
    assert http.get("/api/images").json()["images"][1]["marker_version"] == 2
    missing = http.get(f"/api/images/{image_id}/markers", params={"version": 3})
    assert missing.status_code == 404 and "no version 3" in missing.json()["error"]


def test_stale_base_version_is_a_conflict(http, project, image):
    image_id, shape = image
    assert http.put(f"/api/images/{image_id}/markers", json=marker_body(strokes(shape, 1), 0)).status_code == 200
    assert http.put(f"/api/images/{image_id}/markers", json=marker_body(strokes(shape, 2), 1)).status_code == 200
    stale = http.put(f"/api/images/{image_id}/markers", json=marker_body(strokes(shape, 3), 1))
    assert stale.status_code == 409
    body = stale.json()
    assert body["latest_version"] == 2 and body["base_version"] == 1 and body["image_id"] == image_id
    assert "version 2" in body["error"]
    assert project.latest_version(image_id) == 2  # nothing was overwritten
    first_save = http.put(f"/api/images/{project.image_ids()[0]}/markers", json=marker_body(strokes(shape, 4), 3))
    assert first_save.status_code == 409 and first_save.json()["latest_version"] == 0


def test_concurrent_saves_from_the_same_base_one_wins(project, image):
    image_id, shape = image
    app = create_app(project, prepare=False)
    statuses = []
    barrier = threading.Barrier(4)

    def annotator(seed):
        with client(app) as http:
            barrier.wait()
            statuses.append(http.put(f"/api/images/{image_id}/markers", json=marker_body(strokes(shape, seed), 0)).status_code)

    threads = [threading.Thread(target=annotator, args=(seed,)) for seed in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(statuses) == [200, 409, 409, 409]
    assert project.latest_version(image_id) == 1


def _compressed(data: bytes) -> str:
    return base64.b64encode(zlib.compress(data)).decode()


@pytest.mark.parametrize("change, status, message", [
    (lambda b, n: {**b, "data": "not base64 !!"}, 400, "base64"),
    (lambda b, n: {**b, "data": base64.b64encode(b"\x00" * n).decode()}, 400, "zlib"),
    (lambda b, n: {**b, "data": _compressed(b"\x00" * (n - 1))}, 400, "expected"),
    (lambda b, n: {**b, "data": _compressed(b"\x00" * (n + 1))}, 400, "more than"),
    (lambda b, n: {**b, "data": _compressed(b"\x00" * (50 * n))}, 400, "more than"),  # a small upload, a large array
    (lambda b, n: {**b, "data": base64.b64encode(zlib.compress(b"\x00" * n)[:-6]).decode()}, 400, "truncated"),
    (lambda b, n: {**b, "data": base64.b64encode(zlib.compress(b"\x00" * n) + b"xx").decode()}, 400, "trailing"),
    (lambda b, n: {**b, "data": _compressed(b"\x05" * n)}, 400, "not a class"),
    (lambda b, n: {**b, "shape": [10, 10]}, 400, "differs from the shape"),
    (lambda b, n: {**b, "encoding": "png"}, 400, "encoding"),
    (lambda b, n: {**b, "base_version": -1}, 422, "base_version"),
    (lambda b, n: {**b, "base_version": "1"}, 422, "base_version"),
    (lambda b, n: {**b, "base_version": True}, 422, "base_version"),
    (lambda b, n: {**b, "shape": [1, 2, 3, 4]}, 422, "shape"),
    (lambda b, n: {k: v for k, v in b.items() if k != "data"}, 422, "data"),
    (lambda b, n: {**b, "path": "/etc/passwd"}, 422, "path"),
])
def test_malformed_uploads_are_refused(http, project, image, change, status, message):
    image_id, shape = image
    body = change(marker_body(strokes(shape, 1), 0), int(np.prod(shape)))
    response = http.put(f"/api/images/{image_id}/markers", json=body)
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    assert message in response.json()["error"]
    assert project.latest_version(image_id) == 0  # nothing was stored


def test_not_json_is_refused(http, image):
    image_id, _ = image
    response = http.put(f"/api/images/{image_id}/markers", content=b"{not json", headers={"content-type": "application/json"})
    assert response.status_code == 422 and "error" in response.json()
    response = http.put(f"/api/images/{image_id}/markers", content=b"[1, 2]", headers={"content-type": "application/json"})
    assert response.status_code == 422


def test_oversized_bodies_are_refused(project, image):
    image_id, shape = image
    with client(create_app(project, prepare=False, max_body=64 * 1024)) as http:
        body = marker_body(strokes(shape, 1), 0)
        body["author"] = "x" * 100_000
        declared = http.put(f"/api/images/{image_id}/markers", json=body)
        assert declared.status_code == 413 and "exceeds the limit of 65536 bytes" in declared.json()["error"]

        def chunks():  # no Content-Length: the limit is enforced while reading
            for _ in range(100):
                yield b"x" * 1024

        streamed = http.put(f"/api/images/{image_id}/markers", content=chunks(), headers={"content-type": "application/json"})
        assert streamed.status_code == 413 and "exceeds the limit" in streamed.json()["error"]
        small = http.put(f"/api/images/{image_id}/markers", json=marker_body(strokes(shape, 1), 0))
        assert small.status_code == 200
    assert project.latest_version(image_id) == 1


def test_an_empty_first_save_is_refused_and_nothing_is_stored(http, project, image):
    image_id, shape = image
    refused = http.put(f"/api/images/{image_id}/markers", json=marker_body(np.zeros(shape, np.uint8), 0))
    assert refused.status_code == 400, refused.text
    assert refused.json()["error"].startswith(f"image {image_id!r}: no strokes to save")
    assert project.latest_version(image_id) == 0 and project.marker_history(image_id) == []
    assert not project.events(kind="markers_saved")
    assert http.get("/api/images").json()["images"][1]["marker_version"] == 0


def test_erasing_every_stroke_of_a_marked_image_is_a_new_version(http, project, image):
    image_id, shape = image
    assert http.put(f"/api/images/{image_id}/markers", json=marker_body(strokes(shape, 1), 0)).status_code == 200
    erased = http.put(f"/api/images/{image_id}/markers", json=marker_body(np.zeros(shape, np.uint8), 1))
    assert erased.status_code == 200, erased.text
    assert erased.json()["version"] == 2 and erased.json()["n_marked"] == 0 and erased.json()["unchanged"] is False
    assert [h["n_marked"] for h in project.marker_history(image_id)][-1] == 0
    assert not project.load_markers(image_id)[0].any()


def test_a_save_identical_to_the_latest_version_writes_nothing(http, project, image):
    image_id, shape = image
    first = strokes(shape, 1)
    assert http.put(f"/api/images/{image_id}/markers", json=marker_body(first, 0)).json()["version"] == 1
    again = http.put(f"/api/images/{image_id}/markers", json=marker_body(first, 1))
    assert again.status_code == 200, again.text
    assert again.json()["version"] == 1 and again.json()["unchanged"] is True
    assert again.json()["n_marked"] == int((first > 0).sum())
    assert [h["version"] for h in project.marker_history(image_id)] == [1]
    stale = http.put(f"/api/images/{image_id}/markers", json=marker_body(first, 0))  # from a stale base: still 409
    assert stale.status_code == 409
    erased = http.put(f"/api/images/{image_id}/markers", json=marker_body(np.zeros(shape, np.uint8), 1))
    assert erased.json()["version"] == 2
    twice = http.put(f"/api/images/{image_id}/markers", json=marker_body(np.zeros(shape, np.uint8), 2))
    assert twice.status_code == 200 and twice.json() == {**erased.json(), "unchanged": True}
    assert project.latest_version(image_id) == 2


def test_a_save_tells_what_learning_still_needs(http, image):
    image_id, shape = image
    background = np.zeros(shape, np.uint8)
    background[3, 5:30] = 1
    saved = http.put(f"/api/images/{image_id}/markers", json=marker_body(background, 0))
    assert saved.status_code == 200  # a partial annotation may be saved ...
    assert saved.json()["missing"].startswith("only background strokes; mark at least one object class")  # ... and says so
    background[8, 5:30] = 3
    assert http.put(f"/api/images/{image_id}/markers", json=marker_body(background, 1)).json()["missing"] is None


def test_merge_after_a_conflict_joins_both_edits_and_flags_disagreements(http, project, image):
    """Two tabs edit version 1; the second save is stale (409); the merge keeps both edits and writes nothing."""
    from hitlseg.server.imaging import decode_labels

    image_id, shape = image
    base = strokes(shape, 3)
    assert http.put(f"/api/images/{image_id}/markers", json=marker_body(base, 0)).status_code == 200
    theirs = base.copy()
    theirs[0, :10] = 1  # their new background stroke
    theirs[2, 5] = 2  # both draw here, with different classes
    mine = base.copy()
    mine[shape[0] - 1, :10] = 3  # my new class-2 stroke
    mine[2, 5] = 3
    assert http.put(f"/api/images/{image_id}/markers", json=marker_body(theirs, 1)).json()["version"] == 2
    stale = http.put(f"/api/images/{image_id}/markers", json=marker_body(mine, 1))
    assert stale.status_code == 409
    merged = http.post(f"/api/images/{image_id}/markers/merge", json=marker_body(mine, 1))
    assert merged.status_code == 200, merged.text
    answer = merged.json()
    labels = markers_of(answer)
    conflicts = decode_labels(answer["conflicts"], shape).astype(bool)
    assert answer["version"] == 2 and answer["n_conflicts"] == 1 and conflicts[2, 5] and labels[2, 5] == 0
    assert (labels[0, :10] == 1).all() and (labels[shape[0] - 1, :10] == 3).all()
    np.testing.assert_array_equal(decode_labels(answer["theirs"], shape), theirs)
    assert project.latest_version(image_id) == 2  # nothing written
    # the person resolves the conflict and saves on the returned version
    labels[2, 5] = 3
    assert http.put(f"/api/images/{image_id}/markers", json=marker_body(labels, answer["version"])).json()["version"] == 3
    assert http.post(f"/api/images/{image_id}/markers/merge", json=marker_body(mine, 9)).status_code == 404


def test_merge_markers_three_way_and_union():
    from hitlseg.errors import InputError
    from hitlseg.project.merge import merge_markers

    base = np.array([1, 1, 0, 0, 0, 2], np.uint8)
    mine = np.array([0, 1, 2, 2, 0, 2], np.uint8)
    theirs = np.array([1, 0, 0, 1, 2, 2], np.uint8)
    result = merge_markers(mine, theirs, base)
    # my erasure (0) and their erasure (1) both survive; 3 is a conflict; their stroke on 4 is kept
    assert result.markers.tolist() == [0, 0, 2, 0, 2, 2] and result.conflicts.tolist() == [0, 0, 0, 1, 0, 0]
    union = merge_markers(mine, theirs)
    assert union.markers.tolist() == [1, 1, 2, 0, 2, 2] and union.n_conflicts == 1
    with pytest.raises(InputError, match="shape"):
        merge_markers(mine, theirs[:3])
    with pytest.raises(InputError, match="integer"):
        merge_markers(mine.astype(float), theirs)
