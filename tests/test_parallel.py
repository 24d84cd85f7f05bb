"""The execution layer (hitlseg.parallel): in-process and Dask give the same numbers, runs resume, bad input is refused.

One real LocalCluster of 2 worker processes (one thread each) serves the whole module.
"""

from __future__ import annotations

import os
import time

import numpy as np
import pytest

from hitlseg.errors import InputError

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::ResourceWarning")
N_IMAGES = 6


@pytest.fixture(scope="module")
def cluster():
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                      env={"OMP_NUM_THREADS": "1"}) as local, Client(local, set_as_default=False) as client:
        yield client


@pytest.fixture
def dask(cluster):
    from hitlseg.parallel import Executor

    return Executor(client=cluster, small_pool=0, window=3)


@pytest.fixture(scope="module")
def demo():
    """Six bundled wbc1 images, a FLIM selection encoder and an sU-Net (batch norm: block-local in eval)."""
    from hitlseg.dataset import Dataset
    from hitlseg.datasets import DEMO_ROOT
    from hitlseg.flim.fit import fit_encoder
    from hitlseg.flim.spec import default_arch
    from hitlseg.nets import SegModel
    from hitlseg.robot import markers_from_mask
    from hitlseg.selection import selection_arch

    dataset = Dataset.from_folder(DEMO_ROOT)
    ids = dataset.ids[:N_IMAGES]
    images = {i: dataset.image(i)[0] for i in ids}
    markers = [markers_from_mask(dataset.mask(i), rng=np.random.default_rng(k)) for k, i in enumerate(ids[:2])]
    encoder = fit_encoder([images[i] for i in ids[:2]], markers, selection_arch(), seed=0)
    model = SegModel.sunet(fit_encoder([images[i] for i in ids[:2]], markers, default_arch(), seed=0), 1,
                           norm="batch", seed=0)
    model.net.eval()
    return {"dataset": dataset.subset(ids), "ids": ids, "images": images, "markers": markers, "encoder": encoder,
            "model": model}


def test_descriptors_same_in_process_on_dask_and_in_the_session(demo, dask, tmp_path):
    from hitlseg.parallel import pool_descriptors
    from hitlseg.selection import SelectionSession

    here = pool_descriptors(demo["images"], demo["encoder"], tmp_path / "here").stacked("descriptor")
    there = pool_descriptors(demo["dataset"], demo["encoder"], tmp_path / "dask", executor=dask).stacked("descriptor")
    np.testing.assert_array_equal(here, there)  # same function, same threads: bit for bit
    session = SelectionSession(demo["images"], seed=0)
    session.step(demo["ids"][0], demo["markers"][0])
    session.step(demo["ids"][1], demo["markers"][1])  # refits on both marked images, like demo["encoder"]
    # batched channels-last convolutions in the session, one image at a time here: equal up to float32
    # reassociation (0.0 on one machine, 1.9e-6 on another, values up to ~10)
    np.testing.assert_allclose(here, session.descriptors, rtol=1e-5, atol=1e-5)
    assert here.shape[1] == session.descriptors.shape[1] and here.any()


def test_a_session_on_dask_streams_and_recommends_like_the_in_memory_session(demo, dask, tmp_path):
    from hitlseg.selection import SelectionSession

    here = SelectionSession(demo["images"], seed=0)
    there = SelectionSession(demo["dataset"], seed=0, executor=dask, store=tmp_path / "store")
    assert there.streaming and not here.streaming
    assert (tmp_path / "store" / "superpixels.zarr").is_dir()
    for image_id, markers in zip(demo["ids"][:2], demo["markers"]):
        a, b = here.step(image_id, markers), there.step(image_id, markers)
        np.testing.assert_allclose(there.descriptors, here.descriptors, rtol=1e-4, atol=1e-4)
        for kind in ("closest", "most_distant"):
            assert [i for i, _ in getattr(a.recommendation, kind)] == [i for i, _ in getattr(b.recommendation, kind)]
    # the client kept the marked images and a few recent ones, not the pool
    assert set(there.images.kept) == set(demo["ids"][:2])
    with pytest.raises(InputError, match="store"):
        SelectionSession(demo["dataset"], executor=dask)


