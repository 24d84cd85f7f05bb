"""UMAP (McInnes, Healy & Melville 2018, arXiv:1802.03426) as the selection view's 2D projection
(issue 14.5): layouts, warm starts, and the choice of it in the Python API, the CLI and the server.

The first UMAP call of a process compiles umap-learn's numba kernels (about 6 s on 2
cores); the module-scoped ``compiled`` fixture pays it once, so each test takes well under a second.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial import procrustes

from hitlseg.errors import InputError
from hitlseg.selection.projection import METHODS, project

pytest.importorskip("umap")  # the hitlseg[umap] extra (in dev, so `make test` installs it)


@pytest.fixture(scope="module")
def compiled():
    """Run UMAP once on a small array: the numba compilation of this process happens here."""
    project(np.random.default_rng(0).normal(size=(12, 4)), "umap")


def clusters(seed: int, n: int = 150, k: int = 5, dims: int = 20):
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 3, (k, dims))
    labels = rng.integers(0, k, n)
    return centres[labels] + rng.normal(0, 1, (n, dims)), labels


def spread(coords: np.ndarray) -> float:
    return float(np.sqrt(((coords - coords.mean(0)) ** 2).sum(1).mean()))


def test_umap_layout_is_finite_seeded_and_says_what_ran(compiled):
    x, _ = clusters(1)
    a = project(x, "umap", seed=3)
    b = project(x, "umap", seed=3)
    assert a.method == "umap" and a.perplexity is None
    assert a.coords.shape == (150, 2) and a.coords.dtype == np.float64 and np.all(np.isfinite(a.coords))
    np.testing.assert_array_equal(a.coords, b.coords)
    assert a.note == "UMAP: 15 neighbours, 500 epochs from a spectral layout"
    other = project(x, "umap", seed=4)
    assert not np.allclose(other.coords, a.coords)
    assert a.to_dict()["method"] == "umap"


@pytest.mark.parametrize("seed", [0, 3])
def test_umap_warm_start_stays_close_to_the_previous_layout(compiled, seed):
    """The same descriptors from the previous layout: small moves (the person keeps their bearings),
    far smaller than a fresh layout's; the result is in the previous layout's frame."""
    x, _ = clusters(seed)
    previous = project(x, "umap", seed=seed).coords
    warm = project(x, "umap", seed=seed, init=previous)
    assert warm.note == "UMAP: 15 neighbours, 50 epochs at learning rate 0.25 from the previous layout"
    assert warm.coords.shape == (150, 2) and np.all(np.isfinite(warm.coords))
    np.testing.assert_allclose(warm.coords.mean(0), previous.mean(0), atol=1e-9)
    np.testing.assert_allclose(warm.coords.std(0), previous.std(0), rtol=1e-9)
    moved = np.linalg.norm(warm.coords - previous, axis=1).mean() / spread(previous)
    fresh = project(x, "umap", seed=seed + 10).coords  # another seed: another layout
    fresh_moved = np.linalg.norm(fresh - previous, axis=1).mean() / spread(previous)
    assert moved < 0.35 and moved < fresh_moved / 2, (moved, fresh_moved)
    assert procrustes(previous, warm.coords)[2] < 0.15
    np.testing.assert_array_equal(warm.coords, project(x, "umap", seed=seed, init=previous).coords)
    # a warm start of a different scale (a t-SNE layout, say) lands in that layout's frame too
    scaled = project(x, "umap", seed=seed, init=previous * 40 + 7)
    np.testing.assert_allclose(scaled.coords.std(0), (previous * 40).std(0), rtol=1e-9)


def test_umap_keeps_two_separated_clusters_apart(compiled):
    rng = np.random.default_rng(5)
    x = np.vstack([rng.normal(0, 1, (60, 16)), rng.normal(8, 1, (60, 16))])
    labels = np.repeat([0, 1], 60)
    coords = project(x, "umap", seed=0).coords
    distances = np.linalg.norm(coords[:, None] - coords[None], axis=2)
    np.fill_diagonal(distances, np.inf)
    assert (labels[distances.argmin(1)] == labels).mean() >= 0.95


def test_umap_hides_only_its_missing_index_warning_without_swapping_filters(compiled):
    """The missing-search-index warning of precomputed neighbours is filtered by its message, once,
    not inside catch_warnings (which swaps the process-wide filters under other threads)."""
    import warnings

    x, _ = clusters(4, n=40)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        project(x, "umap", seed=0)
        warnings.warn("another warning", UserWarning)
    messages = [str(w.message) for w in caught]
    assert not any("precomputed_knn" in m for m in messages) and "another warning" in messages


def test_umap_small_pools(compiled):
    rng = np.random.default_rng(6)
    three = project(rng.normal(size=(3, 4)), "umap")  # below 4 points: no spectral layout, PCA
    assert three.method == "umap" and three.coords.shape == (3, 2) and np.all(np.isfinite(three.coords))
    assert three.note == "UMAP: 2 neighbours (of 15: 3 images), 500 epochs from a PCA layout"
    five = project(rng.normal(size=(5, 4)), "umap", max_iter=20)
    assert five.note == "UMAP: 4 neighbours (of 15: 5 images), 20 epochs from a spectral layout"
    two = project(np.array([[0.0, 0.0], [3.0, 4.0]]), "umap")
    assert two.method == "trivial" and two.coords[:, 0].tolist() == [-2.5, 2.5]
    assert project(np.ones((6, 3)), "umap").method == "trivial"
    duplicates = np.vstack([np.ones((5, 4)), rng.normal(size=(5, 4))])
    assert np.all(np.isfinite(project(duplicates, "umap").coords))
    # a degenerate previous layout is ignored, as for t-SNE
    x, _ = clusters(7, n=40)
    flat = project(x, "umap", init=np.zeros((40, 2)))
    assert "spectral" in flat.note


def test_unknown_method_and_missing_library_are_input_errors(monkeypatch):
    assert METHODS == ("tsne", "pca", "umap")
    x = np.random.default_rng(8).normal(size=(6, 3))
    with pytest.raises(InputError, match=r"unknown method 'umapx' \(use one of tsne, pca, umap\)"):
        project(x, "umapx")
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "umap" else real(name, *a))
    with pytest.raises(InputError, match=r"umap-learn.*hitlseg\[umap\]"):
        project(x, "umap")


def test_session_and_server_accept_umap_and_refuse_others(tmp_path):
    from hitlseg.selection import SelectionSession
    from hitlseg.server.app import create_app

    images = {f"im{i}": np.random.default_rng(i).random((3, 24, 24), dtype=np.float32) for i in range(3)}
    with pytest.raises(InputError, match=r"unknown method 'umapx' \(use one of tsne, pca, umap\)"):
        SelectionSession(images, projection="umapx")
    assert SelectionSession(images, n_superpixels=6, projection="umap").projection_method == "umap"
    with pytest.raises(InputError, match=r"unknown method 'umapx' \(use one of tsne, pca, umap\)"):
        create_app(tmp_path / "no-project", projection="umapx")  # refused before the project is opened


def test_session_rounds_with_umap_start_warm(compiled):
    from hitlseg.robot import Robot
    from hitlseg.selection import SelectionSession
    from hitlseg.io.color import rgb_to_normalized_lab
    from tests.helpers import disk_mask, rgb_from_mask

    rng = np.random.default_rng(0)
    images, masks = {}, {}
    for i in range(6):
        mask = disk_mask((32, 32), [tuple(int(v) for v in rng.integers(10, 22, 2))], radius=int(rng.integers(4, 8)))
        images[f"im{i}"] = rgb_to_normalized_lab(np.moveaxis(rgb_from_mask(mask, i).astype(np.float32) / 255, -1, 0))
        masks[f"im{i}"] = mask
    session = SelectionSession(images, n_superpixels=6, projection="umap", k=2)
    robot = Robot(0)
    first = session.step("im0", robot.mark(masks["im0"], key="im0"))
    second = session.step("im1", robot.mark(masks["im1"], key="im1"))
    assert first.projection.method == second.projection.method == "umap"
    assert "from a spectral layout" in first.projection.note and "from the previous layout" in second.projection.note
    assert any(note.startswith("UMAP:") for note in second.notes)
    assert second.to_dict()["projection"]["method"] == "umap"


@pytest.mark.parametrize("command", [["select", "--dataset", "D", "--robot"], ["serve", "P"], ["demo"]])
def test_command_line_projection_choices(command, capsys):
    from hitlseg.cli import build_parser, main

    parser = build_parser()
    assert parser.parse_args(command + ["--projection", "umap"]).projection == "umap"
    assert parser.parse_args(command).projection == "tsne"
    assert main(command + ["--projection", "umapx"]) == 2
    err = capsys.readouterr().err
    assert "--projection: invalid choice: 'umapx'" in err and all(repr(name) in err for name in METHODS), err


def test_the_web_apps_selection_loop_compiles_umap_while_it_prepares(tmp_path):
    """In a fresh process, building the web app's selection session with UMAP compiles umap-learn's
    layout kernel (the 6 s the person's first round would otherwise wait for); with t-SNE it does not."""
    import subprocess
    import sys

    from tests.helpers import copy_demo

    copy_demo(tmp_path / "data", 3)
    code = (
        "import sys\n"
        "from hitlseg.project import Project\n"
        "from hitlseg.server.loop import SelectionLoop\n"
        "import umap.layouts as layouts\n"
        f"project = Project.init({str(tmp_path)!r} + '/project-' + sys.argv[1], dataset={str(tmp_path / 'data')!r})\n"
        "SelectionLoop(project, projection=sys.argv[1]).ensure_session()\n"
        "print(len(layouts._nb_optimize_layout_euclidean_single_epoch.signatures))\n")
    compiled = {method: subprocess.run([sys.executable, "-c", code, method], capture_output=True, text=True,
                                       check=True).stdout.strip().splitlines()[-1] for method in ("tsne", "umap")}
    assert compiled == {"tsne": "0", "umap": "1"}

