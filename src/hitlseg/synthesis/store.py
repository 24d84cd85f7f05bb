"""Writing synthetic samples so that they are never taken for real data, and recognising them.

A folder written by :func:`write_synthetic` is a dataset (``images/``, ``masks/``) with a
``synthetic.json`` manifest listing every file, its source image, alterations and scores; and
every file says so itself: a PNG text chunk ``hitlseg:synthetic``, a TIFF image description or
a NIfTI ``descrip`` starting with ``hitlseg synthetic``. :func:`is_synthetic` recognises a
file or a folder by either mark (Mahapatra et al., MICCAI 2018, add such samples to training;
they must not leak into evaluation).
"""

from __future__ import annotations

import gzip
import io
import json
from pathlib import Path
from typing import Sequence

import numpy as np

from hitlseg.errors import InputError

MANIFEST = "synthetic.json"
FORMAT = "hitlseg-synthetic"
PNG_KEY = "hitlseg:synthetic"
MARK = "hitlseg synthetic"


def _png_bytes(array: np.ndarray, text: str) -> bytes:
    from PIL import Image
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    info.add_text(PNG_KEY, text)
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG", pnginfo=info)
    return buffer.getvalue()


def _tiff_bytes(array: np.ndarray, text: str) -> bytes:
    import tifffile

    buffer = io.BytesIO()
    tifffile.imwrite(buffer, array, description=f"{MARK} {text}", metadata=None)
    return buffer.getvalue()


def _nifti_bytes(array_zyx: np.ndarray) -> bytes:
    import nibabel as nib

    image = nib.Nifti1Image(np.asarray(array_zyx).transpose(2, 1, 0), np.eye(4))
    image.header["descrip"] = MARK.encode()
    return gzip.compress(image.to_bytes(), mtime=0)


def _image_file(image: np.ndarray, color: str, text: str) -> tuple[str, bytes]:
    """Suffix and bytes of one synthetic image: PNG for grey and colour 2D images, TIFF otherwise, NIfTI in 3D."""
    from hitlseg.io.color import normalized_lab_to_rgb

    if image.ndim == 4:
        if image.shape[0] != 1:
            raise InputError(f"images: writing {image.shape[0]}-channel volumes is not supported (one channel only)")
        return ".nii.gz", _nifti_bytes(image[0].astype(np.float32))
    if image.shape[0] == 3 and color in ("lab", "rgb"):
        rgb = normalized_lab_to_rgb(image) if color == "lab" else np.moveaxis(np.clip(image, 0, 1), 0, -1)
        return ".png", _png_bytes(np.rint(rgb * 255).astype(np.uint8), text)
    if image.shape[0] == 1:
        return ".png", _png_bytes(np.rint(np.clip(image[0], 0, 1) * 255).astype(np.uint8), text)
    return ".tif", _tiff_bytes(image.astype(np.float32), text)


