"""The page in Debian's Chromium (Playwright): ``hitlseg demo`` serves the WBC demo project; a person
draws strokes of several classes with the mouse, saves, learns filters, sees the projection and the
recommendations, clicks a point to see its heatmap, selects the next image, resolves a stale-version
conflict, and trains a model. Screenshots go to ``test-artifacts/browser/``; with
``HITLSEG_UPDATE_SCREENSHOTS=1`` the selection view and the marker editor are also copied (as
compact PNGs) to ``docs/screenshots/`` for the README.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import httpx
import numpy as np
import pytest
from scipy import ndimage

from hitlseg.project import Project
from hitlseg.server.imaging import decode_labels
from hitlseg.server.testing import marker_body, markers_of

pytestmark = [pytest.mark.browser, pytest.mark.slow]

CHROMIUM = Path("/usr/bin/chromium")
REPO = Path(__file__).resolve().parents[1]
ARTIFACTS = REPO / "test-artifacts" / "browser"
DOCS = REPO / "docs" / "screenshots"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run"]
TIMEOUT_MS = 180_000
#: Set (to anything but "" or "0") by ``.ci/run``: there the browser tests must run, so a missing
#: browser or Playwright fails them instead of skipping them.
REQUIRE_BROWSER = "HITLSEG_REQUIRE_BROWSER"


def api_client(url: str) -> httpx.Client:
    """An HTTP client for the test's own API calls that opens a connection per request: a kept-alive
    connection the server closed while the test drove the browser (uvicorn's 5 s keep-alive) would
    otherwise meet the next request with 'connection reset by peer' on a slow machine."""
    return httpx.Client(base_url=url.rstrip("/"), timeout=30, limits=httpx.Limits(max_keepalive_connections=0))


def browser_unavailable(reason: str):
    """Skip the browser tests (a machine without Chromium), or fail them when ``REQUIRE_BROWSER`` is set."""
    if os.environ.get(REQUIRE_BROWSER, "") not in ("", "0"):
        pytest.fail(f"{reason}, and {REQUIRE_BROWSER} is set: the browser tests must run here", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """``hitlseg demo`` on a free loopback port, in a fresh data folder: (url, project folder)."""
    if not CHROMIUM.is_file():
        browser_unavailable(f"Debian's Chromium ({CHROMIUM}) is not installed")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        browser_unavailable("Playwright (playwright.sync_api) is not installed")
    folder = tmp_path_factory.mktemp("browser") / "demo"
    process = subprocess.Popen([sys.executable, "-m", "hitlseg", "demo", "--dir", str(folder), "--port", "0", "--no-browser"],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = []
    try:
        while True:
            line = process.stdout.readline()
            assert line, "hitlseg demo stopped:\n" + "".join(lines)
            lines.append(line)
            if " at http://127.0.0.1:" in line:
                url = line.split(" at ")[1].strip()
                break
        assert "created the demo project" in lines[0]
        threading.Thread(target=process.stdout.read, daemon=True).start()
        yield url, folder
    finally:
        process.terminate()
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()


@pytest.fixture(scope="module")
def page(demo):
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=ARGS)
        context = browser.new_context(viewport={"width": 1360, "height": 900})
        tab = context.new_page()
        tab.set_default_timeout(TIMEOUT_MS)
        errors = []
        tab.on("pageerror", lambda error: errors.append(str(error)))
        expected = "the server responded with a status of 409"  # the stale save below, on purpose

        def console(message):
            if message.type == "error" and expected not in message.text:
                errors.append(message.text)

        tab.on("console", console)
        tab.errors = errors
        yield tab
        context.close()
        browser.close()


# A point of the projection with no other point within 16 px (so that a click picks it), preferring the
# closest recommendations, then the most distant, then the others; not the one already shown.
ISOLATED_POINT = """() => {
  const plot = document.getElementById('projection-plot');
  const traces = Array.from(plot.querySelectorAll('.scatterlayer .trace'));
  const centres = traces.map((t) => Array.from(t.querySelectorAll('path.point')).map((p) => {
    const r = p.getBoundingClientRect(); return [r.x + r.width / 2, r.y + r.height / 2]; }));
  const all = centres.flat();
  const shown = document.getElementById('detail-title').textContent.replace('Image ', '');
  for (const trace of [1, 2, 0]) {
    for (let i = 0; i < (centres[trace] || []).length; i++) {
      const [x, y] = centres[trace][i];
      const id = plot.data[trace].customdata[i];
      const near = all.filter(([a, b]) => Math.hypot(a - x, b - y) < 16).length;
      if (near === 1 && id !== shown) return [id, x, y];
    }
  }
  return [null, 0, 0];
}"""


def shoot(page, name: str, full_page: bool = False) -> Path:
    """Save a screenshot once every picture on the page has loaded (without the notification)."""
    page.wait_for_function("Array.from(document.images).every((i) => !i.getAttribute('src') || i.complete)")
    page.evaluate("document.getElementById('toast').hidden = true")
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=full_page)
    return path


def publish(path: Path, name: str) -> None:
    """Copy a screenshot to docs/screenshots (when asked to), as a palette PNG if it is large."""
    if os.environ.get("HITLSEG_UPDATE_SCREENSHOTS") != "1":
        return
    from PIL import Image

    DOCS.mkdir(parents=True, exist_ok=True)
    image = Image.open(path).convert("RGB")
    image.save(DOCS / name, optimize=True)
    if (DOCS / name).stat().st_size > 280_000:
        image.quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).save(DOCS / name, optimize=True)


def strokes(mask: np.ndarray) -> list[tuple[int, np.ndarray]]:
    """(class, points (row, col)): per class, a stroke along the outline of its region shrunk by a margin,
    so that the brush stays inside the class (as a careful person draws)."""
    from skimage.measure import find_contours

    found = []
    for label, margins in ((0, (7,)), (1, (5, 4, 3)), (2, (5, 4, 3))):
        for margin in margins:  # the widest margin that leaves a stroke inside a thin class (the cytoplasm ring)
            region = ndimage.binary_erosion(mask == label, iterations=margin)
            if region.sum() >= 10:
                break
        if region.sum() < 10:
            continue
        contours = find_contours(np.pad(region, 1).astype(float), 0.5)
        points = max(contours, key=len) - 1.0
        step = max(1, len(points) // 40)
        found.append((label, points[::step]))
    return found


def draw(page, label: int, points) -> None:
    """One mouse stroke of class ``label`` through ``points`` (row, col) of the image."""
    page.click(f"#class-{label}")
    path = page.evaluate("(points) => points.map(([r, c]) => editor.imageToClient(c + 0.5, r + 0.5))",
                         [[float(r), float(c)] for r, c in points])
    page.mouse.move(*path[0])
    page.mouse.down()
    for x, y in path[1:]:
        page.mouse.move(x, y, steps=2)
    page.mouse.up()


def page_labels(page) -> np.ndarray:
    return np.asarray(page.evaluate("Array.from(editor.labels)"), dtype=np.uint8)


def mark_in_editor(page, folder: Path, image_id: str) -> np.ndarray:
    """Draw one stroke per class from the ground truth; check the strokes; return the page's labels."""
    with Project.open(folder, collect_garbage=False) as project:
        mask = project.mask(image_id)
    lines = strokes(mask)
    assert len(lines) >= 2
    for line in lines:
        draw(page, *line)
    labels = page_labels(page).reshape(mask.shape)
    for label, *_ in lines:
        assert (labels == label + 1).sum() > 5, f"no stroke of class {label}"
    marked = labels > 0
    assert (labels[marked] - 1 == mask[marked]).all()  # every stroke fell on its class
    return labels


def wait_image(page, selector: str, contains: str) -> None:
    page.wait_for_function(
        "([selector, part]) => { const i = document.querySelector(selector);"
        " return i && i.complete && i.naturalWidth > 0 && decodeURIComponent(i.src).includes(part); }",
        arg=[selector, contains])


def test_marking_and_selection_loop_in_chromium(demo, page):
    url, folder = demo
    api = api_client(url)
    page.goto(url)
    page.wait_for_selector("body[data-ready='1']")
    assert page.is_visible("#projection-empty")  # no filters yet: mark the proposed image
    proposal = api.get("/api/selection").json()["proposal"]
    assert proposal in page.inner_text("#mark-proposal")

    # ---- marker editor: strokes of three classes with the mouse, undo/redo, save
    page.click("#tab-editor")
    page.wait_for_function(f"editor.imageId === {proposal!r} && editor.picture !== null")
    assert page.input_value("#image-select") == proposal
    labels = mark_in_editor(page, folder, proposal)
    before_undo = page_labels(page)
    page.keyboard.press("Control+z")
    after_undo = page_labels(page)
    assert (after_undo > 0).sum() < (before_undo > 0).sum()  # the last stroke is gone
    page.keyboard.press("Control+y")
    np.testing.assert_array_equal(page_labels(page), before_undo)
    assert "unsaved" in page.inner_text("#marker-version")
    shoot(page, "01-marker-editor-first-image")
    page.click("#save-markers")
    page.wait_for_function("document.getElementById('marker-version').textContent === 'version 1'")
    saved = api.get(f"/api/images/{proposal}/markers").json()
    assert saved["version"] == 1
    np.testing.assert_array_equal(markers_of(saved), labels)  # what was drawn is what was stored

    # ---- learn filters: the projection and the recommendations appear
    page.click("#learn-filters")
    page.wait_for_selector("#view-selection:not([hidden])")
    page.wait_for_function("document.querySelectorAll('#distant-list li[data-id]').length === 5"
                           " && document.querySelectorAll('#closest-list li[data-id]').length === 5")
    assert page.locator("#projection-plot .scatterlayer path.point").count() >= 300
    state = api.get("/api/selection").json()
    assert state["current"]["selected"] == [proposal]
    distant = [r["id"] for r in state["current"]["recommendation"]["most_distant"]]
    closest = [r["id"] for r in state["current"]["recommendation"]["closest"]]
    assert [page.get_attribute(f"#distant-list li:nth-child({i + 1})", "data-id") for i in range(5)] == distant
    assert [page.get_attribute(f"#closest-list li:nth-child({i + 1})", "data-id") for i in range(5)] == closest
    assert page.locator("#stopping-table tbody tr").count() == 1
    # cards: reachable by keyboard, each Mark button named after its image
    names = page.eval_on_selector_all("#distant-list li[data-id] button", "(bs) => bs.map((b) => b.getAttribute('aria-label'))")
    assert names == [f"Mark image {i}" for i in distant]
    assert page.get_attribute("#distant-list li[data-id]", "tabindex") == "0"

    # ---- click a point of the projection: its heatmap is shown
    target, x, y = page.evaluate(ISOLATED_POINT)
    assert target and target != page.inner_text("#detail-title").replace("Image ", "")
    page.mouse.move(x, y)
    page.mouse.click(x, y)
    page.wait_for_function(f"document.getElementById('detail-title').textContent === 'Image {target}'")
    wait_image(page, "#heatmap-img", f"/api/selection/heatmap/{target}.png")
    wait_image(page, "#detail-image", f"/api/images/{target}/png")
    shoot(page, "02-selection-round-1")

    # ---- select the next image (the most distant one) from its recommendation card
    page.click(f"#distant-list li[data-id='{distant[0]}']")
    wait_image(page, "#heatmap-img", f"/api/selection/heatmap/{distant[0]}.png")
    page.click("#mark-this")
    page.wait_for_selector("#view-editor:not([hidden])")
    page.wait_for_function(f"editor.imageId === {distant[0]!r} && editor.picture !== null")
    assert page.input_value("#image-select") == distant[0]
    assert [s["image_id"] for s in api.get("/api/selection").json()["selected"]] == [proposal, distant[0]]

    # ---- second image: strokes, save; someone else saves meanwhile: conflict, reload, save again
    second = mark_in_editor(page, folder, distant[0])
    editor_shot = shoot(page, "03-marker-editor-second-image")
    page.click("#save-markers")
    page.wait_for_function("document.getElementById('marker-version').textContent === 'version 1'")
    other = second.copy()
    other[:3, :3] = 1
    assert api.put(f"/api/images/{distant[0]}/markers", json=marker_body(other, 1, author="colleague")).status_code == 200
    draw(page, 0, [(1, 0), (1, 6)])
    page.click("#save-markers")
    page.wait_for_selector("#conflict-banner:not([hidden])")
    assert "Version 2" in page.inner_text("#conflict-text")
    page.click("#conflict-reload")
    page.wait_for_function("document.getElementById('marker-version').textContent === 'version 2'")
    np.testing.assert_array_equal(page_labels(page).reshape(other.shape), other)
    assert page.is_hidden("#conflict-banner")

    # ---- second round
    page.click("#learn-filters")
    page.wait_for_function("document.querySelectorAll('#stopping-table tbody tr').length === 2")
    page.wait_for_function("document.querySelectorAll('#distant-list li[data-id]').length === 5")
    assert api.get("/api/selection").json()["current"]["selected"] == [proposal, distant[0]]
    stars = page.evaluate("document.getElementById('projection-plot').data[4].customdata")
    assert sorted(stars) == sorted([proposal, distant[0]])
    wait_image(page, "#heatmap-img", "/api/selection/heatmap/")
    selection_shot = shoot(page, "04-selection-round-2", full_page=True)

    # ---- model view: the adaptive decoder, its prediction over an image, the download link
    page.click("#tab-model")
    page.check("input[name=train-kind][value=adaptive]")
    page.click("#train-btn")
    page.wait_for_selector("#models-table tr[data-testid='model-row-1']")
    image_id = page.input_value("#pred-image-select")
    wait_image(page, "#prediction-img", f"/api/models/1/predictions/{image_id}.png")
    assert page.get_attribute("#download-mask", "href").endswith(f"/api/models/1/predictions/{image_id}/mask")
    assert page.get_attribute("#download-preview", "href").endswith(f"/api/models/1/predictions/{image_id}/preview.png")
    assert page.inner_text("#pred-legend").split() == ["Cytoplasm", "Nucleus"]  # the overlay's colours, named
    page.wait_for_function("document.querySelector('#pred-metrics table') !== null")
    assert "Held-out" in page.inner_text("#pred-metrics")
    shoot(page, "05-model-view")

    # ---- the sU-Net from strokes with one self-training iteration
    page.check("input[name=train-kind][value=sunet]")
    page.fill("#train-epochs", "2")
    page.fill("#train-self-training", "1")
    page.click("#train-btn")
    page.wait_for_selector("#models-table tr[data-testid='model-row-2']", timeout=180_000)
    assert "2 + 1 self-training" in page.inner_text("#models-table tr[data-testid='model-row-2']")
    record = api.get("/api/models/2").json()
    assert record["params"]["self_training"] == 1 and [i["iteration"] for i in record["params"]["iterations"]] == [0, 1]

    assert not page.errors, page.errors
    publish(selection_shot, "selection-view.png")
    publish(editor_shot, "marker-editor.png")


def test_similar_images_strip_shows_the_nearest_and_navigates(demo, page):
    """Issue 16.6: an image's detail lists its nearest images by the current descriptor; a click shows one."""
    url, _ = demo
    api = api_client(url)
    current = api.get("/api/selection").json()["current"]
    if current is None:
        pytest.skip("needs the selection rounds the selection-loop test runs")
    image_id = current["recommendation"]["closest"][0]["id"]
    page.goto(url + "#selection")
    page.wait_for_selector("body[data-ready='1']")
    page.click(f"#closest-list li[data-id='{image_id}']")
    page.wait_for_selector("[data-testid='similar-0']")
    expected = [hit["id"] for hit in api.get(f"/api/selection/similar/{image_id}", params={"k": 6}).json()["similar"]]
    shown = page.eval_on_selector_all("#similar-list li", "items => items.map((item) => item.dataset.id)")
    assert shown == expected and image_id not in shown and len(shown) == 6
    page.click("[data-testid='similar-0']")
    page.wait_for_function(f"document.getElementById('detail-title').textContent === 'Image {expected[0]}'")
    page.wait_for_function(f"document.querySelector('#similar-list li') && "
                           f"!Array.from(document.querySelectorAll('#similar-list li')).some((li) => li.dataset.id === {expected[0]!r})")
    assert not page.errors, page.errors


def test_volume_editor_slices_and_axes(tmp_path, page):
    """3D: the slice slider and the axis choice address the right voxels of the saved markers."""
    from hitlseg.server import create_app
    from hitlseg.server.testing import serve_in_thread
    from tests.helpers import write_nifti

    rng = np.random.default_rng(0)
    for case in ("case1", "case2"):
        write_nifti(tmp_path / "data" / case / "flair.nii.gz", rng.integers(0, 500, (8, 30, 40)).astype(np.int16))
    with Project.init(tmp_path / "project", dataset=tmp_path / "data") as project, \
            serve_in_thread(create_app(project, classes=1)) as url:
        page.goto(f"{url}/#editor/case1")
        page.wait_for_selector("body[data-ready='1']")
        page.wait_for_function("editor.imageId === 'case1' && editor.picture !== null")
        assert page.is_visible("#slice-controls") and page.is_visible("#slice-slider")
        assert page.evaluate("[editor.rows, editor.cols, editor.slice]") == [30, 40, 4]  # middle axial slice
        page.select_option("#axis-select", "1")
        page.wait_for_function("editor.axis === 1 && editor.rows === 8 && editor.cols === 40")
        page.evaluate("(() => { const s = document.getElementById('slice-slider'); s.value = 11;"
                      " s.dispatchEvent(new Event('input')); })()")
        page.wait_for_function("editor.slice === 11 && editor.pictures.has('1:11')")
        assert page.inner_text("#slice-label") == "12 / 30"
        page.click("#zoom-fit")
        page.click("#brush-size")  # focus elsewhere, then a 1-pixel brush
        page.evaluate("editor.setSize(1)")
        draw(page, 1, [(5, 10), (5, 30)])  # class 1 along row 5 (depth) of coronal slice 11
        page.click("#save-markers")
        page.wait_for_function("document.getElementById('marker-version').textContent === 'version 1'")
        with api_client(url) as api:
            markers = markers_of(api.get("/api/images/case1/markers").json())
        assert markers.shape == (8, 30, 40)
        marked = np.argwhere(markers > 0)
        assert set(markers[markers > 0].tolist()) == {2}  # class 1 is label 2
        assert set(marked[:, 0]) == {5} and set(marked[:, 1]) == {11}  # depth 5, row 11: that coronal slice
        assert marked[:, 2].min() == 10 and marked[:, 2].max() == 30
        page.select_option("#axis-select", "2")  # the sagittal view through column 20 crosses the stroke
        page.evaluate("(() => { const s = document.getElementById('slice-slider'); s.value = 20;"
                      " s.dispatchEvent(new Event('input')); })()")
        page.wait_for_function("editor.axis === 2 && editor.slice === 20 && editor.pictures.has('2:20')")
        alpha = page.evaluate("Array.from(editor.overlayData.data).filter((v, i) => i % 4 === 3 && v > 0).length")
        assert alpha == 1  # one voxel of the stroke in this slice


def test_the_cam_of_a_volume_follows_the_editor_slice(tmp_path, page):
    """3D: the CAM overlay shows the slice and axis the editor shows, refreshed as they change."""
    from hitlseg.server import create_app
    from hitlseg.server.testing import serve_in_thread, wait_job
    from tests.helpers import write_nifti

    rng = np.random.default_rng(0)
    cases = [f"case{k}" for k in range(4)]
    for k, case in enumerate(cases):
        volume = rng.integers(0, 100, (8, 30, 40)) + (400 if k % 2 else 0)
        write_nifti(tmp_path / "data" / case / "flair.nii.gz", volume.astype(np.int16))
    with Project.init(tmp_path / "project", dataset=tmp_path / "data") as project, \
            serve_in_thread(create_app(project, classes=1, prepare=False)) as url:
        with api_client(url) as api:
            for k, case in enumerate(cases):
                assert api.put(f"/api/weak/labels/{case}", json={"label": "bright" if k % 2 else "dark"}).status_code == 200
            job = wait_job(api, api.post("/api/weak/train", json={"epochs": 2}).json()["id"])
            assert job["state"] == "done", job
        page.goto(f"{url}/#editor/case1")
        page.wait_for_selector("body[data-ready='1']")
        page.wait_for_function("editor.imageId === 'case1' && editor.picture !== null")
        page.wait_for_function("document.querySelector('#image-class-predicted').innerText.includes('classifier:')")
        page.check("#cam-toggle")
        page.wait_for_function("document.querySelector('#cam-img').src.includes('slice=4&axis=0')")
        page.select_option("#axis-select", "1")
        page.evaluate("(() => { const s = document.getElementById('slice-slider'); s.value = 11;"
                      " s.dispatchEvent(new Event('input')); })()")
        page.wait_for_function("document.querySelector('#cam-img').src.includes('slice=11&axis=1')")
        page.wait_for_function("document.querySelector('#cam-img').complete && "
                               "document.querySelector('#cam-img').naturalWidth === 40")
        assert not page.errors, page.errors


def test_improve_view_corrects_a_prediction_and_retrains(demo, page):
    """Improve: propose the next image, start from the prediction, correct it with a stroke, retrain, see the round."""
    url, folder = demo
    api = api_client(url)
    if not any(m["kind"] == "sunet" for m in api.get("/api/models").json()["models"]):
        pytest.skip("needs the sU-Net the selection-loop test trains")
    page.goto(url + "#improve")
    page.wait_for_selector("body[data-ready='1']")
    page.wait_for_selector("#view-improve:not([hidden])")
    page.wait_for_function("document.querySelectorAll('#imp-model option').length >= 1")
    model_id = int(page.input_value("#imp-model"))
    page.select_option("#imp-strategy", "entropy")
    page.click("#imp-propose")
    page.wait_for_selector("[data-testid='imp-proposed-id']")
    proposal = api.get("/api/active").json()["proposal"]
    target = proposal["proposals"][0]["image_id"]
    assert page.inner_text("[data-testid='imp-proposed-id']") == target and proposal["model_id"] == model_id
    assert target not in api.get("/api/selection").json()["current"]["selected"]
    wait_image(page, "#imp-prediction", f"/api/models/{model_id}/predictions/{target}.png")
    wait_image(page, "#imp-uncertainty", f"/api/active/uncertainty/{model_id}/{target}.png")
    improve_shot = shoot(page, "06-improve-view", full_page=True)

    # start from the prediction, correct it with one stroke on the true background, save
    page.click("#imp-accept")
    page.wait_for_selector("#view-editor:not([hidden])")
    page.wait_for_function(f"editor.imageId === {target!r} && editor.picture !== null && editor.version === 1")
    accepted = page_labels(page)
    stored = api.get(f"/api/images/{target}/markers").json()
    assert stored["version"] == 1 and (accepted > 0).sum() == stored["n_marked"] > 0  # the prediction's confident pixels
    with Project.open(folder, collect_garbage=False) as project:
        mask = project.mask(target)
    background = [line for line in strokes(mask) if line[0] == 0]
    assert background
    draw(page, 0, background[0][1][:10])
    page.click("#save-markers")
    page.wait_for_function("document.getElementById('marker-version').textContent === 'version 2'")
    page.wait_for_function("() => fetch('/api/active').then((r) => r.json()).then((d) => d.effort.seconds > 0)")

    # review: the graph cut under the strokes becomes the accepted mask of version 2
    page.click("#tab-improve")
    page.wait_for_selector("#imp-review:not([disabled])")
    page.click("#imp-review")
    wait_image(page, "#imp-accepted", f"/api/active/accepted/{target}.png?v=2")
    assert api.get("/api/active").json()["accepted"] == {target: 2}
    assert "version 2" in page.inner_text("#imp-accepted-caption")

    # retrain: a new model continues the old one and appears as the next round
    page.fill("#imp-epochs", "1")
    before = len(api.get("/api/active").json()["rounds"])
    page.click("#imp-retrain")
    page.wait_for_function("document.querySelector('#imp-model option') && "
                           "document.querySelector('#imp-model option').textContent.includes('round 1')", timeout=TIMEOUT_MS)
    rounds = api.get("/api/active").json()["rounds"]
    assert len(rounds) == before + 1 and rounds[-1]["parent"] == model_id and rounds[-1]["round"] == 1
    assert target in api.get(f"/api/models/{rounds[-1]['model_id']}").json()["params"]["images"]
    assert api.get(f"/api/models/{rounds[-1]['model_id']}").json()["params"]["accepted"] == {target: 2}
    page.wait_for_function("document.querySelectorAll('#imp-chart .scatterlayer .trace').length >= 1")

    # retrain from scratch (the button's recipe, shortened here): a fresh model of the same round
    def shorter(route):
        route.continue_(post_data=json.dumps({**json.loads(route.request.post_data), "epochs": 1, "self_training": 1}))

    page.route("**/api/active/fresh", shorter)
    try:
        page.click("#imp-fresh")
        page.wait_for_function("document.querySelector('#imp-model option') && "
                               "document.querySelector('#imp-model option').textContent.includes('from scratch')",
                               timeout=TIMEOUT_MS)
    finally:  # the page serves the module's later tests
        page.unroute("**/api/active/fresh", shorter)
    fresh = api.get("/api/active").json()["rounds"]
    assert len(fresh) == len(rounds) + 1 and fresh[-1]["fresh"] and fresh[-1]["round"] == 1
    assert fresh[-1]["parent"] == rounds[-1]["model_id"]
    assert api.get(f"/api/models/{fresh[-1]['model_id']}").json()["params"]["accepted"] == {target: 2}

    # after a reload the view shows the same proposal and rounds
    page.reload()
    page.wait_for_selector("body[data-ready='1']")
    page.wait_for_selector("[data-testid='imp-proposed-id']")
    assert page.inner_text("[data-testid='imp-proposed-id']") == target
    assert not page.errors, page.errors
    publish(improve_shot, "improve-view.png")


def test_api_docs_render_the_openapi_document_in_chromium(tmp_path, page):
    """/docs (Swagger UI from an installed package) renders the OpenAPI 3.1 document through the token
    guard: the operations appear and open, nothing is loaded from another site, no error is logged."""
    from hitlseg.server import create_app
    from hitlseg.server.testing import demo_project, serve_in_thread

    token = "docs-token-0123456789"
    with demo_project(tmp_path / "project", n=2) as project, \
            serve_in_thread(create_app(project, token=token, prepare=False)) as url:
        schema = httpx.get(f"{url}/openapi.json", headers={"Authorization": f"Bearer {token}"}).json()
        assert schema["openapi"].startswith("3.1")
        operations = sum(1 for item in schema["paths"].values() for method in item if method in
                         ("get", "put", "post", "delete", "patch", "head", "options"))
        requested, first_error = [], len(page.errors)

        def record(request):
            requested.append(request.url)

        page.on("request", record)
        try:
            page.goto(f"{url}/docs?token={token}")
            # the operations, or what Swagger UI shows when it cannot read the document (4.x on 3.1)
            page.wait_for_selector(".swagger-ui .opblock, .swagger-ui .version-pragma, .swagger-ui .errors-wrapper",
                                   timeout=60_000)
            assert "Unable to render this definition" not in page.inner_text("body")
            assert page.locator(".swagger-ui .version-pragma, .swagger-ui .errors-wrapper").count() == 0
            summary = page.locator(".opblock-get .opblock-summary-path[data-path='/api/images']")
            summary.wait_for()
            assert "hitlseg" in page.inner_text(".swagger-ui .info .title")
            assert "OAS 3.1" in page.inner_text(".swagger-ui .info")
            assert page.locator(".opblock").count() == operations
            summary.click()  # open it: its parameters and responses come from the document
            page.wait_for_selector(".opblock.is-open .responses-wrapper")
            assert page.locator(".opblock.is-open").count() == 1
            page.screenshot(path=str(ARTIFACTS / "07-api-docs.png"))
        finally:
            page.remove_listener("request", record)
            page.context.clear_cookies()  # the token cookie is for this server only
        assert requested and all(r.startswith(url + "/") for r in requested), requested  # no CDN, no validator
        assert any(r.endswith("/static/vendor/swagger/swagger-ui-bundle.js") for r in requested)
        assert not page.errors[first_error:], page.errors[first_error:]


def open_editor(page, url: str, image_id: str) -> None:
    page.goto(f"{url}#editor/{image_id}")
    page.wait_for_selector("body[data-ready='1']")
    page.wait_for_function(f"editor.imageId === {image_id!r} && editor.picture !== null")
    page.wait_for_selector("#view-editor:not([hidden])")


def test_double_save_is_one_version_and_a_real_conflict_merges_both_edits(demo, page):
    """Issue 12.2: a tab's own saves are serialised; two tabs editing one version get keep / take / merge."""
    url, folder = demo
    api = api_client(url)
    with Project.open(folder, collect_garbage=False) as project:
        image_id = project.image_ids()[-1]
        mask = project.mask(image_id)
    lines = {label: points for label, points in strokes(mask)}
    open_editor(page, url, image_id)
    draw(page, 0, lines[0][:12])
    draw(page, 2, lines[2][:8])
    puts = []
    page.on("request", lambda r: puts.append(r.url) if r.method == "PUT" and "/markers" in r.url else None)
    page.dblclick("#save-markers")  # a double click: one version, no conflict with oneself
    page.evaluate("editor.save()")
    page.wait_for_function("editor.version === 1 && !editor.dirty")
    page.wait_for_timeout(300)
    assert api.get(f"/api/images/{image_id}/markers").json()["version"] == 1
    assert page.is_hidden("#conflict-banner") and len(puts) <= 1
    page.keyboard.press("Control+s")  # nothing to save: Ctrl+S does what the disabled button does
    page.wait_for_timeout(300)
    assert len(puts) <= 1 and api.get(f"/api/images/{image_id}/markers").json()["version"] == 1

    # a second person (another browser context) saves a stroke on version 1 first
    other_context = page.context.browser.new_context(viewport={"width": 1360, "height": 900})
    try:
        other = other_context.new_page()
        other.set_default_timeout(TIMEOUT_MS)
        open_editor(other, url, image_id)
        draw(other, 1, lines[1][:8])
        other.click("#save-markers")
        other.wait_for_function("editor.version === 2 && !editor.dirty")
    finally:
        other_context.close()
    theirs = markers_of(api.get(f"/api/images/{image_id}/markers").json())

    # my next stroke meets the conflict; merge keeps both edits, then my save lands on version 3
    draw(page, 0, lines[0][-12:])
    mine = page_labels(page).reshape(mask.shape)
    page.click("#save-markers")
    page.wait_for_selector("#conflict-banner:not([hidden])")
    assert "Version 2" in page.inner_text("#conflict-text")
    page.click("#conflict-merge")
    page.wait_for_function("document.getElementById('conflict-banner').dataset.merged !== undefined")
    merged = page_labels(page).reshape(mask.shape)
    assert ((theirs == 2) <= (merged == 2)).all() and ((mine == 1) <= (merged == 1) | (theirs > 0)).all()
    page.click("#save-markers")
    page.wait_for_function("editor.version === 3 && !editor.dirty")
    stored = markers_of(api.get(f"/api/images/{image_id}/markers").json())
    assert (stored == merged).all() and (stored == 2).any() and (stored == 3).any() and (stored == 1).any()
    assert not page.errors, page.errors


def test_jobs_reappear_after_a_reload_and_say_when_they_are_ready(demo, page):
    """Issue 12.5: a training job started elsewhere shows with its progress after a reload, then 'ready'."""
    url, folder = demo
    api = api_client(url)
    if not any(i["marker_version"] for i in api.get("/api/images").json()["images"]):
        pytest.skip("needs the markers the other browser tests save")
    page.goto(url + "#model")
    page.wait_for_selector("body[data-ready='1']")
    job = api.post("/api/models/train", json={"kind": "sunet", "epochs": 3, "self_training": 1}).json()
    page.reload()
    page.wait_for_selector("body[data-ready='1']")
    page.wait_for_selector("#job-status:not([hidden])")
    assert "sU-Net" in page.inner_text("#job-label")
    page.wait_for_function("document.getElementById('toast').textContent.includes('ready')", timeout=TIMEOUT_MS)
    assert api.get(f"/api/jobs/{job['id']}").json()["state"] == "done"
    assert page.is_hidden("#job-status")
    assert not page.errors, page.errors


def test_back_and_forward_move_between_views_and_images(demo, page):
    """Issue 12.7: #editor/ID links open that image; back and forward follow the views."""
    url, folder = demo
    with Project.open(folder, collect_garbage=False) as project:
        first, second = project.image_ids()[3:5]
    open_editor(page, url, first)
    page.click("#tab-model")
    page.wait_for_selector("#view-model:not([hidden])")
    page.go_back()
    page.wait_for_selector("#view-editor:not([hidden])")
    page.evaluate(f"location.hash = '#editor/{second}'")
    page.wait_for_function(f"editor.imageId === {second!r}")
    page.go_back()
    page.wait_for_function(f"editor.imageId === {first!r}")
    page.go_forward()
    page.wait_for_function(f"editor.imageId === {second!r}")
    # the job bar's time estimate (issue 12.7), from the time spent and the share done
    assert page.evaluate("timeLeft({progress: {fraction: 0.5}, elapsed_s: 30})") == " · about 30 s left"
    assert page.evaluate("timeLeft({progress: {fraction: 0.1}, elapsed_s: 60})") == " · about 9 min left"
    assert page.evaluate("timeLeft({progress: {fraction: 0.01}, elapsed_s: 3})") == ""
    assert not page.errors, page.errors


def test_small_screens_keep_tabs_and_toolbar_in_view(demo, page):
    """Issue 12.7: at 390 px wide the tabs and the editor's toolbar stay on screen; at 800x600 the hint
    gives way to the canvas."""
    url, folder = demo
    with Project.open(folder, collect_garbage=False) as project:
        image_id = project.image_ids()[5]
    try:
        page.set_viewport_size({"width": 390, "height": 844})
        open_editor(page, url, image_id)
        for selector in ("#tab-model", "#tab-improve", "#save-markers", "#learn-filters"):
            box = page.locator(selector).bounding_box()
            assert box and box["x"] >= 0 and box["x"] + box["width"] <= 390 + 1, (selector, box)
        page.set_viewport_size({"width": 800, "height": 600})
        page.wait_for_timeout(100)
        assert page.is_hidden("#editor-hint")
    finally:
        page.set_viewport_size({"width": 1360, "height": 900})
    assert not page.errors, page.errors


def test_live_mode_segments_after_each_stroke_and_accepts_as_markers(demo, page):
    """Issue 15.6a: in Live mode every stroke updates a graph-cut overlay; Accept makes it the markers."""
    url, folder = demo
    api = api_client(url)
    with Project.open(folder, collect_garbage=False) as project:
        image_id = project.image_ids()[-5]
        mask = project.mask(image_id)
        version = project.latest_version(image_id)
    assert version == 0
    lines = {label: points for label, points in strokes(mask)}
    open_editor(page, url, image_id)
    page.check("#live-toggle")
    draw(page, 0, lines[0][:12])
    page.wait_for_function("document.getElementById('live-status').textContent.includes('draw a background and an object')")
    assert page.is_disabled("#live-accept")
    draw(page, 2, lines[2][:10])
    page.wait_for_function("editor.liveLabels !== null && !editor.liveBusy")
    assert "ms" in page.inner_text("#live-status")
    live = np.asarray(page.evaluate("Array.from(editor.liveLabels)"), np.uint8).reshape(mask.shape)
    marks = page_labels(page).reshape(mask.shape)
    body = {"shape": list(mask.shape), "encoding": "uint8-zlib-base64",
            "data": page.evaluate("encodeLabels(editor.labels)")}
    answer = api.post(f"/api/images/{image_id}/live", json=body).json()
    assert np.array_equal(live, decode_labels(answer["data"], mask.shape))  # the overlay is the server's cut
    assert np.array_equal(live[marks > 0], marks[marks > 0] - 1)
    assert (live == 2).sum() > (marks == 3).sum()  # the nucleus grew beyond its stroke
    draw(page, 1, lines[1][:10])  # another stroke: a new cut with the cytoplasm
    page.wait_for_function("editor.liveLabels !== null && !editor.liveBusy && editor.liveLabels.includes(1)")
    shot = ARTIFACTS / "live-mode.png"
    page.screenshot(path=str(shot))
    publish(shot, "live-mode.png")
    before = page_labels(page)
    page.click("#live-accept")
    accepted = page_labels(page)
    assert (accepted > 0).all() and page.evaluate("editor.dirty")
    assert np.array_equal(accepted[before > 0], before[before > 0])  # the person's strokes stay
    page.click("#undo")  # one step takes the whole acceptance back
    assert np.array_equal(page_labels(page), before)
    page.click("#redo")
    page.click("#save-markers")
    page.wait_for_function(f"editor.version === {version + 1} && !editor.dirty")
    with Project.open(folder, collect_garbage=False) as project:
        saved, _ = project.load_markers(image_id)
    assert (saved > 0).all()
    page.uncheck("#live-toggle")
    assert page.evaluate("editor.liveLabels") is None
    assert not page.errors, page.errors


def test_near_duplicates_are_named_beside_the_recommendations(tmp_path, page):
    """Issue 20.3 in the web app: with wbc1 image 112 selected, its stored twin 139 is left out of both
    lists and named as its near-duplicate, a link that opens it."""
    from hitlseg.robot import Robot
    from hitlseg.server import create_app
    from hitlseg.server.testing import demo_project, serve_in_thread, wait_job

    ids = [f"{i:03d}" for i in range(105, 118)] + ["139"]
    with demo_project(tmp_path / "project", ids=ids) as project, serve_in_thread(create_app(project)) as url:
        project.save_markers("112", Robot(0).mark(project.mask("112"), key="112"), 0, author="robot")
        api = api_client(url)
        job = api.post("/api/selection/learn").json()
        assert wait_job(api, job["id"], timeout=120)["state"] == "done"
        page.goto(url)
        page.wait_for_selector("body[data-ready='1']")
        page.wait_for_selector("#duplicates-note:not([hidden])")
        assert "139 of 112" in page.inner_text("#duplicates-note")
        listed = page.eval_on_selector_all("#distant-list li[data-id], #closest-list li[data-id]",
                                           "items => items.map((item) => item.dataset.id)")
        assert listed and "139" not in listed
        page.click("#duplicates-note a[data-id='139']")
        page.wait_for_function("document.body.innerText.includes('near-duplicate of 112')")
        assert not page.errors, page.errors


def test_predicted_quality_is_shown_and_orders_the_images_worst_first(tmp_path, page):
    """With ``--quality-model``, the Model view shows each prediction's predicted quality and the
    "Worst first" button reorders the image picker by it (issue 16.6)."""
    from hitlseg.quality import train_quality
    from hitlseg.server import create_app
    from hitlseg.server.testing import marked_demo_project, serve_in_thread, wait_job

    root = marked_demo_project(tmp_path / "project", n=6)
    with Project.open(root) as project:
        ids = project.image_ids()
        quality = train_quality([project.image(i) for i in ids], [project.mask(i) for i in ids], epochs=1,
                                samples_per_image=2, size=32, seed=0).save(tmp_path / "quality.pt")
        with serve_in_thread(create_app(project, prepare=False, eval_limit=2, quality_model=quality)) as url:
            job = httpx.post(f"{url}/api/models/train", json={"kind": "adaptive"}).json()
            assert wait_job(api_client(url), job["id"], timeout=120)["state"] == "done"
            page.goto(f"{url}#model")
            page.wait_for_selector("body[data-ready='1']")
            first_error = len(page.errors)  # after the page left the previous test's (stopped) server
            page.click("#tab-model")
            page.wait_for_selector("#pred-rank:not([hidden])")
            page.wait_for_selector("[data-testid=pred-quality]")
            assert "no ground truth read" in page.inner_text("#pred-metrics")
            page.click("#pred-rank")
            page.wait_for_function("document.querySelector('#pred-image-select').options[0].text.includes('predicted Dice')")
            shown = page.evaluate("[...document.querySelector('#pred-image-select').options].map((o) => o.text)")
            dice = [float(text.split("predicted Dice ")[1].rstrip(")")) for text in shown]
            assert len(dice) == 6 and dice == sorted(dice)
            assert page.input_value("#pred-image-select") == shown[0].split()[0]
            assert not page.errors[first_error:], page.errors[first_error:]


def test_image_classes_train_a_classifier_and_show_its_cam(tmp_path, page):
    """Issue 17 in the web app: a person gives images their class in the editor, trains the image
    classifier (a job) and sees its prediction and class activation map over the open image."""
    from hitlseg.server import create_app
    from hitlseg.server.testing import demo_project, serve_in_thread
    from hitlseg.weak.synthetic import area_labels

    with demo_project(tmp_path / "project", n=6) as project, \
            serve_in_thread(create_app(project, prepare=False)) as url:
        ids = project.image_ids()
        labels = area_labels({i: float(np.mean(project.mask(i) == 2)) for i in ids})
        api = api_client(url)
        for image_id in ids[1:]:  # the first one is labelled in the page
            assert api.put(f"/api/weak/labels/{image_id}", json={"label": labels[image_id]}).status_code == 200
        page.goto(f"{url}#editor/{ids[0]}")
        page.wait_for_selector("body[data-ready='1']")
        first_error = len(page.errors)
        page.wait_for_function(f"document.querySelector('#image-select').value === '{ids[0]}'")
        assert page.input_value("#image-class") == "" and page.is_disabled("#cam-toggle")
        page.fill("#image-class", labels[ids[0]])
        page.click("#image-class-set")
        page.wait_for_function(f"document.querySelector('#toast').innerText.includes('class {labels[ids[0]]}')")
        assert api.get("/api/weak").json()["labels"] == labels
        page.click("#train-classifier")
        page.wait_for_function("document.querySelector('#image-class-predicted').innerText.includes('classifier:')",
                               timeout=120_000)
        page.check("#cam-toggle")
        page.wait_for_selector("#cam-panel:not([hidden])")
        page.wait_for_function("document.querySelector('#cam-img').complete && "
                               "document.querySelector('#cam-img').naturalWidth > 0")
        assert "where the classifier sees" in page.inner_text("#cam-caption")
        page.evaluate(f"window.location.hash = '#editor/{ids[1]}'")
        page.wait_for_function(f"document.querySelector('#image-class').value === '{labels[ids[1]]}'")
        page.wait_for_function(f"document.querySelector('#cam-img').src.includes('/cam/{ids[1]}.png')")
        assert not page.errors[first_error:], page.errors[first_error:]
