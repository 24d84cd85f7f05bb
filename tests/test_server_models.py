"""Server: the models router — training (adaptive decoder and sU-Net from strokes + self-training) as jobs,
predictions overlaid on images, mask download in the input format, metrics against ground truth."""

from __future__ import annotations

import io
import re

import numpy as np
import pytest
from PIL import Image

from hitlseg.errors import InputError
from hitlseg.io.preview import class_color
from hitlseg.project import Project
from hitlseg.robot import Robot
from hitlseg.server import create_app
from hitlseg.server.testing import client, demo_project, marked_demo_project, marker_body, wait_job
from hitlseg.server.training import PSEUDO_LABELS

N = 8


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    """An 8-image demo project with two images marked by the robot."""
    return marked_demo_project(tmp_path_factory.mktemp("models") / "project", n=N)


@pytest.fixture(scope="module")
def http(root):
    with Project.open(root) as project, client(create_app(project, eval_limit=4, prepare=False)) as c:
        yield c


@pytest.fixture(scope="module")
def trained(http):
    """Model ids of one adaptive model and one sU-Net, trained through the API."""
    ids = {}
    for kind, extra in (("adaptive", {}), ("sunet", {"epochs": 2})):
        job = http.post("/api/models/train", json={"kind": kind, **extra})
        assert job.status_code == 202, job.text
        done = wait_job(http, job.json()["id"], timeout=240)
        assert done["state"] == "done", done["error"]
        ids[kind] = done["result"]["id"]
    return ids


def test_training_records_models(http, trained, root):
    models = {m["id"]: m for m in http.get("/api/models").json()["models"]}
    adaptive, sunet = models[trained["adaptive"]], models[trained["sunet"]]
    assert adaptive["kind"] == "flim" and sunet["kind"] == "sunet"
    project = Project.open(root)
    marked = {i: 1 for i in project.image_ids()[:2]}
    for model in (adaptive, sunet):
        assert model["params"]["images"] == marked
        assert model["params"]["n_classes"] == 2
        metrics = model["metrics"]
        assert metrics["images"] == 4  # eval_limit held-out images, none of them marked
        assert set(metrics["dice"]) == {"1", "2"} and 0 <= metrics["mean_dice"] <= 1
    # the one default (hitlseg.defaults.DEFAULT_DECODER, 'auto') chose a rule by the markers and says why
    scores = adaptive["params"]["decoder_marker_recall"]
    assert adaptive["params"]["decoder"] == max(scores, key=scores.get) and "weights" not in scores  # 2 classes
    assert sunet["params"]["epochs"] == 2 and sunet["params"]["self_training"] == 2
    iterations = sunet["params"]["iterations"]
    assert [i["iteration"] for i in iterations] == [0, 1, 2]
    assert iterations[0]["pool_images"] == 0 and iterations[1]["pool_images"] >= 1  # 6 unmarked images
    assert 0 < iterations[1]["machine_labelled"] <= 1
    assert sunet["params"]["pseudo_labels"] == PSEUDO_LABELS and "pseudo_labels" not in adaptive["params"]
    assert project.model_path(sunet["id"]).is_file()
    assert [r["status"] for r in project.runs(kind="server:train-sunet")] == ["done"]
    assert http.get(f"/api/models/{sunet['id']}").json()["id"] == sunet["id"]


def test_adaptive_decoder_choice(http):
    job = http.post("/api/models/train", json={"kind": "adaptive", "decoder": "weights"}).json()
    done = wait_job(http, job["id"], timeout=120)
    assert done["state"] == "done", done["error"]
    assert done["result"]["params"]["decoder"] == "weights"


def test_prediction_overlay_and_mask_download(http, trained, root):
    project = Project.open(root)
    image_id = project.image_ids()[5]
    shape = tuple(project.image_info(image_id)["shape"])
    for model_id in trained.values():
        png = http.get(f"/api/models/{model_id}/predictions/{image_id}.png")
        assert png.status_code == 200 and png.headers["content-type"] == "image/png"
        overlay = np.asarray(Image.open(io.BytesIO(png.content)))
        assert overlay.shape == shape + (3,)
        plain = np.asarray(Image.open(io.BytesIO(http.get(f"/api/images/{image_id}/png").content)))
        download = http.get(f"/api/models/{model_id}/predictions/{image_id}/mask")
        assert download.status_code == 200 and download.headers["content-type"] == "image/png"
        name = re.search(r'filename="([^"]+)"', download.headers["content-disposition"]).group(1)
        assert name == f"{image_id}_model{model_id}.png"  # the input's format (PNG)
        mask = np.asarray(Image.open(io.BytesIO(download.content)))
        assert mask.shape == shape and mask.dtype == np.uint8 and set(np.unique(mask)) <= {0, 1, 2}
        assert (mask > 0).any()
        # the overlay differs from the plain image exactly where something was predicted (or outlined)
        changed = np.any(overlay != plain, axis=-1)
        assert changed[mask > 0].mean() > 0.95 and not changed[mask == 0].any()
        # the colour preview beside the label file: each class in its palette colour, background black
        preview = http.get(f"/api/models/{model_id}/predictions/{image_id}/preview.png")
        assert preview.status_code == 200 and preview.headers["content-type"] == "image/png"
        assert f'filename="{image_id}_model{model_id}.preview.png"' in preview.headers["content-disposition"]
        colours = np.asarray(Image.open(io.BytesIO(preview.content)))
        assert colours.shape == shape + (3,)
        for c in np.unique(mask):
            assert (colours[mask == c] == (class_color(c) if c else (0, 0, 0))).all()


