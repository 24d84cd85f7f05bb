"""File-name conventions: which files are images, volumes, text markers, and their stems."""

from __future__ import annotations

from pathlib import Path

IMAGE_2D_SUFFIXES = (".png", ".tif", ".tiff", ".bmp", ".jpg", ".jpeg")
VOLUME_SUFFIXES = (".nii.gz", ".nii")
MARKER_TEXT_SUFFIXES = (".txt",)
ALL_SUFFIXES = VOLUME_SUFFIXES + IMAGE_2D_SUFFIXES


def suffix_of(path: str | Path) -> str:
    """Return the known (lower-case) suffix of ``path`` (``.nii.gz`` counts as one), or ''."""
    name = Path(path).name.lower()
    for suffix in ALL_SUFFIXES + MARKER_TEXT_SUFFIXES:
        if name.endswith(suffix):
            return suffix
    return ""


def stem_of(path: str | Path) -> str:
    """Return the file name without its known suffix (``a.nii.gz`` -> ``a``)."""
    name = Path(path).name
    suffix = suffix_of(path)
    return name[: len(name) - len(suffix)] if suffix else Path(path).stem


def is_volume(path: str | Path) -> bool:
    """True for NIfTI files."""
    return suffix_of(path) in VOLUME_SUFFIXES


def is_image_file(path: str | Path) -> bool:
    """True for files hitlseg reads as images or volumes (not hidden files)."""
    path = Path(path)
    return path.is_file() and not path.name.startswith(".") and suffix_of(path) in ALL_SUFFIXES
