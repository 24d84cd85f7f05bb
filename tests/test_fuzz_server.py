"""Fuzz suite for the server: every route of the OpenAPI document with hostile ids, queries and bodies.

Asserted for every request: no 5xx, every error is JSON ``{"error": ...}``, and no marker version
that was acknowledged before the run is lost or changed. Job-starting routes get only bodies that
cannot be valid (so no training runs). ``HITLSEG_FUZZ=1`` runs a larger set.
"""

from __future__ import annotations

import json
import os
import re

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

LARGE = os.environ.get("HITLSEG_FUZZ") == "1"
JOB_ROUTES = {("post", "/api/selection/learn"), ("post", "/api/models/train"), ("post", "/api/active/propose"),
              ("post", "/api/active/retrain"), ("post", "/api/active/fresh")}

HOSTILE_TEXT = st.one_of(
    st.sampled_from(["", "..", "../../etc/passwd", "%2e%2e%2f", "a/b", "\\", "001\x00", "NaN", "inf", "-1", "0",
                     "9223372036854775808", "-9223372036854775809", "1e400", "' OR 1=1 --", "<script>", "x" * 3000,
                     "000", "001", "ünïcødé", "%", "%zz", " ", "true", "null", "[]", "{}"]),
    st.text(max_size=40),
)
HOSTILE_NUMBER = st.one_of(st.integers(-2**70, 2**70), st.floats(allow_nan=True, allow_infinity=True),
                           st.sampled_from([0, 1, -1, 2**63, 2**63 - 1, 2**64]))
JSON_VALUE = st.recursive(st.one_of(st.none(), st.booleans(), HOSTILE_NUMBER, HOSTILE_TEXT),
                          lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                  st.dictionaries(HOSTILE_TEXT, inner, max_size=4)), max_leaves=12)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from hitlseg.robot import Robot
    from hitlseg.server import create_app
    from hitlseg.server.testing import client, demo_project, marker_body

    with demo_project(tmp_path_factory.mktemp("fuzz") / "project", n=3) as project:
        app = create_app(project, prepare=False)
        with client(app) as http:
            saved = {}
            for image_id in project.image_ids()[:2]:
                markers = Robot(0).mark(project.mask(image_id), key=image_id)
                answer = http.put(f"/api/images/{image_id}/markers", json=marker_body(markers, 0))
                assert answer.status_code == 200
                saved[image_id] = (answer.json()["version"], markers)
            yield http, project, app.openapi(), saved


def _routes(spec):
    routes = []
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            body = operation.get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema")
            if body and "$ref" in body:
                body = spec["components"]["schemas"][body["$ref"].rsplit("/", 1)[1]]
            routes.append((method, path, operation.get("parameters", []), body))
    return routes


@st.composite
def request(draw, routes, image_ids):
    method, path, parameters, body_schema = draw(st.sampled_from(routes))
    real = st.sampled_from(image_ids)
    values, query = {}, {}
    for parameter in parameters:
        name = parameter["name"]
        if parameter["in"] == "path":
            if name == "image_id":
                value = draw(st.one_of(real, HOSTILE_TEXT))
            else:
                value = draw(st.one_of(HOSTILE_NUMBER.map(str), HOSTILE_TEXT))
            values[name] = value
        elif draw(st.booleans()):
            query[name] = draw(st.one_of(HOSTILE_NUMBER.map(str), HOSTILE_TEXT, real))
    url = path
    for name, value in values.items():
        from urllib.parse import quote

        url = url.replace("{" + name + "}", quote(str(value), safe="") or "%20")
    content, headers = None, {}
    if method in ("post", "put", "patch"):
        starts_job = (method, path) in JOB_ROUTES
        kind = draw(st.sampled_from(["none", "garbage", "json"] + ([] if starts_job else ["schema"])))
        if kind == "garbage":
            content = draw(st.binary(max_size=200))
            headers["content-type"] = draw(st.sampled_from(["application/json", "text/plain", "application/x-www-form-urlencoded"]))
        elif kind == "json":
            value = draw(JSON_VALUE)
            if starts_job and isinstance(value, dict):
                value = [value]  # never a valid body: no job starts
            content = json.dumps(value, allow_nan=True).encode()
            headers["content-type"] = "application/json"
        elif kind == "schema" and body_schema:
            fields = {name: draw(st.one_of(JSON_VALUE, real)) for name in body_schema.get("properties", {})
                      if draw(st.booleans())}
            content = json.dumps(fields, allow_nan=True).encode()
            headers["content-type"] = "application/json"
    return method, url, query, content, headers


def _check(http, saved, method, url, query, content, headers):
    answer = http.request(method.upper(), url, params=query, content=content, headers=headers)
    assert answer.status_code < 500, (method, url, query, content, answer.status_code, answer.text[:300])
    if answer.status_code >= 400:
        assert answer.headers["content-type"].startswith("application/json"), (method, url, answer.text[:200])
        assert isinstance(answer.json().get("error"), str)
    return answer.status_code


def test_every_route_answers_hostile_requests_without_5xx(server):
    http, project, spec, saved = server
    # learn takes no body (any request is valid and starts a job): its refusals are tested elsewhere
    routes = [r for r in _routes(spec) if (r[0], r[1]) != ("post", "/api/selection/learn")]
    statuses = {}

    @settings(max_examples=600 if LARGE else 120, deadline=None, derandomize=not LARGE, database=None,
              suppress_health_check=list(HealthCheck))
    @given(request(routes, project.image_ids()))
    def run(args):
        status = _check(http, saved, *args)
        statuses[status] = statuses.get(status, 0) + 1

    run()
    assert sum(statuses.values()) >= 100
    from hitlseg.server.testing import markers_of

    for image_id, (version, markers) in saved.items():  # nothing acknowledged was lost or changed
        served = http.get(f"/api/images/{image_id}/markers", params={"version": version})
        assert served.status_code == 200
        np.testing.assert_array_equal(markers_of(served.json()), markers)
    assert not [j for j in http.get("/api/jobs").json().get("jobs", []) if j.get("kind") in ("train", "learn")], \
        "a fuzzed request started a job"
    report = os.environ.get("HITLSEG_FUZZ_REPORT")
    if report:
        path = re.sub(r"(\.json)?$", "-server.json", report, count=1)
        with open(path, "w") as handle:
            json.dump({"requests": sum(statuses.values()), "statuses": statuses}, handle, indent=1)