def test_metrics_per_image(http, trained, root):
    project = Project.open(root)
    image_id = project.image_ids()[6]
    data = http.get(f"/api/models/{trained['sunet']}/metrics", params={"image_id": image_id}).json()
    assert data["metrics"]["images"] == 4
    assert data["image"]["has_mask"] is True
    from hitlseg.metrics import dice_per_class

    mask = np.asarray(Image.open(io.BytesIO(http.get(f"/api/models/{trained['sunet']}/predictions/{image_id}/mask").content)))
    expected = dice_per_class(mask, project.mask(image_id), labels=[1, 2])
    assert data["image"]["dice"] == pytest.approx({str(k): v for k, v in expected.items()})
    assert "image" not in http.get(f"/api/models/{trained['sunet']}/metrics").json()


@pytest.mark.parametrize("path, status", [
    ("/api/models/999", 404), ("/api/models/999/metrics", 404), ("/api/models/abc", 422),
    ("/api/models/999/predictions/{image}.png", 404), ("/api/models/{model}/predictions/nope.png", 404),
    ("/api/models/{model}/predictions/nope/mask", 404), ("/api/models/{model}/metrics?image_id=nope", 404),
    ("/api/models/{model}/predictions/nope/preview.png", 404), ("/api/models/999/predictions/{image}/preview.png", 404),
])
def test_bad_ids(http, trained, root, path, status):
    image_id = Project.open(root).image_ids()[0]
    response = http.get(path.format(image=image_id, model=trained["adaptive"]))
    assert response.status_code == status and "error" in response.json()


@pytest.mark.parametrize("body", [{"kind": "random-forest"}, {"kind": "sunet", "epochs": 0}, {"kind": "sunet", "epochs": "5"},
                                  {"kind": "adaptive", "decoder": "magic"}, {}, {"kind": "sunet", "lr": 1}])
def test_bad_training_requests(http, body):
    response = http.post("/api/models/train", json=body)
    assert response.status_code == 422 and "error" in response.json()


def test_training_needs_markers(tmp_path):
    with demo_project(tmp_path / "p", n=3) as project, client(create_app(project, prepare=False)) as http:
        response = http.post("/api/models/train", json={"kind": "adaptive"})
        assert response.status_code == 400 and "no image has markers" in response.json()["error"]
        first, second = project.image_ids()[:2]
        only_background = np.zeros(project.image_info(first)["shape"], np.uint8)
        only_background[5:8, 5:40] = 1
        assert http.put(f"/api/images/{first}/markers", json=marker_body(only_background, 0)).status_code == 200
        refused = http.post("/api/models/train", json={"kind": "adaptive"})  # refused before any job starts
        assert refused.status_code == 400, refused.text
        assert refused.json()["error"] == (f"train: the marked images ({first!r}) together hold only background "
                                           "strokes; mark at least one object class (class 1, class 2) on at least "
                                           "one of them")
        assert http.get("/api/jobs").json()["jobs"] == [] and project.runs() == []
        service = http.app.state.hitlseg.models  # the job checks too
        with pytest.raises(InputError, match="together hold only background strokes"):
            service.train("adaptive")
        # with a complete image beside it, the background-only image is a negative example: training may start
        complete = Robot(0).mark(project.mask(second), key=second)
        assert http.put(f"/api/images/{second}/markers", json=marker_body(complete, 0)).status_code == 200
        assert service.check_ready() == [first, second]
        # erasing the background-only image leaves it out
        erased = http.put(f"/api/images/{first}/markers", json=marker_body(np.zeros_like(only_background), 1))
        assert erased.status_code == 200
        assert service.check_ready() == [second]


