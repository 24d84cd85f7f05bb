"""Server: token off loopback, host check on loopback, and the ``serve`` / ``demo`` commands."""

from __future__ import annotations

import subprocess
import sys

import pytest

from hitlseg.cli import main
from hitlseg.cli.serve import bind, demo_dir, open_browser, open_demo_project, url_of
from hitlseg.errors import InputError
from hitlseg.server import create_app
from hitlseg.server.security import is_loopback
from hitlseg.server.testing import client

PROJECT_IMAGES = 2


@pytest.mark.parametrize("host, loopback", [("127.0.0.1", True), ("127.3.2.1", True), ("localhost", True), ("::1", True),
                                            ("[::1]", True), ("0.0.0.0", False), ("::", False), ("192.168.1.5", False),
                                            ("example.org", False)])
def test_loopback_addresses(host, loopback):
    assert is_loopback(host) is loopback


def test_token_required_off_loopback(project):
    app = create_app(project, host="0.0.0.0", prepare=False)
    token = app.state.hitlseg.token
    assert token and len(token) >= 20  # generated
    with client(app, base_url="http://192.168.1.5:8000") as http:
        for path in ("/api/project", "/api/images", "/", "/static/js/main.js", "/openapi.json"):
            refused = http.get(path)
            assert refused.status_code == 401, path
            assert refused.headers["content-type"] == "application/json" and "token" in refused.json()["error"]
        assert http.put("/api/images/x/markers", json={}).status_code == 401  # before anything is read
        assert http.get("/api/project", headers={"Authorization": "Bearer wrong-token"}).status_code == 401
        assert http.get("/api/project", headers={"Authorization": f"Bearer {token}"}).status_code == 200
        page = http.get("/", params={"token": token})  # the URL printed at startup
        assert page.status_code == 200
        cookie = page.headers["set-cookie"]
        assert cookie.startswith(f"hitlseg_token={token}") and "HttpOnly" in cookie and "SameSite=Strict" in cookie
        assert http.get("/api/images").status_code == 200  # the page's own requests carry the cookie
        http.cookies.clear()
        assert http.get("/api/images").status_code == 401


def test_explicit_token_is_required_on_loopback_too(project):
    with client(create_app(project, token="s3cret-token", prepare=False)) as http:
        assert http.get("/api/project").status_code == 401
        assert http.get("/api/project", headers={"Authorization": "Bearer s3cret-token"}).status_code == 200
    with pytest.raises(InputError, match="at least 8"):
        create_app(project, token="short")


def test_open_loopback_server_checks_the_host_header(project):
    with client(create_app(project, prepare=False)) as http:
        assert http.get("/api/project").status_code == 200
        for host in ("localhost:8000", "127.0.0.1", "[::1]:8000"):
            assert http.get("/api/project", headers={"host": host}).status_code == 200, host
        for host in ("evil.example:8000", "192.168.1.5", "127.0.0.1.evil.example"):
            refused = http.get("/api/project", headers={"host": host})
            assert refused.status_code == 403 and "127.0.0.1" in refused.json()["error"], host


def test_bad_options(project):
    with pytest.raises(InputError, match="max_body"):
        create_app(project, max_body=10)
    with pytest.raises(InputError, match="classes"):
        create_app(project, classes=0)
    with pytest.raises(InputError, match="class_names"):
        create_app(project, classes=1, class_names=["a", "b"])
    app = create_app(project, classes=3, class_names=["nucleus"], prepare=False)
    assert app.state.hitlseg.class_names == ["nucleus", "Class 2", "Class 3"]


# --------------------------------------------------------------------------------- command line


def test_serve_and_demo_commands_are_registered(capsys):
    with pytest.raises(SystemExit):
        main(["serve", "--help"])
    text = capsys.readouterr().out
    for option in ("--host", "--port", "--token", "--no-browser", "--classes"):
        assert option in text
    with pytest.raises(SystemExit):
        main(["demo", "--help"])
    assert "--dir" in capsys.readouterr().out


