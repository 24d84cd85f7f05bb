"""Fitting a FLIM encoder from images and markers: kernels by clustering marker patches.

For each layer: per-channel mean and standard deviation over marked pixels normalise the input;
patches centred at marked pixels are grouped per marker (a connected stroke of one class); k-means
turns each marker's patches into ``kernels_per_marker`` candidates; k-means over all candidates
consolidates them into ``out_channels`` unit-norm kernels, each remembering the class of the marker
it came from. The layer's output (conv -> ReLU -> pool) and the markers, carried to the new
resolution, feed the next layer. One code path serves 2D and 3D.
"""

from __future__ import annotations

import re
from typing import Sequence

import numpy as np
import torch
from scipy import ndimage

from hitlseg.errors import InputError
from hitlseg.flim import ops
from hitlseg.flim.encoder import FLIMEncoder, FLIMLayer
from hitlseg.flim.kmeans import batched_kmeans, nearest_points
from hitlseg.flim.spec import ArchSpec, LayerSpec, default_arch
from hitlseg.progress import Progress, report
from hitlseg.validate import check_image_size

MAX_PATCHES_PER_MARKER = 500


DEVICE_NAMES = "auto, cpu, cuda, cuda:N or mps"


def device_problem(device: str | torch.device | None) -> str | None:
    """Why ``device`` cannot be used on this machine, or ``None`` when it can.

    Accepted: ``None``/``"auto"``, ``"cpu"``, ``"cuda"`` and ``"cuda:N"`` (N below the number of
    CUDA devices; only with a CUDA GPU) and ``"mps"`` (only where Apple's MPS backend is available),
    as strings or :class:`torch.device`.
    """
    if device is None or device == "auto":
        return None
    match = re.fullmatch(r"(cpu|cuda|mps)(?::(\d+))?", str(device))
    if match is None:
        return f"unknown device (use {DEVICE_NAMES})"
    kind, index = match.group(1), match.group(2)
    if kind == "cuda":
        if not torch.cuda.is_available():
            return "no CUDA GPU is available on this machine"
        count = torch.cuda.device_count()
        if index is not None and int(index) >= count:
            plural = "s" if count != 1 else ""
            return f"no such GPU: this machine has {count} CUDA device{plural} (cuda:0..cuda:{count - 1})"
    elif kind == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        return "the MPS backend is not available on this machine"
    elif index is not None and int(index) != 0:
        return f"there is one {kind} device ({kind} or {kind}:0)"
    return None


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """``None`` or ``"auto"`` picks CUDA when present, else CPU.

    Raises
    ------
    InputError
        When this machine has no such device (see :func:`device_problem`).
    """
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    problem = device_problem(device)
    if problem:
        raise InputError(f"device {str(device)!r}: {problem}")
    return torch.device(device)


