"""Server: image-level labels per image (events, never overwritten), a CAM classifier trained as a job, CAM heatmaps."""

from __future__ import annotations

import numpy as np
import pytest

from hitlseg.errors import InputError
from hitlseg.project import Project
from hitlseg.server import create_app
from hitlseg.server.testing import client, demo_project, wait_job

N = 8


@pytest.fixture
def root(tmp_path):
    folder = tmp_path / "project"
    demo_project(folder, n=N).close()
    return folder


def _area_labels(project) -> dict[str, str]:
    from hitlseg.weak.synthetic import area_labels

    return area_labels({i: float(np.mean(project.mask(i) == 2)) for i in project.image_ids()})


def test_labels_classifier_and_cam_round_trip(root):
    with Project.open(root) as project, client(create_app(project, prepare=False)) as http:
        ids = project.image_ids()
        state = http.get("/api/weak").json()
        assert state["classes"] == [] and state["unlabelled"] == N and state["model"] is None
        missing = http.get(f"/api/weak/cam/{ids[0]}.png")
        assert missing.status_code == 404 and "no image classifier yet" in missing.json()["error"]
        http.put(f"/api/weak/labels/{ids[0]}", json={"label": "large"})
        refused = http.post("/api/weak/train", json={"epochs": 2})
        assert refused.status_code == 400 and "at least 2 classes" in refused.json()["error"]

        labels = _area_labels(project)
        for image_id, name in labels.items():
            answer = http.put(f"/api/weak/labels/{image_id}", json={"label": f"  {name} ", "author": "tester"})
            assert answer.status_code == 200 and answer.json()["label"] == name
        state = http.get("/api/weak").json()
        assert state["labels"] == labels and state["unlabelled"] == 0
        assert state["counts"] == {c: list(labels.values()).count(c) for c in ("large", "small")}

        job = wait_job(http, http.post("/api/weak/train", json={"epochs": 3}).json()["id"])
        assert job["state"] == "done", job
        model = http.get("/api/weak").json()["model"]
        assert model["params"]["classes"] == ["large", "small"] and model["params"]["images"] == N
        assert 0 <= model["metrics"]["training_accuracy"] <= 1
        assert all(m["kind"] != "cam" for m in http.get("/api/models").json()["models"])

        answer = http.get(f"/api/weak/classify/{ids[1]}").json()
        assert set(answer["probabilities"]) == {"large", "small"} and answer["class"] in ("large", "small")
        assert sum(answer["probabilities"].values()) == pytest.approx(1.0, abs=1e-5)
        for query in ("", "?class=small", "?method=gradcam%2B%2B"):
            png = http.get(f"/api/weak/cam/{ids[1]}.png{query}")
            assert png.status_code == 200 and png.content[:4] == b"\x89PNG", png.text
        bad = http.get(f"/api/weak/cam/{ids[1]}.png?class=medium")
        assert bad.status_code == 400 and "'medium' is not a class" in bad.json()["error"]

        removed = http.put(f"/api/weak/labels/{ids[2]}", json={"label": None})
        assert removed.status_code == 200 and ids[2] not in http.get("/api/weak").json()["labels"]
    # the labels and the classifier survive a restart; every change is kept in the event log
    with Project.open(root) as project, client(create_app(project, prepare=False)) as http:
        state = http.get("/api/weak").json()
        assert len(state["labels"]) == N - 1 and state["model"] is not None
        assert http.get(f"/api/weak/cam/{ids[1]}.png").status_code == 200
        assert len(project.events(kind="image_label")) == 1 + N + 1


@pytest.mark.parametrize("body, status, message", [
    ({"label": ""}, 400, "the class name is empty"),
    ({"label": "a,b"}, 400, "comma"),
    ({"label": "x" * 65}, 400, "at most 64 characters"),
    ({"label": 3}, 422, None),
    ({"class": "x"}, 422, None),
])
def test_bad_labels_are_refused_by_name(root, body, status, message):
    with Project.open(root) as project, client(create_app(project, prepare=False)) as http:
        answer = http.put(f"/api/weak/labels/{project.image_ids()[0]}", json=body)
        assert answer.status_code == status, answer.text
        if message:
            assert message in answer.json()["error"]
        assert project.events(kind="image_label") == []
        assert http.put("/api/weak/labels/nope", json={"label": "a"}).status_code == 404


def test_labels_csv_import_and_a_classifier_file_round_trip(root, tmp_path):
    from hitlseg.weak.labels import write_image_labels
    from hitlseg.weak.project import (image_labels, import_labels_csv, load_classifier, project_image_labels,
                                      save_classifier, train_project_classifier)

    with Project.open(root) as project:
        ids = project.image_ids()
        labels = _area_labels(project)
        write_image_labels(tmp_path / "labels.csv", {i: labels[i] for i in ids[:6]})
        assert import_labels_csv(project, tmp_path / "labels.csv") == 6
        assert image_labels(project) == {i: labels[i] for i in ids[:6]}
        write_image_labels(tmp_path / "bad.csv", {"ghost": "large"})
        with pytest.raises(InputError, match="not images of the dataset"):
            import_labels_csv(project, tmp_path / "bad.csv")
        assert len(image_labels(project)) == 6  # nothing recorded by the refused file
        read = project_image_labels(image_labels(project))
        images = {i: project.image(i) for i in read.labels}
        model = train_project_classifier(images, read, epochs=1, widths=(4, 8), norm="none")
        path = save_classifier(model, tmp_path / "cam.pt", read.classes, {"note": "test"})
        again, classes, info = load_classifier(path)
        assert classes == read.classes and info == {"note": "test"}
        x = np.stack([images[ids[0]]])
        import torch

        with torch.no_grad():
            np.testing.assert_allclose(again(torch.as_tensor(x)).numpy(), model(torch.as_tensor(x)).numpy(), atol=1e-6)
        (tmp_path / "junk.pt").write_bytes(b"not a model")
        with pytest.raises(InputError, match="cannot read the classifier file"):
            load_classifier(tmp_path / "junk.pt")


def test_project_init_imports_a_datasets_labels_csv(tmp_path, capsys):
    from hitlseg.weak.labels import write_image_labels
    from hitlseg.weak.project import image_labels
    from tests.helpers import cli_run, copy_demo

    data = copy_demo(tmp_path / "data", 4)
    ids = sorted(p.stem for p in (data / "images").iterdir())
    write_image_labels(data / "labels.csv", {i: ("a" if k % 2 else "b") for k, i in enumerate(ids)})
    code, out, err = cli_run(capsys, "project", "init", tmp_path / "p", "--dataset", data)
    assert code == 0, err
    assert "imported the image-level classes of 4 images" in out
    with Project.open(tmp_path / "p") as project:
        assert image_labels(project) == {i: ("a" if k % 2 else "b") for k, i in enumerate(ids)}


def test_project_init_refuses_a_bad_labels_csv_before_creating_anything(tmp_path, capsys):
    from tests.helpers import cli_one_line_error, copy_demo

    data = copy_demo(tmp_path / "data", 3)
    (data / "labels.csv").write_text("id,class\nghost,a\n")
    line = cli_one_line_error(capsys, "project", "init", str(tmp_path / "p"), "--dataset", str(data))
    assert "not images of the dataset" in line and "ghost" in line
    assert not (tmp_path / "p").exists() or not any((tmp_path / "p").iterdir())