def test_sunet_learns_from_strokes_then_pseudo_labels(root, monkeypatch):
    """The web app's learner is the library's: strokes first (unmarked pixels ignored), then the
    unmarked project images' confident pseudo-labels with the marked images' strokes on top."""
    import hitlseg.nets
    from hitlseg.pseudo import IGNORE
    from hitlseg.server.training import ModelService

    calls = []
    real_train = hitlseg.nets.train

    def spy(model, samples, val, config, **options):
        calls.append([(sample[0].copy(), sample[1].copy()) for sample in samples])  # (image, mask[, person])
        return real_train(model, samples, val, config, **options)

    monkeypatch.setattr(hitlseg.nets, "train", spy)
    with Project.open(root) as project:
        service = ModelService(project, 2, eval_limit=1)
        record = service.train("sunet", epochs=1, self_training=1)
        assert record["params"]["self_training"] == 1
        marked = list(project.latest_versions())
        assert len(calls) == 3 and len(calls[0]) == len(marked)  # strokes, expanded strokes, pseudo-labels
        for image_id, (image, mask) in zip(marked, calls[0], strict=True):
            markers, _ = project.load_markers(image_id)
            np.testing.assert_array_equal(image, project.image(image_id))
            on = markers > 0
            np.testing.assert_array_equal(mask[on], markers[on].astype(int) - 1)
            np.testing.assert_array_equal(mask[~on], IGNORE)
        # the strokes grown by a graph cut where it agrees with the first model (2D default)
        for image_id, (image, mask), (_, strokes) in zip(marked, calls[1], calls[0], strict=True):
            assert (mask != IGNORE).sum() > (strokes != IGNORE).sum()
            np.testing.assert_array_equal(mask[strokes != IGNORE], strokes[strokes != IGNORE])
        # self-training: the marked images (strokes still win) and some unmarked ones
        assert len(calls[2]) > len(marked)
        for image_id, (image, mask) in zip(marked, calls[2][: len(marked)], strict=True):
            markers, _ = project.load_markers(image_id)
            on = markers > 0
            np.testing.assert_array_equal(mask[on], markers[on].astype(int) - 1)
        with pytest.raises(InputError, match="self_training"):
            service.train("sunet", epochs=1, self_training=-1)


def test_a_class_never_predicted_is_warned_about(tmp_path, monkeypatch):
    """Issue 12.6: training says which class its model never predicts on the marked images."""
    import hitlseg.server.training as training
    from hitlseg.flim import FLIMModel

    assert training.never_predicted([np.array([[0, 2]]), np.array([[2, 2]])], 2) == [1]
    assert training.never_predicted([np.array([[1, 2]])], 2) == []
    root = marked_demo_project(tmp_path / "p", n=6, marked=2)
    with Project.open(root) as project, client(create_app(project, prepare=False, classes=2,
                                                          class_names=["Cytoplasm", "Nucleus"])) as http:
        original = FLIMModel.predict

        def without_class_one(self, image, *args, **kwargs):  # a decoder that never finds class 1
            result = original(self, image, *args, **kwargs)
            result.mask[result.mask == 1] = 0
            return result

        monkeypatch.setattr(FLIMModel, "predict", without_class_one)
        job = http.post("/api/models/train", json={"kind": "adaptive", "decoder": "labels"}).json()
        done = wait_job(http, job["id"])
        assert done["state"] == "done", done["error"]
        assert any("class 1 'Cytoplasm'" in w and "never predicted" in w and "try the 'mean' decoder" in w
                   for w in done["result"]["warnings"]), done["result"]
        assert done["result"]["params"]["never_predicted"] == [1] and done["result"]["params"]["decoder"] == "labels"


# ---------------------------------------------------------------------------------- refined predictions


def test_refined_predictions_are_the_library_refinement_of_the_sunet(http, trained, root):
    from hitlseg.nets import SegModel
    from hitlseg.refine import refine

    model_id = trained["sunet"]
    image_id = Project.open(root).image_ids()[5]
    for method in ("graphcut", "crf", "levelset"):
        r = http.get(f"/api/models/{model_id}/predictions/{image_id}.png", params={"refine": method})
        assert r.status_code == 200 and r.headers["content-type"] == "image/png", r.text
    with Project.open(root) as project:
        image = project.image(image_id)
        model = SegModel.load(project.model_path(model_id))
        mask = project.mask(image_id)
    expected = refine(image, model.predict(image, postprocess="none").probabilities, "crf")
    from hitlseg.metrics import dice_per_class

    dice = dice_per_class(expected, mask, labels=[1, 2])
    got = http.get(f"/api/models/{model_id}/metrics", params={"image_id": image_id, "refine": "crf"}).json()
    assert got["image"]["dice"] == pytest.approx({str(k): v for k, v in dice.items()})


def test_refine_is_refused_for_the_adaptive_decoder_and_unknown_names(http, trained, root):
    image_id = Project.open(root).image_ids()[5]
    r = http.get(f"/api/models/{trained['adaptive']}/predictions/{image_id}.png", params={"refine": "crf"})
    assert r.status_code == 400 and "adaptive FLIM decoder" in r.json()["error"]
    r = http.get(f"/api/models/{trained['sunet']}/predictions/{image_id}.png", params={"refine": "shape"})
    assert r.status_code == 422