def write_synthetic(folder, samples: Sequence, records: Sequence[dict] | None = None, *, color: str = "lab",
                    sources: Sequence[str] | None = None, prefix: str = "synthetic", info: dict | None = None) -> Path:
    """Write synthetic (image, mask) pairs to ``folder`` as a dataset marked synthetic; returns the manifest.

    Parameters
    ----------
    folder : path
        A new folder, or one written by this function before (its manifest is extended); a
        folder holding real images (``images/`` without a manifest) is refused.
    samples : sequence of (ndarray, ndarray)
        Images ``(C, *spatial)`` as hitlseg reads them and integer masks.
    records : sequence of dict, optional
        One per sample (alterations, scores, ``source`` index), copied into the manifest.
    color : {"lab", "rgb", "gray"}
        How 3-channel images are represented (hitlseg's default reads RGB as CIELAB).
    sources : sequence of str, optional
        Names of the real images the records' ``source`` indices refer to.
    prefix : str
        File stem prefix; stems are ``PREFIX-0000`` onwards.
    info : dict, optional
        Plain values stored in the manifest (e.g. the generator's settings).
    """
    from hitlseg.project.files import atomic_write, write_json
    from hitlseg.synthesis.alter import check_mask

    folder = Path(folder)
    manifest_path = folder / MANIFEST
    records = list(records) if records is not None else [{} for _ in samples]
    if len(records) != len(samples):
        raise InputError(f"records: {len(records)} records for {len(samples)} samples")
    if folder.exists() and not folder.is_dir():
        raise InputError(f"{folder}: exists and is not a folder")
    if (folder / "images").is_dir() and not manifest_path.is_file() and any((folder / "images").iterdir()):
        raise InputError(f"{folder}: holds real images (images/ without {MANIFEST}); write synthetic samples to "
                         f"a folder of their own so they are never mistaken for real data")
    manifest = {"format": FORMAT, "synthetic": True, "info": info or {}, "samples": []}
    if manifest_path.is_file():
        manifest = read_manifest(folder)
    start = len(manifest["samples"])
    for offset, ((image, mask), record) in enumerate(zip(samples, records)):
        stem = f"{prefix}-{start + offset:04d}"
        image = np.asarray(image, dtype=np.float32)
        mask = check_mask(mask, f"samples[{offset}] mask")
        if image.shape[1:] != mask.shape:
            raise InputError(f"samples[{offset}]: mask shape {mask.shape} differs from image shape {image.shape[1:]}")
        entry = dict(record)
        if sources is not None and isinstance(entry.get("source"), (int, np.integer)):
            entry["source"] = str(sources[int(entry["source"])])
        text = json.dumps({"synthetic": True, "source": entry.get("source"), "alterations": entry.get("alterations")})
        suffix, data = _image_file(image, color, text)
        if mask.ndim == 3:
            mask_suffix, mask_data = ".nii.gz", _nifti_bytes(mask.astype(np.uint8 if mask.max() < 256 else np.uint16))
        else:
            mask_suffix, mask_data = ".png", _png_bytes(mask.astype(np.uint8 if mask.max() < 256 else np.uint16), text)
        atomic_write(folder / "images" / f"{stem}{suffix}", lambda handle, data=data: handle.write(data))
        atomic_write(folder / "masks" / f"{stem}{mask_suffix}", lambda handle, data=mask_data: handle.write(data))
        manifest["samples"].append({"id": stem, "image": f"images/{stem}{suffix}", "mask": f"masks/{stem}{mask_suffix}",
                                    **_plain(entry)})
    write_json(manifest_path, manifest)
    return manifest_path


def _plain(entry: dict) -> dict:
    from hitlseg.plain import to_plain

    return to_plain(entry)


def read_manifest(folder) -> dict:
    """The ``synthetic.json`` of ``folder``; a missing or foreign file raises :class:`InputError`."""
    path = Path(folder) / MANIFEST
    try:
        manifest = json.loads(path.read_text())
    except FileNotFoundError:
        raise InputError(f"{path}: not found (the folder holds no synthetic samples)") from None
    except (OSError, ValueError) as exc:
        raise InputError(f"{path}: unreadable synthetic manifest ({exc})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT or not isinstance(manifest.get("samples"), list):
        raise InputError(f"{path}: not a hitlseg synthetic manifest")
    return manifest


def _file_mark(path: Path) -> bool:
    name = path.name.lower()
    try:
        if name.endswith(".png"):
            from PIL import Image

            with Image.open(path) as image:
                return PNG_KEY in getattr(image, "text", {})
        if name.endswith((".tif", ".tiff")):
            import tifffile

            with tifffile.TiffFile(path) as tiff:
                return any((page.description or "").startswith(MARK) for page in tiff.pages[:1])
        if name.endswith((".nii", ".nii.gz")):
            import nibabel as nib

            return bytes(nib.load(str(path)).header["descrip"]).rstrip(b"\0").decode(errors="replace").startswith(MARK)
    except (OSError, ValueError):
        return False
    return False


def is_synthetic(path) -> bool:
    """Whether ``path`` (an image or mask file, or a dataset folder) holds synthetic data.

    A folder is synthetic when it has a ``synthetic.json`` manifest; a file when it carries the
    mark (PNG text chunk, TIFF description, NIfTI ``descrip``) or a manifest in its folder or
    the folder above lists it.
    """
    path = Path(path)
    if path.is_dir():
        return (path / MANIFEST).is_file()
    if not path.is_file():
        raise InputError(f"{path}: not found")
    if _file_mark(path):
        return True
    for root in (path.parent, path.parent.parent):
        if (root / MANIFEST).is_file():
            try:
                listed = {Path(p).name for s in read_manifest(root)["samples"] for p in (s.get("image"), s.get("mask")) if p}
            except InputError:
                continue
            if path.name in listed:
                return True
    return False


def synthetic_ids(folder) -> list[str]:
    """Ids of the synthetic samples listed in ``folder``'s manifest (empty when it has none)."""
    folder = Path(folder)
    if not (folder / MANIFEST).is_file():
        return []
    return [str(s["id"]) for s in read_manifest(folder)["samples"]]