def test_predictions_and_pseudo_labels_same_in_process_and_on_dask(demo, dask, tmp_path):
    from hitlseg.parallel import pool_pseudo_labels, predict_pool
    from hitlseg.pseudo import local_consistency, pool_probabilities, tripartition
    from hitlseg.selection.session import torch_threads

    model = demo["model"]
    here = predict_pool(model, demo["images"], tmp_path / "here")
    there = predict_pool(model, demo["dataset"], tmp_path / "dask", executor=dask)
    for i in demo["ids"]:
        with torch_threads(1):  # the executor's task setting: other thread counts reassociate float sums
            expected = model.predict(demo["images"][i])
        np.testing.assert_array_equal(here.get("probabilities", i), expected.probabilities)
        np.testing.assert_array_equal(there.get("probabilities", i), expected.probabilities)
        np.testing.assert_array_equal(there.get("labels", i), expected.labels)
    assert set(there.mapping("probabilities")) == set(demo["ids"])

    pseudo_here = pool_pseudo_labels(model, demo["images"], tmp_path / "here", delta=0.6, beta=0.9)
    pseudo_there = pool_pseudo_labels(model, demo["images"], tmp_path / "dask", delta=0.6, beta=0.9, executor=dask)
    np.testing.assert_array_equal(pseudo_here.stacked("consistency"), pseudo_there.stacked("consistency"))
    for i in demo["ids"]:
        with torch_threads(1):
            p = pool_probabilities(model, demo["images"][i], flips=True)
        np.testing.assert_array_equal(pseudo_there.get("pseudo", i), tripartition(p, 0.6))
        assert pseudo_there.get("consistency", i) == local_consistency(p, 0.9)


def test_active_learning_pool_scoring_same_in_process_and_on_dask(demo, dask):
    """score_pool through an executor: the same chunks and dropout seeds in-process and on Dask, so the
    same probabilities, MC-dropout disagreement and features; deterministic parts equal the plain call."""
    from hitlseg.active.context import score_pool
    from hitlseg.parallel import Executor

    model, images = demo["model"], demo["images"]
    here = score_pool(model, images, mc_passes=3, seed=5, executor=Executor(), chunk=4)
    there = score_pool(model, images, mc_passes=3, seed=5, executor=dask, chunk=4)
    plain = score_pool(model, images, mc_passes=3, seed=5)
    assert here["chunks"] == there["chunks"] == 2 and here["member_source"] == there["member_source"] == "mc_dropout"
    for i in demo["ids"]:
        np.testing.assert_array_equal(here["probabilities"][i], there["probabilities"][i])
        np.testing.assert_array_equal(here["disagreement"][i], there["disagreement"][i])
        np.testing.assert_array_equal(here["variance"][i], there["variance"][i])
        np.testing.assert_allclose(here["probabilities"][i].astype(np.float32),
                                   plain["probabilities"][i].astype(np.float32), atol=1e-3)
    np.testing.assert_array_equal(here["features"], there["features"])
    np.testing.assert_allclose(here["features"], plain["features"], rtol=1e-4, atol=1e-5)  # ids order kept
    with pytest.raises(InputError, match="chunk"):
        score_pool(model, images, executor=Executor(), chunk=0)


def _slow_square(x):
    time.sleep(0.3)
    return x * x


def test_a_worker_killed_mid_run_and_the_map_still_completes(cluster, dask):
    import signal

    results = {}
    for key, value in dask.map(_slow_square, ((i, (i,)) for i in range(12))):
        results[key] = value
        if len(results) == 2:  # kill one worker process while tasks are in flight on it
            killed = next(iter(cluster.run(os.getpid).values()))
            os.kill(killed, signal.SIGKILL)
    assert results == {i: i * i for i in range(12)}
    cluster.wait_for_workers(2, timeout=60)  # the nanny restarts it, for the tests that follow
    assert killed not in cluster.run(os.getpid).values()


class Stop(Exception):
    pass


