"""The project store: init/open, versioned markers with conflicts, arrays, crash safety, CLI."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest

import hitlseg
from hitlseg.cli import main
from hitlseg.datasets import DEMO_ROOT
from hitlseg.errors import ConflictError, InputError
from hitlseg.project import DB_NAME, SCHEMA_VERSION, Project
from hitlseg.project.files import is_temp_name

SRC = Path(hitlseg.__file__).resolve().parents[1]


# ------------------------------------------------------------------------------------------
# synthetic data
# ------------------------------------------------------------------------------------------


def _png(path: Path, array: np.ndarray) -> Path:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return path


def _rgb(shape, seed):
    return np.random.default_rng(seed).integers(0, 256, (*shape, 3), dtype=np.uint8)


def _mask(shape):
    mask = np.zeros(shape, np.uint8)
    mask[shape[0] // 4 : shape[0] // 2, shape[1] // 4 : shape[1] // 2] = 1
    mask[shape[0] // 2 :, shape[1] // 2 :] = 2
    return mask


@pytest.fixture
def folders(tmp_path):
    """images/: a (24x32 RGB), b (24x32 RGB), c (20x30 grey); masks/: a, b."""
    images, masks = tmp_path / "src" / "images", tmp_path / "src" / "masks"
    _png(images / "a.png", _rgb((24, 32), 0))
    _png(images / "b.png", _rgb((24, 32), 1))
    _png(images / "c.png", np.random.default_rng(2).integers(0, 256, (20, 30), dtype=np.uint8))
    _png(masks / "a.png", _mask((24, 32)))
    _png(masks / "b.png", _mask((24, 32)))
    return images, masks


@pytest.fixture
def project(tmp_path, folders):
    images, masks = folders
    with Project.init(tmp_path / "proj", images_dir=images, masks_dir=masks) as opened:
        yield opened


def _markers(shape, version):
    """Deterministic markers of a version, so that any stored version can be checked."""
    return np.random.default_rng(version).integers(0, 4, shape, dtype=np.uint8)


def _files(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


# ------------------------------------------------------------------------------------------
# init and open
# ------------------------------------------------------------------------------------------


def test_init_registers_images_in_place(tmp_path, folders):
    images, masks = folders
    project = Project.init(tmp_path / "proj", images_dir=images, masks_dir=masks, name="tiny")
    assert project.image_ids() == ["a", "b", "c"]
    assert project.name == "tiny" and len(project) == 3 and "a" in project and "zz" not in project
    a, c = project.image_info("a"), project.image_info("c")
    assert a["paths"] == [str((images / "a.png").resolve())] and a["mask_path"] == str((masks / "a.png").resolve())
    assert (a["shape"], a["channels"], a["ndim"], a["has_mask"]) == ((24, 32), 3, 2, True)
    assert (c["shape"], c["channels"], c["has_mask"]) == ((20, 30), 1, False)
    image = project.image("a")
    assert image.shape == (3, 24, 32) and image.dtype == np.float32
    np.testing.assert_array_equal(project.mask("b"), _mask((24, 32)))
    assert project.mask("c") is None
    assert project.dataset().ids == ["a", "b", "c"]
    project.close()
    assert not list((tmp_path / "proj").glob("images"))  # referenced, not copied
    with Project.open(tmp_path / "proj") as reopened:
        info = reopened.info()
    assert info["images"] == 3 and info["with_masks"] == 2 and info["schema_version"] == SCHEMA_VERSION
    assert info["marked"] == {} and info["selections"] == [] and info["copied"] is False


def test_init_copy_makes_project_self_contained(tmp_path, folders):
    import shutil

    images, masks = folders
    Project.init(tmp_path / "proj", images_dir=images, masks_dir=masks, copy=True).close()
    expected = _mask((24, 32))
    shutil.rmtree(tmp_path / "src")
    (tmp_path / "proj").rename(tmp_path / "moved")
    with Project.open(tmp_path / "moved") as project:
        assert project.image_info("a")["paths"] == [str(tmp_path / "moved" / "images" / "a.png")]
        assert project.image("c").shape == (1, 20, 30)
        np.testing.assert_array_equal(project.mask("a"), expected)


def test_init_on_bundled_demo(tmp_path):
    with Project.init(tmp_path / "demo", dataset=DEMO_ROOT) as project:
        ids = project.image_ids()
        assert len(ids) == 300 and ids[0] == "001"
        info = project.image_info("001")
        assert info["has_mask"] and info["channels"] == 3 and info["ndim"] == 2
        assert project.image("001").shape == (3, *info["shape"])
        assert set(np.unique(project.mask("001"))) <= {0, 1, 2}
        assert project.info()["with_masks"] == 300


def test_init_3d_volume_and_dataset_markers_import(tmp_path):
    import nibabel as nib

    root = tmp_path / "data"
    (root / "images").mkdir(parents=True)
    volume = np.random.default_rng(0).random((6, 8, 10)).astype(np.float32)  # (z, y, x)
    nib.save(nib.Nifti1Image(volume.transpose(2, 1, 0), np.eye(4)), str(root / "images" / "vol.nii.gz"))
    _png(root / "images" / "flat.png", _rgb((12, 14), 3))
    marks = np.zeros((12, 14), np.uint8)
    marks[2:4, 2:6] = 1
    marks[8, 3:9] = 2
    _png(root / "markers" / "flat.png", marks)
    with Project.init(tmp_path / "proj", dataset=root) as project:
        assert project.image_info("vol")["shape"] == (6, 8, 10) and project.image_info("vol")["ndim"] == 3
        markers3d = np.zeros((6, 8, 10), np.uint8)
        markers3d[1, 2, 3] = 1
        assert project.save_markers("vol", markers3d) == 1
        np.testing.assert_array_equal(project.load_markers("vol")[0], markers3d)
        with pytest.raises(InputError, match="3D"):
            project.save_markers("vol", np.zeros((8, 10), np.uint8), 1)
        loaded, version = project.load_markers("flat")
        assert version == 1 and project.marker_history("flat")[0]["author"] == "import"
        np.testing.assert_array_equal(loaded, marks)


def test_refuses_init_twice_and_bad_arguments(tmp_path, folders):
    images, masks = folders
    Project.init(tmp_path / "proj", images_dir=images).close()
    before = (tmp_path / "proj" / DB_NAME).read_bytes()
    with pytest.raises(InputError, match="already holds a hitlseg project"):
        Project.init(tmp_path / "proj", images_dir=images)
    assert (tmp_path / "proj" / DB_NAME).read_bytes() == before
    with pytest.raises(InputError, match="either"):
        Project.init(tmp_path / "p2")
    with pytest.raises(InputError, match="either"):
        Project.init(tmp_path / "p2", images_dir=images, dataset=DEMO_ROOT)
    with pytest.raises(InputError, match="masks folder goes with"):
        Project.init(tmp_path / "p2", dataset=DEMO_ROOT, masks_dir=masks)
    with pytest.raises(InputError, match="images folder not found"):
        Project.init(tmp_path / "p2", images_dir=tmp_path / "nowhere")
    with pytest.raises(InputError, match="color"):
        Project.init(tmp_path / "p2", images_dir=images, color="cmyk")
    _png(masks / "c.png", _mask((10, 10)))  # wrong shape for c (20x30)
    with pytest.raises(InputError, match="c.png: mask shape"):
        Project.init(tmp_path / "p2", images_dir=images, masks_dir=masks)
    assert not (tmp_path / "p2").exists()
    # a failure while the database is being built (marker import) leaves no database behind
    data = tmp_path / "data"
    _png(data / "images" / "x.png", _rgb((12, 14), 0))
    _png(data / "markers" / "x.png", np.ones((10, 10), np.uint8))
    with pytest.raises(InputError, match="markers have shape"):
        Project.init(tmp_path / "p3", dataset=data)
    assert not (tmp_path / "p3" / DB_NAME).exists()
    assert not [p.name for p in (tmp_path / "p3").glob(".*") if p.name != ".lock"]  # no temporary database
    with pytest.raises(InputError, match="not a hitlseg project"):
        Project.open(tmp_path / "p3")


def test_open_refuses_non_projects(tmp_path):
    with pytest.raises(InputError, match="project folder not found"):
        Project.open(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="not a hitlseg project"):
        Project.open(tmp_path / "empty")
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / DB_NAME).write_bytes(b"this is not a database" * 100)
    with pytest.raises(InputError, match="not a hitlseg project database"):
        Project.open(tmp_path / "junk")
    (tmp_path / "other").mkdir()
    sqlite3.connect(tmp_path / "other" / DB_NAME).execute("CREATE TABLE t (x)").connection.commit()
    with pytest.raises(InputError, match="not a hitlseg project database"):
        Project.open(tmp_path / "other")


def test_open_refuses_newer_schema(project):
    root = project.root
    project.close()
    conn = sqlite3.connect(root / DB_NAME)
    conn.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(SCHEMA_VERSION + 1),))
    conn.commit()
    conn.close()
    with pytest.raises(InputError, match="newer"):
        Project.open(root)


def test_database_uses_wal_and_foreign_keys(project):
    conn = project._conn()
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1
    assert conn.execute("PRAGMA busy_timeout").fetchone()[0] >= 1000
    with pytest.raises(sqlite3.IntegrityError):
        conn.execute("INSERT INTO selections (round, image_id, source, created_at) VALUES (1, 'nope', 'x', 't')")


# ------------------------------------------------------------------------------------------
# markers
# ------------------------------------------------------------------------------------------


def test_versioned_saves_and_history(project):
    shape = (24, 32)
    empty, version = project.load_markers("a")
    assert version == 0 and empty.shape == shape and not empty.any()
    assert project.save_markers("a", _markers(shape, 1), None, author="ana") == 1
    assert project.save_markers("a", _markers(shape, 2).astype(np.int64), 1, author="bob") == 2
    assert project.save_markers("b", _markers(shape, 9), 0) == 1
    latest, version = project.load_markers("a")
    assert version == 2 and latest.dtype == np.uint8
    np.testing.assert_array_equal(latest, _markers(shape, 2))
    np.testing.assert_array_equal(project.load_markers("a", 1)[0], _markers(shape, 1))
    assert project.load_markers("a", 0)[1] == 0
    history = project.marker_history("a")
    assert [(h["version"], h["author"]) for h in history] == [(1, "ana"), (2, "bob")]
    counts = np.bincount(_markers(shape, 1).ravel(), minlength=4)
    assert history[0]["class_counts"] == {1: counts[1], 2: counts[2], 3: counts[3]}
    assert history[0]["n_marked"] == counts[1:].sum()
    assert project.latest_versions() == {"a": 2, "b": 1} and project.latest_version("c") == 0
    assert [e["payload"]["version"] for e in project.events(kind="markers_saved")] == [1, 2, 1]
    assert _files(project.root / "arrays") == ["markers/a/v0001.npy", "markers/a/v0002.npy", "markers/b/v0001.npy"]


def test_stale_save_is_a_conflict_between_two_annotators(project):
    shape = (24, 32)
    project.save_markers("a", _markers(shape, 1), None)
    with Project.open(project.root) as other:  # a second annotator (another connection)
        mine, base_mine = project.load_markers("a")
        theirs, base_theirs = other.load_markers("a")
        assert base_mine == base_theirs == 1
        assert other.save_markers("a", _markers(shape, 2), base_theirs, author="them") == 2
        with pytest.raises(ConflictError, match=r"'a'.*version 1 .*latest version is 2") as caught:
            project.save_markers("a", _markers(shape, 99), base_mine, author="me")
        assert isinstance(caught.value, InputError)
        assert (caught.value.image_id, caught.value.base_version, caught.value.latest_version) == ("a", 1, 2)
        with pytest.raises(ConflictError):
            project.save_markers("a", _markers(shape, 99), None)  # "first save" over existing markers
        # their work is intact; reloading and saving on top of it succeeds
        np.testing.assert_array_equal(project.load_markers("a")[0], _markers(shape, 2))
        assert project.save_markers("a", _markers(shape, 3), 2, author="me") == 3
    assert not (project.root / "arrays" / "markers" / "a" / "v0004.npy").exists()
    assert [h["author"] for h in project.marker_history("a")] == [None, "them", "me"]


@pytest.mark.parametrize(
    "markers, base, message",
    [
        (np.zeros((24, 31), np.uint8), None, r"shape \(24, 31\) differs"),
        (np.zeros((2, 24, 32), np.uint8), None, "expected a 2D array"),
        (np.zeros((24, 32), np.float32), None, "integer labels"),
        (np.full((24, 32), 256, np.int32), None, r"0\.\.255"),
        (np.full((24, 32), -1, np.int32), None, r"0\.\.255"),
        (np.zeros((24, 32), np.uint8), -1, "version numbers"),
        (np.zeros((24, 32), np.uint8), "1", "expected a version number"),
        (np.zeros((24, 32), np.uint8), True, "expected a version number"),
    ],
)
def test_bad_markers_are_refused(project, markers, base, message):
    with pytest.raises(InputError, match=message):
        project.save_markers("a", markers, base)
    assert project.latest_version("a") == 0 and _files(project.root / "arrays") == []


def test_unknown_ids_raise_input_error(project):
    for call in (
        lambda: project.save_markers("nope", np.zeros((24, 32), np.uint8)),
        lambda: project.load_markers("nope"),
        lambda: project.marker_history("nope"),
        lambda: project.image("nope"),
        lambda: project.mask("nope"),
        lambda: project.image_info(3),
        lambda: project.add_selection("nope", "person"),
        lambda: project.load_markers("a", 5),
        lambda: project.model(1),
        lambda: project.run(1),
        lambda: project.finish_run(42),
    ):
        with pytest.raises(InputError) as caught:
            call()
        assert not isinstance(caught.value, KeyError)


def test_failed_commit_leaves_no_file_and_no_row(project, monkeypatch):
    project.save_markers("a", _markers((24, 32), 1))

    def broken(*args):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(Project, "_event", staticmethod(broken))  # fails after the file was written
    with pytest.raises(RuntimeError):
        project.save_markers("a", _markers((24, 32), 2), 1)
    monkeypatch.undo()
    assert project.latest_version("a") == 1
    assert _files(project.root / "arrays") == ["markers/a/v0001.npy"]
    assert project.save_markers("a", _markers((24, 32), 2), 1) == 2


def test_concurrent_saves_with_the_same_base_one_wins(project):
    shape, workers = (24, 32), 6
    for round_ in range(4):
        base = project.latest_version("b")
        barrier = threading.Barrier(workers)
        outcomes: list[object] = [None] * workers

        def annotate(i):
            barrier.wait()
            try:
                outcomes[i] = project.save_markers("b", _markers(shape, 100 * round_ + i), base, author=f"t{i}")
            except ConflictError as exc:
                outcomes[i] = exc

        threads = [threading.Thread(target=annotate, args=(i,)) for i in range(workers)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        winners = [i for i, o in enumerate(outcomes) if isinstance(o, int)]
        assert len(winners) == 1, outcomes
        assert outcomes[winners[0]] == base + 1
        assert all(isinstance(o, ConflictError) for i, o in enumerate(outcomes) if i not in winners)
        stored, version = project.load_markers("b")
        assert version == base + 1
        np.testing.assert_array_equal(stored, _markers(shape, 100 * round_ + winners[0]))
    assert [h["version"] for h in project.marker_history("b")] == [1, 2, 3, 4]
    assert len(_files(project.root / "arrays")) == 4


# ------------------------------------------------------------------------------------------
# arrays, orphans and garbage collection
# ------------------------------------------------------------------------------------------


def test_array_store_round_trip(project):
    labels = np.arange(24 * 32, dtype=np.int32).reshape(24, 32) // 40
    path = project.put_array("superpixels", "a", labels)
    assert path == project.root / "arrays" / "superpixels" / "a.npy"
    assert project.has_array("superpixels", "a") and not project.has_array("superpixels", "b")
    np.testing.assert_array_equal(project.get_array("superpixels", "a"), labels)
    project.put_array("superpixels", "a", labels + 1)  # replaced atomically
    np.testing.assert_array_equal(project.get_array("superpixels", "a"), labels + 1)
    project.put_array("descriptors", "round 1 (flim)", np.ones((3, 5), np.float32))
    assert project.array_keys("descriptors") == ["round 1 (flim)"] and project.array_keys("saliency") == []
    with pytest.raises(InputError, match="no 'predictions' array for key 'a'"):
        project.get_array("predictions", "a")
    assert project.delete_array("superpixels", "a") and not project.delete_array("superpixels", "a")
    with pytest.raises(InputError, match="Python objects"):
        project.put_array("descriptors", "bad", np.array([{"a": 1}], dtype=object))
    assert not [p for p in _files(project.root) if is_temp_name(Path(p).name)]


@pytest.mark.parametrize("key", ["../escape", "a/b", "..", ".hidden", "", "a\\b", "x\x00y", "C:evil", "a..b", " a", "k" * 201, None])
def test_array_keys_cannot_escape(project, key):
    with pytest.raises(InputError, match="key"):
        project.put_array("superpixels", key, np.zeros(3))
    with pytest.raises(InputError, match="key"):
        project.get_array("superpixels", key)
    assert not (project.root / "escape.npy").exists() and not (project.root / "arrays" / "escape.npy").exists()


@pytest.mark.parametrize("kind", ["markers", "../x", "Upper", "", "a/b", "1st"])
def test_array_kinds_are_checked(project, kind):
    with pytest.raises(InputError, match="kind"):
        project.put_array(kind, "a", np.zeros(3))


def test_open_removes_orphans_and_temporary_files(project):
    shape = (24, 32)
    project.save_markers("a", _markers(shape, 1))
    project.put_array("superpixels", "a", np.zeros(shape, np.int32))
    model_id = project.add_model("flim", b"weights", {"layers": 2})
    root = project.root
    project.close()
    arrays = root / "arrays"
    litter = [
        arrays / "markers" / "a" / "v0002.npy",  # written, crash before commit
        arrays / "markers" / "a" / ".v0003.npy.abc123.tmp",  # crash mid-write
        arrays / "markers" / "c" / "v0001.npy",
        arrays / "superpixels" / ".b.npy.0f0f0f.tmp",
        root / "models" / "0099-flim.pt",
        root / "models" / ".0100-flim.pt.123456.tmp",
    ]
    for path in litter:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"partial")
    with Project.open(root) as reopened:
        assert sorted(reopened.removed_garbage) == sorted(p.relative_to(root).as_posix() for p in litter)
        assert _files(arrays) == ["markers/a/v0001.npy", "superpixels/a.npy"]
        assert not (arrays / "markers" / "c").exists()
        assert reopened.model_path(model_id).read_bytes() == b"weights"
        assert reopened.save_markers("a", _markers(shape, 2), 1) == 2  # the orphan's name is reused
        np.testing.assert_array_equal(reopened.load_markers("a")[0], _markers(shape, 2))


def test_garbage_collection_waits_for_live_writers(project):
    orphan = project.root / "arrays" / "markers" / "a" / "v0001.npy"
    orphan.parent.mkdir(parents=True)
    orphan.write_bytes(b"being committed by a live writer")
    with project._files_lock.shared():  # a writer between its file write and its commit
        assert project.collect_garbage(timeout=0.05) is None
        assert orphan.exists()
    assert project.collect_garbage() == ["arrays/markers/a/v0001.npy"]


# ------------------------------------------------------------------------------------------
# selections, models, runs, events
# ------------------------------------------------------------------------------------------


def test_selections_keep_their_order(project):
    assert project.add_selection("c", "robot:farthest") == 1
    assert project.add_selection("a", "person") == 2
    assert [(s["round"], s["image_id"], s["source"]) for s in project.selections()] == [(1, "c", "robot:farthest"), (2, "a", "person")]
    assert project.selected_ids() == ["c", "a"]
    with pytest.raises(InputError, match="already selected in round 1"):
        project.add_selection("c", "person")
    with pytest.raises(InputError, match="source"):
        project.add_selection("b", "")


def test_models_runs_and_events(project, tmp_path):
    source = tmp_path / "model.pt"
    source.write_bytes(b"\x00state")
    first = project.add_model("flim", source, {"layers": [8, 16]}, {"dice": np.float32(0.5)})
    second = project.add_model("sunet", b"bytes", suffix=".bin")
    assert project.model_path(first) == project.root / "models" / f"{first:04d}-flim.pt"
    assert project.model_path(first).read_bytes() == b"\x00state"
    assert project.model_path(second).name.endswith("-sunet.bin")
    assert [m["kind"] for m in project.list_models()] == ["flim", "sunet"]
    assert project.list_models("flim")[0]["metrics"] == {"dice": 0.5}
    with pytest.raises(InputError, match="model file not found"):
        project.add_model("flim", tmp_path / "missing.pt")
    with pytest.raises(InputError, match="kind"):
        project.add_model("../x", b"")
    with pytest.raises(InputError, match="suffix"):
        project.add_model("flim", b"", suffix="/../x")

    run_id = project.start_run("train", {"epochs": 3})
    assert project.run(run_id)["status"] == "running"
    project.finish_run(run_id, result={"loss": 0.1})
    failed = project.start_run("descriptors")
    project.finish_run(failed, error="out of memory")
    assert [(r["status"], r["result"], r["error"]) for r in project.runs()] == [("done", {"loss": 0.1}, None), ("failed", None, "out of memory")]
    assert project.runs(status="failed")[0]["id"] == failed
    with pytest.raises(ConflictError, match="already finished"):
        project.finish_run(run_id)

    last = project.events()[-1]["id"]
    event_id = project.record_event("note", {"text": "hello", "values": np.arange(2)})
    assert event_id > last
    assert project.events(after=last) == [{"id": event_id, "time": project.events(after=last)[0]["time"], "kind": "note",
                                           "payload": {"text": "hello", "values": [0, 1]}}]
    kinds = [e["kind"] for e in project.events()]
    assert kinds[0] == "project_created" and "model_added" in kinds and kinds.count("run_finished") == 2
    with pytest.raises(InputError, match="JSON"):
        project.record_event("note", {"bad": object()})


# ------------------------------------------------------------------------------------------
# crash safety: SIGKILL in the middle of marker saves
# ------------------------------------------------------------------------------------------

WRITER = textwrap.dedent(
    """
    import sys
    import numpy as np
    from hitlseg.project import Project

    root, image_id = sys.argv[1], sys.argv[2]
    project = Project.open(root)
    shape = project.image_info(image_id)["shape"]
    version = project.latest_version(image_id)
    print("ready", version, flush=True)
    while True:
        markers = np.random.default_rng(version + 1).integers(0, 4, shape, dtype=np.uint8)
        version = project.save_markers(image_id, markers, version, author="writer")
        print(version, flush=True)
    """
)


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")
def test_sigkill_during_saves_loses_nothing(project):
    root, shape = project.root, project.image_info("a")["shape"]
    project.close()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")])}
    rng = np.random.default_rng(7)
    reported_total = 0
    for trial in range(15):
        writer = subprocess.Popen([sys.executable, "-c", WRITER, str(root), "a"], stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True, env=env)
        ready = writer.stdout.readline()
        assert ready.startswith("ready"), writer.stderr.read()
        time.sleep(float(rng.uniform(0.005, 0.12)))
        os.kill(writer.pid, signal.SIGKILL)
        writer.wait()
        assert writer.returncode == -signal.SIGKILL
        reported = [int(line) for line in writer.stdout.read().split()]  # versions whose save returned
        writer.stdout.close()
        writer.stderr.close()

        with Project.open(root) as reopened:
            versions = [h["version"] for h in reopened.marker_history("a")]
            assert versions == list(range(1, len(versions) + 1))  # contiguous 1..N
            assert not reported or reported[-1] <= len(versions)  # no returned save was lost
            for version in versions:
                stored, got = reopened.load_markers("a", version)
                assert got == version
                np.testing.assert_array_equal(stored, _markers(shape, version))
            files = _files(root / "arrays")
            assert files == [f"markers/a/v{v:04d}.npy" for v in versions]  # no temporary or orphan file
        reported_total += len(reported)
    assert reported_total > 15  # the writer really was saving when killed
    assert not [p for p in _files(root) if is_temp_name(Path(p).name)]


# ------------------------------------------------------------------------------------------
# command line
# ------------------------------------------------------------------------------------------


def test_cli_init_and_info(tmp_path, folders, capsys):
    images, masks = folders
    assert main(["project", "init", str(tmp_path / "proj"), "--images", str(images), "--masks", str(masks)]) == 0
    assert "3 images (2 with masks)" in capsys.readouterr().out
    with Project.open(tmp_path / "proj") as project:
        project.save_markers("b", _markers((24, 32), 1))
        project.add_selection("b", "person")
    assert main(["project", "info", str(tmp_path / "proj"), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["images"] == 3 and summary["marked"] == {"b": 1}
    assert summary["selections"][0]["image_id"] == "b"
    assert main(["project", "info", str(tmp_path / "proj")]) == 0
    text = capsys.readouterr().out
    assert "marked:     1 images, 1 versions: b (v1)" in text and "1. b (person)" in text

    assert main(["project", "init", str(tmp_path / "proj"), "--images", str(images)]) == 2
    assert "already holds a hitlseg project" in capsys.readouterr().err
    assert main(["project", "info", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "not a hitlseg project" in err and "Traceback" not in err
    assert main(["project", "init", str(tmp_path / "d"), "--dataset", str(DEMO_ROOT), "--masks", str(masks)]) == 2
    assert "--masks goes with --images" in capsys.readouterr().err