def marker_components(markers: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Label each marker (connected stroke of one class): ids per marked pixel (raster order) and each marker's class.

    Returns
    -------
    ids : ndarray (n_marked,)
        Marker index of each marked pixel, in the order of ``np.nonzero(markers)``.
    classes : ndarray (n_markers,)
        Class of each marker (marker value - 1: 0 background, c for object class c).
    """
    structure = np.ones((3,) * markers.ndim, dtype=bool)
    ids = np.zeros(markers.shape, dtype=np.int64)
    classes = []
    for value in np.unique(markers[markers > 0]):
        components, count = ndimage.label(markers == value, structure=structure)
        ids[components > 0] = components[components > 0] + len(classes)
        classes.extend([int(value) - 1] * count)
    return ids[markers > 0] - 1, np.asarray(classes, dtype=np.int64)


def _validate(images: Sequence[np.ndarray], markers: Sequence[np.ndarray], names: Sequence[str] | None,
              arch: ArchSpec):
    if len(images) == 0:
        raise InputError("images: at least one image with markers is needed")
    if len(images) != len(markers):
        raise InputError(f"markers: {len(markers)} marker arrays for {len(images)} images")
    names = list(names) if names is not None else [f"image {i}" for i in range(len(images))]
    channels = {np.asarray(im).shape[0] for im in images}
    ndims = {np.asarray(im).ndim for im in images}
    if len(ndims) > 1 or ndims - {3, 4}:
        raise InputError(f"images: need (C, H, W) or (C, D, H, W) arrays of one dimensionality, got ndims {sorted(ndims)}")
    if len(channels) > 1:
        raise InputError(f"images: all images need the same number of channels, got {sorted(channels)}")
    for image, marker, name in zip(images, markers, names):
        if tuple(np.asarray(marker).shape) != tuple(np.asarray(image).shape[1:]):
            raise InputError(f"{name}: markers have shape {np.asarray(marker).shape} but the image is {tuple(np.asarray(image).shape[1:])}")
        if np.any(np.asarray(marker) > 0):  # unmarked images are left out of fitting
            check_image_size(np.shape(image)[1:], arch, name)
    if not any(np.any(np.asarray(m) > 0) for m in markers):
        raise InputError("markers: no marked pixel in any image (draw at least one stroke)")


def fit_layer(
    images: list[torch.Tensor],
    markers: list[np.ndarray],
    spec: LayerSpec,
    stdev_factor: float,
    seed: int = 0,
) -> FLIMLayer:
    """Learn one layer from feature maps ``images`` (each (C, *spatial)) and their markers."""
    marked = [x[:, torch.from_numpy(m > 0).to(x.device)] for x, m in zip(images, markers)]
    values = torch.cat(marked, dim=1)  # (C, n)
    mean = values.mean(1)
    std = values.std(1, unbiased=False) + stdev_factor
    std = torch.where(std > 0, std, torch.ones_like(std))
    shape = (-1,) + (1,) * (images[0].dim() - 1)
    groups, group_classes = [], []
    rng = np.random.default_rng(seed)
    for x, m in zip(images, markers):
        if not m.any():
            continue
        coords = np.argwhere(m > 0)
        ids, classes = marker_components(m)
        order = np.argsort(ids, kind="stable")
        bounds = np.searchsorted(ids[order], np.arange(len(classes) + 1))
        chosen = []
        for marker_index, cls in enumerate(classes):
            members = order[bounds[marker_index] : bounds[marker_index + 1]]
            if len(members) > MAX_PATCHES_PER_MARKER:
                members = np.sort(rng.choice(members, MAX_PATCHES_PER_MARKER, replace=False))
            chosen.append(members)
            group_classes.append(int(cls))
        normalized = (x - mean.reshape(shape)) / std.reshape(shape)
        patches = ops.extract_patches(normalized, coords[np.concatenate(chosen)], spec.kernel_size, spec.dilation)
        groups.extend(torch.split(patches, [len(c) for c in chosen]))
    if not groups:
        raise InputError("markers: no marked pixel is left at this layer's resolution")
    per_marker = batched_kmeans(groups, spec.kernels_per_marker, seed)
    candidates = torch.cat(per_marker)
    candidate_classes = np.repeat(group_classes, [len(c) for c in per_marker])
    kernels = batched_kmeans([candidates], spec.out_channels, seed)[0]
    kernel_classes = candidate_classes[nearest_points(kernels, candidates).cpu().numpy()]
    norms = kernels.norm(dim=1, keepdim=True)
    kernels = torch.where(norms > 1e-6, kernels / norms.clamp(min=1e-12), kernels)
    channels = images[0].shape[0]
    weight = kernels.reshape((len(kernels), channels) + (spec.kernel_size,) * (images[0].dim() - 1))
    return FLIMLayer(spec, weight, mean, std, torch.from_numpy(kernel_classes)).to(images[0].device)


def fit_encoder(
    images: Sequence[np.ndarray],
    markers: Sequence[np.ndarray],
    arch: ArchSpec | None = None,
    *,
    seed: int = 0,
    device: str | torch.device | None = None,
    names: Sequence[str] | None = None,
    progress: Progress = None,
) -> FLIMEncoder:
    """Learn a FLIM encoder from marked images.

    Parameters
    ----------
    images : sequence of ndarray, float32, shape (C, *spatial)
        Images (2D or 3D, all with the same channels).
    markers : sequence of ndarray, uint8, shape (*spatial)
        0 unmarked, c+1 for class c (1 is background).
    arch : ArchSpec, optional
        Architecture; :func:`hitlseg.flim.spec.default_arch` by default.
    seed : int
        Seed of the k-means and patch subsampling: the same seed gives the same encoder.
    device : str or torch.device, optional
        Where convolutions run; CUDA when present by default.
    names : sequence of str, optional
        Names of the images, used in error messages.
    progress : callable, optional
        ``progress(done, total, message)`` after each layer.

    Returns
    -------
    FLIMEncoder
    """
    arch = arch or default_arch()
    _validate(images, markers, names, arch)
    device = resolve_device(device)
    features = [torch.as_tensor(np.asarray(im, dtype=np.float32), device=device) for im in images]
    marks = [np.asarray(m).astype(np.uint8) for m in markers]
    keep = [i for i, m in enumerate(marks) if m.any()]
    features, marks = [features[i] for i in keep], [marks[i] for i in keep]
    layers: list[FLIMLayer] = []
    total = len(arch.layers)
    with torch.no_grad():
        for index, spec in enumerate(arch.layers):
            report(progress, index, total, f"layer {index + 1}/{total}")
            layer = fit_layer(features, marks, spec, arch.stdev_factor, seed=seed + index)
            layers.append(layer)
            features = [layer(x[None])[0] for x in features]
            marks = [ops.downsample_markers(m, tuple(x.shape[1:]), spec.pool_stride if spec.pool != "none" else 1)
                     for m, x in zip(marks, features)]
    report(progress, total, total, "done")
    return FLIMEncoder(arch, layers).eval()