def test_an_interrupted_run_resumes_from_the_stored_chunks(demo, dask, tmp_path):
    from hitlseg.parallel import ResultStore, predict_pool

    model = demo["model"]

    def stop_after_three(done, total, message):
        if done == 3:
            raise Stop

    with pytest.raises(Stop):
        predict_pool(model, demo["images"], tmp_path, executor=dask, progress=stop_after_three)
    (folder,) = list(tmp_path.iterdir())
    store = ResultStore.open(folder, demo["ids"], "predictions",
                             dict(ResultStore._check_is_store(folder).attrs)["params"])
    finished = int(store.done.sum())
    assert 3 <= finished < N_IMAGES
    totals = []
    resumed = predict_pool(model, demo["images"], tmp_path, executor=dask,
                           progress=lambda d, t, m: totals.append(t))
    assert resumed.complete and max(totals) == N_IMAGES - finished  # only the unfinished images again
    from hitlseg.selection.session import torch_threads

    for i in demo["ids"]:
        with torch_threads(1):  # the tasks' setting
            expected = model.predict(demo["images"][i]).probabilities
        np.testing.assert_array_equal(resumed.get("probabilities", i), expected)


def test_a_row_written_but_not_marked_done_is_never_read_and_is_recomputed(demo, tmp_path):
    from hitlseg.parallel import pool_descriptors

    store = pool_descriptors(demo["images"], demo["encoder"], tmp_path)
    good = store.stacked("descriptor")
    first = store.ids[0]
    store.group["descriptor"][0] = -1.0  # half of an interrupted write: data changed, done not yet set
    store.group["done"][0] = False
    from hitlseg.parallel import ResultStore

    reopened = ResultStore.open(store.path, store.ids, "descriptors", store.group.attrs["params"])  # as a rerun does
    with pytest.raises(InputError, match="not finished"):
        reopened.get("descriptor", first)
    again = pool_descriptors(demo["images"], demo["encoder"], tmp_path)
    np.testing.assert_array_equal(again.stacked("descriptor"), good)


def test_deferred_done_marks_reach_the_disk_in_batches_and_at_flush(tmp_path):
    from hitlseg.parallel import ResultStore
    from hitlseg.parallel.store import DONE_BATCH

    ids = [f"i{k}" for k in range(DONE_BATCH + 5)]
    store = ResultStore.open(tmp_path / "s.zarr", ids, "test", {})

    def on_disk():
        return int(ResultStore.open(tmp_path / "s.zarr", ids, "test", {}).done.sum())

    for k, item in enumerate(ids):
        store.write(item, {"x": np.full(3, k, np.float32)}, defer_done=True)
    assert store.complete and on_disk() == DONE_BATCH  # one batch written, five marks pending
    store.flush()
    assert on_disk() == len(ids)
    np.testing.assert_array_equal(store.stacked("x")[:, 0], np.arange(len(ids)))


def test_block_prediction_equals_the_whole_image_and_resumes(demo, dask, tmp_path):
    import zarr

    from hitlseg.parallel import predict_blocks

    model, images, ids = demo["model"], demo["images"], demo["ids"]
    big = np.concatenate([np.concatenate([images[ids[0]], images[ids[1]]], 2),
                          np.concatenate([images[ids[2]], images[ids[3]]], 2)], 1)  # (3, 240, 240)
    whole = model.predict(big, window=None).probabilities

    def stop_after_two(done, total, message):
        if done == 2:
            raise Stop

    with pytest.raises(Stop):
        predict_blocks(model, big, tmp_path / "a", block=64, halo=48, executor=dask, progress=stop_after_two)
    result = predict_blocks(model, big, tmp_path / "a", block=64, halo=48, executor=dask)
    assert result.store.complete and len(result.store.ids) == 16
    # tolerance 1e-6: with a halo of at least the network's reach the cores are the whole-image
    # result up to float rounding (measured 6e-8)
    np.testing.assert_allclose(result.probabilities[...], whole, rtol=0, atol=1e-6)
    np.testing.assert_array_equal(result.labels[...], np.argmax(whole, 0))

    zarr.create_array(str(tmp_path / "big.zarr"), data=big, chunks=(3, 64, 64))
    from_zarr = predict_blocks(model, tmp_path / "big.zarr", tmp_path / "z", block=64, halo=48)
    np.testing.assert_array_equal(from_zarr.probabilities[...], result.probabilities[...])
    # a zarr path on Dask: the workers read their regions and write their cores themselves
    on_workers = predict_blocks(model, tmp_path / "big.zarr", tmp_path / "w", block=64, halo=48, executor=dask)
    assert on_workers.store.complete
    np.testing.assert_array_equal(on_workers.probabilities[...], result.probabilities[...])
    np.testing.assert_array_equal(on_workers.labels[...], result.labels[...])


