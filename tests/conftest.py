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