def test_serve_refuses_what_it_cannot_use(tmp_path, project, capsys):
    assert main(["serve", str(tmp_path / "missing"), "--no-browser"]) == 2
    assert "project folder not found" in capsys.readouterr().err
    assert main(["serve", str(project.root), "--port", "70000", "--no-browser"]) == 2
    assert "--port" in capsys.readouterr().err
    taken = bind("127.0.0.1", 0)
    taken.listen(1)
    port = taken.getsockname()[1]
    try:
        assert main(["serve", str(project.root), "--port", str(port), "--no-browser"]) == 2
        assert f"cannot listen on 127.0.0.1:{port}" in capsys.readouterr().err
        fallback = bind("127.0.0.1", port, fallback=True)  # the demo takes another port instead
        assert fallback.getsockname()[1] != port
        fallback.close()
    finally:
        taken.close()


def test_urls_and_browser():
    assert url_of("127.0.0.1", 8000, None) == "http://127.0.0.1:8000/"
    assert url_of("0.0.0.0", 8001, "abc") == "http://127.0.0.1:8001/?token=abc"
    assert url_of("::1", 8002, None) == "http://[::1]:8002/"


def test_browser_is_skipped_without_a_display(monkeypatch):
    opened = []
    monkeypatch.setattr(sys, "platform", "linux")
    for name in ("DISPLAY", "WAYLAND_DISPLAY", "BROWSER"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr("webbrowser.open", lambda url: opened.append(url) or True)
    assert open_browser("http://127.0.0.1:1/") is False and opened == []
    monkeypatch.setenv("DISPLAY", ":0")
    assert open_browser("http://127.0.0.1:1/") is True and opened == ["http://127.0.0.1:1/"]


def test_demo_project_is_created_once_in_the_user_data_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    assert demo_dir() == tmp_path / "data" / "hitlseg" / "demo"
    project, created = open_demo_project(demo_dir())
    assert created and len(project) == 300 and project.meta["copied"] == "1"  # self-contained
    project.save_markers(project.image_ids()[0], project.mask(project.image_ids()[0]).clip(0, 1), 0)
    project.close()
    again, created = open_demo_project(demo_dir())
    assert not created and again.latest_version(again.image_ids()[0]) == 1  # reused, work kept
    again.close()
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(InputError, match="not a hitlseg project"):
        open_demo_project(tmp_path / "other")


def test_serve_prints_the_url_and_answers(project, tmp_path):
    project.close()
    command = [sys.executable, "-m", "hitlseg", "serve", str(project.root), "--port", "0", "--no-browser",
               "--token", "tok-12345678"]  # loopback only; an explicit token is required there too
    server = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        line = server.stdout.readline()
        assert "serving project" in line and "http://127.0.0.1:" in line and "?token=tok-12345678" in line, line
        url = line.split(" at ")[1].strip()
        import httpx

        assert httpx.get(url.split("?")[0] + "api/project", timeout=10).status_code == 401
        answer = httpx.get(url, timeout=10)
        assert answer.status_code == 200 and "projection-plot" in answer.text
    finally:
        server.terminate()
        server.wait(timeout=20)


def test_bind_listens_so_the_printed_url_never_refuses_a_connection():
    import socket

    sock = bind("127.0.0.1", 0)  # the server prints the URL now, before uvicorn accepts
    try:
        client = socket.create_connection(sock.getsockname(), timeout=5)  # waits in the backlog
        client.close()
    finally:
        sock.close()


def test_a_second_demo_opens_the_running_server_instead_of_serving_the_project_twice(tmp_path):
    folder = tmp_path / "demo"
    taken = bind("127.0.0.1", 0)
    port = taken.getsockname()[1]
    taken.close()
    command = [sys.executable, "-m", "hitlseg", "demo", "--dir", str(folder), "--port", str(port), "--no-browser"]
    first = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        lines = [first.stdout.readline(), first.stdout.readline()]
        assert f"http://127.0.0.1:{port}/" in lines[1], lines
        again = subprocess.run(command, capture_output=True, text=True, timeout=60)
        assert again.returncode == 0, again.stderr
        assert f"already being served at http://127.0.0.1:{port}/" in again.stdout
        assert "serving project" not in again.stdout
    finally:
        first.terminate()
        first.wait(timeout=20)
    # the port held by another program: the demo says so and serves elsewhere
    other = bind("127.0.0.1", port)
    other.listen(1)
    try:
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            lines = [process.stdout.readline() for _ in range(3)]
            assert f"port {port} is busy" in lines[1] and "instead" in lines[1], lines
            assert "serving project" in lines[2] and f":{port}/" not in lines[2], lines
        finally:
            process.terminate()
            process.wait(timeout=20)
    finally:
        other.close()