@pytest.mark.parametrize("method", ["graphcut", "crf"])
def test_block_refinement_agrees_with_the_whole_image_refinement(demo, dask, tmp_path, method, monkeypatch):
    """Each block refines its region with the halo and keeps the core: the labels agree with the
    whole image's refinement on >= 99% of the pixels and follow the pixels the refiner changed
    (measured: graph cut 99.99% / 100% of 2,077 changed; dense CRF 99.5% / 93% of 2,444, its
    downsampled bilateral grid falls differently in a block); the workers reading, refining and
    writing give the client's labels."""
    import copy
    import types

    import zarr

    from hitlseg.parallel import predict_blocks
    from hitlseg.refine import refine

    model, images, ids = demo["model"], demo["images"], demo["ids"]
    big = np.concatenate([np.concatenate([images[ids[0]], images[ids[1]]], 2),
                          np.concatenate([images[ids[2]], images[ids[3]]], 2)], 1)  # (3, 240, 240)
    zarr.create_array(str(tmp_path / "big.zarr"), data=big, chunks=(3, 64, 64))
    here = predict_blocks(model, big, tmp_path / "here", block=64, halo=48, refine=method)
    there = predict_blocks(model, tmp_path / "big.zarr", tmp_path / "there", block=64, halo=48, executor=dask,
                           refine=method)
    np.testing.assert_array_equal(there.labels[...], here.labels[...])
    np.testing.assert_allclose(here.probabilities[...], model.predict(big, window=None).probabilities, rtol=0,
                               atol=1e-6)  # the network's, not the refiner's

    # an unsure per-pixel "network" (darkness as object probability; the demo sU-Net is untrained
    # and labels every pixel object), so that the refiner changes labels
    unsure = copy.deepcopy(model)

    centre, spread = float(big.mean()), float(big.std())  # constants: the same for every block

    def tempered(image, **options):
        darkness = (image.mean(0) - centre) / spread
        object_ = 1 / (1 + np.exp(2 * darkness))
        return types.SimpleNamespace(probabilities=np.stack([1 - object_, object_]).astype(np.float32))

    monkeypatch.setattr(unsure, "predict", tempered)
    probabilities = tempered(big, window=None).probabilities
    whole, plain = refine(big, probabilities, method), np.argmax(probabilities, 0)
    blocks = predict_blocks(unsure, big, tmp_path / "unsure", block=64, halo=48, refine=method).labels[...]
    changed = whole != plain
    assert changed.sum() > 50, int(changed.sum())  # the refiner acted
    assert np.mean(blocks == whole) > 0.99 and np.mean(blocks[changed] == whole[changed]) > 0.8
    with pytest.raises(InputError, match="does not work block by block"):
        predict_blocks(model, big, tmp_path / "x", block=64, refine="shape")
    with pytest.raises(InputError, match="needs its model"):
        predict_blocks(model, big, tmp_path / "x", block=64, refine="corrective")


def test_block_prediction_of_a_file_is_written_back_in_its_format(demo, tmp_path):
    from hitlseg.io import read_mask
    from hitlseg.parallel import export_labels, predict_blocks

    sample = demo["dataset"].sample(demo["ids"][0])
    result = predict_blocks(demo["model"], sample.image_paths[0], tmp_path, block=64, halo=48)
    written = export_labels(result, tmp_path / "labels.png")
    labels, meta = read_mask(written)
    assert labels.shape == demo["images"][demo["ids"][0]].shape[1:]
    np.testing.assert_array_equal(labels, demo["model"].predict(demo["images"][demo["ids"][0]], window=None,
                                                                postprocess="none").labels)


def test_an_unreachable_scheduler_is_a_quick_input_error():
    from hitlseg.parallel import Executor

    started = time.perf_counter()
    with pytest.raises(InputError, match="cannot reach a Dask scheduler at 'tcp://127.0.0.1:9'"):
        Executor(scheduler="tcp://127.0.0.1:9", timeout=2)
    assert time.perf_counter() - started < 15


