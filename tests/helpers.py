"""Small synthetic data shared by tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def disk_mask(shape=(64, 64), centers=((32, 32),), radius=10, labels=None) -> np.ndarray:
    """Integer mask with filled disks (label i+1 for disk i, or ``labels``)."""
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    mask = np.zeros(shape, dtype=np.uint8)
    for i, (cy, cx) in enumerate(centers):
        mask[(yy - cy) ** 2 + (xx - cx) ** 2 <= radius**2] = labels[i] if labels else 1
    return mask


def rgb_from_mask(mask: np.ndarray, seed: int = 0) -> np.ndarray:
    """uint8 RGB image: dark-purple objects on a pink background with noise."""
    rng = np.random.default_rng(seed)
    palette = np.array([[230, 180, 190], [120, 60, 150], [60, 20, 100], [200, 200, 60]], dtype=float)
    image = palette[np.clip(mask, 0, 3)] + rng.normal(0, 8, mask.shape + (3,))
    return np.clip(image, 0, 255).astype(np.uint8)


def write_png(path: Path, array: np.ndarray) -> Path:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return path


def write_nifti(path: Path, array_zyx: np.ndarray, affine=None) -> Path:
    """Write a (z, y, x) array as NIfTI (x, y, z on disk)."""
    import nibabel as nib

    path.parent.mkdir(parents=True, exist_ok=True)
    affine = np.diag([1.5, 1.0, 2.0, 1.0]) if affine is None else affine
    nib.save(nib.Nifti1Image(np.asarray(array_zyx).transpose(2, 1, 0), affine), str(path))
    return path


def make_2d_dataset(root: Path, n: int = 6, size: int = 64, seed: int = 0) -> Path:
    """A folders-by-role dataset of ``n`` RGB disk images with masks."""
    rng = np.random.default_rng(seed)
    for i in range(n):
        centers = [tuple(rng.integers(16, size - 16, 2)) for _ in range(2)]
        mask = disk_mask((size, size), centers, radius=int(rng.integers(6, 10)), labels=[1, 2])
        write_png(root / "images" / f"img{i:02d}.png", rgb_from_mask(mask, seed + i))
        write_png(root / "masks" / f"img{i:02d}.png", mask)
    return root


def copy_demo(root: Path, n: int) -> Path:
    """The first ``n`` images of the bundled demo dataset with their masks, copied to ``root``."""
    import shutil

    from hitlseg.datasets import DEMO_ROOT

    names = sorted(p.name for p in (DEMO_ROOT / "images").iterdir())[:n]
    for folder in ("images", "masks"):
        (root / folder).mkdir(parents=True)
        for name in names:
            shutil.copy(DEMO_ROOT / folder / name, root / folder / name)
    return root


def cli_run(capsys, *argv):
    """``hitlseg ARGV`` in process: (exit code, stdout, stderr)."""
    from hitlseg.cli import main

    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def cli_one_line_error(capsys, *argv) -> str:
    """The one stderr line of a ``hitlseg ARGV`` that must fail with exit 2 and no traceback."""
    code, _, err = cli_run(capsys, *argv)
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]
