"""Datasets shipped with hitlseg."""

from __future__ import annotations

from pathlib import Path

from hitlseg.dataset import Dataset

DEMO_ROOT = Path(__file__).resolve().parent / "wbc1"


def demo(**kwargs) -> Dataset:
    """The bundled demo dataset: 300 white-blood-cell images with masks (WBC "Dataset 1").

    Labels are 0 background, 1 cytoplasm, 2 nucleus. See ``DEMO_ROOT / "README.md"`` for the
    source, citation and licence (GPL-3.0). Keyword arguments go to :meth:`Dataset.from_folder`.
    """
    return Dataset.from_folder(DEMO_ROOT, **kwargs)


__all__ = ["DEMO_ROOT", "demo"]
