"""Shared fixtures: the real datasets in ../shared (skipped when absent) and small synthetic data."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "datasets"


def shared_dataset(name: str) -> Path:
    """Path of a dataset in ../shared/datasets, or skip the test when it is absent."""
    path = SHARED / name
    if not path.is_dir():
        pytest.skip(f"../shared/datasets/{name} is not present")
    return path


@pytest.fixture
def shared():
    """Callable giving a shared dataset's path, skipping when absent."""
    return shared_dataset


@pytest.fixture
def project(request, tmp_path):
    """A project over ``PROJECT_IMAGES`` (a constant of the test module, default 4) bundled WBC images."""
    from hitlseg.server.testing import demo_project

    with demo_project(tmp_path / "project", n=getattr(request.module, "PROJECT_IMAGES", 4)) as opened:
        yield opened


@pytest.fixture
def http(project):
    """A test client of the server over :func:`project` (no background preparation job)."""
    from hitlseg.server import create_app
    from hitlseg.server.testing import client

    with client(create_app(project, prepare=False)) as c:
        yield c