def test_workers_with_another_hitlseg_version_are_refused(cluster, monkeypatch):
    import hitlseg.parallel.executor as executor

    monkeypatch.setattr(executor, "__version__", "0.0.0-other")
    with pytest.raises(InputError, match="worker.*run hitlseg 0.1.0.*this process runs 0.0.0-other"):
        executor.Executor(client=cluster)


def test_a_store_of_another_run_or_shape_is_refused_and_left_as_it_was(demo, tmp_path):
    import zarr

    from hitlseg.parallel import ResultStore, predict_blocks

    store = ResultStore.open(tmp_path / "s.zarr", ["a", "b"], "predictions", {"x": 1})
    store.write("a", {"v": np.ones(3, np.float32)})
    for ids, kind, params, match in ((["a", "b", "c"], "predictions", {"x": 1}, "other items"),
                                     (["a", "b"], "descriptors", {"x": 1}, "not 'descriptors'"),
                                     (["a", "b"], "predictions", {"x": 2}, r"other parameters \(x\)")):
        with pytest.raises(InputError, match=match):
            ResultStore.open(tmp_path / "s.zarr", ids, kind, params)
    again = ResultStore.open(tmp_path / "s.zarr", ["a", "b"], "predictions", {"x": 1})
    assert again.done.tolist() == [True, False] and again.get("v", "a").tolist() == [1, 1, 1]
    (tmp_path / "other").mkdir()
    with pytest.raises(InputError, match="not a hitlseg result store"):
        ResultStore.open(tmp_path / "other", ["a"], "predictions", {})

    zarr.create_array(str(tmp_path / "wrong.zarr"), data=np.zeros((2, 64, 64), np.float32))  # 2 channels, model takes 3
    with pytest.raises(InputError, match=r"3-channel 2D input .*got shape \(2, 64, 64\)"):
        predict_blocks(demo["model"], tmp_path / "wrong.zarr", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_command_line_options(monkeypatch):
    import argparse

    import hitlseg.parallel.executor as executor_module

    from hitlseg.parallel import ENV_SCHEDULER, add_execution_arguments, executor_from_args

    parser = argparse.ArgumentParser()
    add_execution_arguments(parser)
    args = parser.parse_args(["--workers", "2"])
    executor = executor_from_args(args)
    assert executor.workers == 2 and executor.description == "local dask cluster of 2 workers"
    assert executor_from_args(parser.parse_args([])).description == "in-process"
    with pytest.raises(SystemExit):
        parser.parse_args(["--workers", "0"])
    with pytest.raises(SystemExit):
        parser.parse_args(["--workers", "2", "--scheduler", "tcp://x:1"])
    monkeypatch.setenv(ENV_SCHEDULER, "tcp://127.0.0.1:9")
    monkeypatch.setattr(executor_module, "DEFAULT_TIMEOUT", 2.0)
    with pytest.raises(InputError, match="cannot reach a Dask scheduler at 'tcp://127.0.0.1:9' within 2 s"):
        executor_from_args(parser.parse_args([]))


def test_active_learning_experiment_takes_the_execution_options(tmp_path, capsys):
    import hitlseg.parallel.executor as executor_module
    from hitlseg.cli import build_parser
    from tests.helpers import cli_one_line_error, copy_demo

    args = build_parser().parse_args(["experiment", "active", "--dataset", "d", "--out", "o", "--workers", "2"])
    assert args.workers == 2 and args.scheduler is None
    data = copy_demo(tmp_path / "data", 4)
    executor_module.DEFAULT_TIMEOUT, before = 2.0, executor_module.DEFAULT_TIMEOUT
    try:
        message = cli_one_line_error(capsys, "experiment", "active", "--dataset", str(data), "--out",
                                     str(tmp_path / "out"), "--scheduler", "tcp://127.0.0.1:9")
    finally:
        executor_module.DEFAULT_TIMEOUT = before
    assert "cannot reach a Dask scheduler at 'tcp://127.0.0.1:9'" in message
    assert not (tmp_path / "out" / "results.json").exists()  # nothing ran


@pytest.mark.parametrize("command", [["serve", "p"], ["demo"], ["select", "--dataset", "d", "--robot"],
                                     ["experiment", "selection", "--dataset", "d", "--out", "o"]])
def test_commands_that_take_the_execution_options(command):
    from hitlseg.cli import build_parser

    args = build_parser().parse_args([*command, "--workers", "3"])
    assert args.workers == 3 and args.scheduler is None
    assert build_parser().parse_args([*command, "--scheduler", "tcp://h:1"]).scheduler == "tcp://h:1"


def test_a_small_pool_runs_in_process_without_starting_a_cluster():
    from hitlseg.parallel import Executor

    executor = Executor(workers=2)
    assert dict(executor.map(_slow_square, ((i, (i,)) for i in range(3)))) == {0: 0, 1: 1, 2: 4}
    assert executor._cluster is None and executor._client is None


def test_predict_command_on_a_cluster_writes_the_same_masks(demo, cluster, tmp_path, capsys, monkeypatch):
    """``hitlseg predict`` joins $HITLSEG_SCHEDULER: the workers read and predict, the client writes."""
    from hitlseg.io.images import read_raw_2d
    from hitlseg.parallel import ENV_SCHEDULER
    from tests.helpers import cli_one_line_error, cli_run, copy_demo

    images = copy_demo(tmp_path / "data", N_IMAGES)
    model_file = demo["model"].save(tmp_path / "model.pt")
    code, _, err = cli_run(capsys, "predict", "--model", model_file, "--images", images, "--out", tmp_path / "here",
                           "--probabilities")
    assert code == 0, err
    monkeypatch.setenv(ENV_SCHEDULER, cluster.scheduler.address)
    code, _, err = cli_run(capsys, "predict", "--model", model_file, "--images", images, "--out", tmp_path / "there",
                           "--probabilities")
    assert code == 0, err
    here = sorted(p.relative_to(tmp_path / "here") for p in (tmp_path / "here").rglob("*") if p.is_file())
    there = sorted(p.relative_to(tmp_path / "there") for p in (tmp_path / "there").rglob("*") if p.is_file())
    assert here == there and len(here) == 2 * N_IMAGES  # masks and class-1 probabilities
    for name in here:
        np.testing.assert_array_equal(read_raw_2d(tmp_path / "here" / name), read_raw_2d(tmp_path / "there" / name))
    line = cli_one_line_error(capsys, "predict", "--model", model_file, "--images", images, "--out", tmp_path / "x",
                              "--scheduler", "tcp://127.0.0.1:9")
    assert "cannot reach a Dask scheduler" in line
    assert not (tmp_path / "x").exists() or not any((tmp_path / "x").iterdir())  # nothing written


def test_select_command_on_a_cluster_selects_the_same_images(cluster, tmp_path, capsys):
    """``hitlseg select --scheduler``: the session streams on the workers and picks what the in-process run picks."""
    import json

    from tests.helpers import cli_run, copy_demo

    data = copy_demo(tmp_path / "data", 20)
    common = ("select", "--dataset", data, "--robot", "--rounds", "3", "--json", "--projection", "pca")
    code, here, err = cli_run(capsys, *common)
    assert code == 0, err
    code, there, err = cli_run(capsys, *common, "--scheduler", cluster.scheduler.address, "--cache", tmp_path / "pool")
    assert code == 0, err
    assert json.loads(there)["selected"] == json.loads(here)["selected"]
    assert (tmp_path / "pool" / "superpixels.zarr").is_dir()  # --cache keeps the stores: a rerun reuses them
    assert len(list((tmp_path / "pool").glob("descriptors-*.zarr"))) == 3


def test_selection_protocol_on_dask_gives_the_in_process_figures(demo, dask, tmp_path):
    from hitlseg.dataset import Dataset
    from hitlseg.experiments import ProtocolConfig, run_protocol
    from tests.helpers import copy_demo

    dataset = Dataset.from_folder(copy_demo(tmp_path / "data", 12))
    config = ProtocolConfig(splits=1, images=2, methods=("gtfree",), sunet=False, baseline=False, eval_limit=2)
    here = run_protocol(dataset, tmp_path / "here", config)
    there = run_protocol(dataset, tmp_path / "there", config, executor=dask)
    a, b = here["splits"][0]["methods"]["gtfree"], there["splits"][0]["methods"]["gtfree"]
    assert a["selected"] == b["selected"] and len(a["selected"]) == 2
    assert a["adaptive"]["test"]["mean"] == pytest.approx(b["adaptive"]["test"]["mean"], abs=1e-6)
    first_here, first_there = here["splits"][0]["first_image"], there["splits"][0]["first_image"]
    np.testing.assert_allclose(first_there["distance"], first_here["distance"], rtol=1e-4, atol=1e-4)
    assert (tmp_path / "there" / "pool" / "split0" / "superpixels.zarr").is_dir()


def test_the_web_app_on_a_cluster_learns_like_the_in_process_app(dask, tmp_path):
    """``hitlseg serve --workers``: the selection loop streams on the workers (stores in the project folder),
    gives the in-process app's rounds, draws heatmaps, and survives a restart over the same stores."""
    from hitlseg.project import Project
    from hitlseg.server import create_app
    from hitlseg.server.testing import client, marked_demo_project, wait_job

    def learned(root, executor):
        with Project.open(root) as project, client(create_app(project, executor=executor, projection="pca")) as http:
            job = wait_job(http, http.post("/api/selection/learn").json()["id"])
            assert job["state"] == "done", job
            first = project.image_ids()[0]
            heat = http.get(f"/api/selection/heatmap/{first}.png")
            assert heat.status_code == 200 and heat.content[:4] == b"\x89PNG"
            return http.get("/api/selection").json()

    here = learned(marked_demo_project(tmp_path / "here", n=8), None)
    there = learned(marked_demo_project(tmp_path / "there", n=8), dask)
    assert (tmp_path / "there" / "cluster" / "selection" / "superpixels.zarr").is_dir()
    assert not (tmp_path / "here" / "cluster").exists()
    assert [r["image_id"] for r in here["selected"]] == [r["image_id"] for r in there["selected"]]
    assert len(here["rounds"]) == len(there["rounds"]) == 2
    for kind in ("closest", "most_distant"):
        assert ([i for i, _ in here["current"]["recommendation"][kind]]
                == [i for i, _ in there["current"]["recommendation"][kind]])
    # a restart replays the logged rounds on the workers, over the stored superpixels
    with Project.open(tmp_path / "there") as project:
        app = create_app(project, executor=dask, projection="pca", prepare=False)
        assert app.state.hitlseg.loop.restore()["rounds"] == 2


def test_proposals_of_the_improve_view_are_the_same_on_dask(demo, dask):
    from hitlseg.active import propose
    from hitlseg.parallel import Executor

    for strategy in ("entropy", "bald"):
        here = propose(demo["model"], demo["images"], demo["ids"][:1], strategy=strategy, n=2, executor=Executor())
        there = propose(demo["model"], demo["images"], demo["ids"][:1], strategy=strategy, n=2, executor=dask)
        assert [p["image_id"] for p in here["proposals"]] == [p["image_id"] for p in there["proposals"]]
        assert [p["score"] for p in here["proposals"]] == pytest.approx([p["score"] for p in there["proposals"]],
                                                                        rel=1e-5)


def test_ome_zarr_images_are_read_channels_first_and_predicted_block_wise(demo, tmp_path):
    """OME-NGFF 0.4 (.zattrs-style attributes) and 0.5 (under 'ome'): the full-resolution level, channels
    first, a singleton time axis dropped, a missing channel axis added; bad metadata is named."""
    import zarr

    from hitlseg.parallel import predict_blocks
    from hitlseg.parallel.blocks import open_image

    image = demo["images"][demo["ids"][0]]  # (3, 120, 120)
    yxc = np.moveaxis(image, 0, -1)[None]  # (t=1, y, x, c): an unusual but legal order
    axes = [{"name": "t", "type": "time"}, {"name": "y", "type": "space"}, {"name": "x", "type": "space"},
            {"name": "c", "type": "channel"}]
    v04 = zarr.open_group(str(tmp_path / "v04.zarr"), mode="w")
    v04.create_array("0", data=yxc, chunks=(1, 64, 64, 3))
    v04.create_array("1", data=yxc[:, ::2, ::2], chunks=(1, 32, 32, 3))
    v04.attrs["multiscales"] = [{"version": "0.4", "axes": axes, "datasets": [{"path": "0"}, {"path": "1"}]}]
    view, _ = open_image(tmp_path / "v04.zarr")
    assert view.shape == image.shape
    np.testing.assert_array_equal(view[:, 10:30, 40:90], image[:, 10:30, 40:90])
    result = predict_blocks(demo["model"], tmp_path / "v04.zarr", tmp_path / "out", block=64, halo=48)
    whole = demo["model"].predict(image, window=None).probabilities
    np.testing.assert_allclose(result.probabilities[...], whole, rtol=0, atol=1e-6)

    gray = zarr.open_group(str(tmp_path / "v05.zarr"), mode="w")
    gray.create_array("s0", data=image[0], chunks=(64, 64))
    gray.attrs["ome"] = {"version": "0.5", "multiscales": [{"axes": ["y", "x"], "datasets": [{"path": "s0"}]}]}
    view, _ = open_image(tmp_path / "v05.zarr")
    assert view.shape == (1, 120, 120)
    np.testing.assert_array_equal(view[:, :5, :5], image[:1, :5, :5])

    series = zarr.open_group(str(tmp_path / "series.zarr"), mode="w")
    series.create_array("0", data=np.zeros((2, 8, 8), np.float32))
    series.attrs["multiscales"] = [{"axes": ["t", "y", "x"], "datasets": [{"path": "0"}]}]
    with pytest.raises(InputError, match="time series of 2 points"):
        open_image(tmp_path / "series.zarr")
    series.attrs["multiscales"] = [{"axes": ["t", "y", "x"], "datasets": [{"path": "9"}]}]
    with pytest.raises(InputError, match="level '9' is listed but missing"):
        open_image(tmp_path / "series.zarr")
    series.attrs["multiscales"] = [{"axes": ["y", "x"], "datasets": [{"path": "0"}]}]
    with pytest.raises(InputError, match="do not match level"):
        open_image(tmp_path / "series.zarr")


def test_predict_command_block_by_block_on_a_file_and_a_zarr_store(demo, tmp_path, capsys):
    """``hitlseg predict --block``: a PNG's labels in its format, a zarr store's in OUT/NAME.zarr, both equal
    to the whole-image prediction; the scratch blocks are gone afterwards."""
    import zarr

    from hitlseg.io import read_mask
    from tests.helpers import cli_one_line_error, cli_run

    model = demo["model"]
    model_file = model.save(tmp_path / "model.pt")
    sample = demo["dataset"].sample(demo["ids"][0])
    image = demo["images"][demo["ids"][0]]
    expected = model.predict(image, window=None, postprocess="none").labels
    cli_run(capsys, "predict", "--model", str(model_file), "--images", str(sample.image_paths[0]), "--out",
            str(tmp_path / "png"), "--block", "64", "--halo", "48")
    labels, _ = read_mask(tmp_path / "png" / sample.image_paths[0].name)
    np.testing.assert_array_equal(labels, expected)
    assert not (tmp_path / "png" / ".blocks").exists()
    zarr.create_array(str(tmp_path / "tile.zarr"), data=image, chunks=(3, 64, 64))
    cli_run(capsys, "predict", "--model", str(model_file), "--images", str(tmp_path / "tile.zarr"), "--out",
            str(tmp_path / "z"), "--block", "64", "--json")
    np.testing.assert_array_equal(zarr.open_array(str(tmp_path / "z" / "tile.zarr"), mode="r")[...], expected)
    message = cli_one_line_error(capsys, "predict", "--model", str(model_file), "--images", str(tmp_path / "tile.zarr"),
                                 "--out", str(tmp_path / "r"), "--block", "64", "--refine", "levelset")
    assert "--refine levelset: not available with --block" in message and "graphcut" in message
    cli_run(capsys, "predict", "--model", str(model_file), "--images", str(tmp_path / "tile.zarr"), "--out",
            str(tmp_path / "g"), "--block", "64", "--refine", "graphcut")
    from hitlseg.refine import refine

    refined = zarr.open_array(str(tmp_path / "g" / "tile.zarr"), mode="r")[...]
    whole = refine(image, model.predict(image, window=None).probabilities, "graphcut")
    assert np.mean(refined == whole) > 0.99
