"""Image and region descriptors for retrieval, from a FLIM encoder or a segmentation network's encoder.

Three kinds (:data:`KINDS`):

``"gtfree"``
    The ground-truth-free selection descriptor (:mod:`hitlseg.selection.descriptors`): ReLU
    activations of the first FLIM layer's object kernels every ``stride`` pixels, averaged inside
    each SLIC superpixel, sorted in non-increasing order, concatenated over maps. The profile
    length is fixed (``length``, default twice the requested superpixels) rather than taken from
    the pool, so a descriptor depends only on its image and the filters: adding images to an
    index never changes the descriptors already in it.
``"flim"``
    Global average pooling of a FLIM encoder layer's output (default the last), one value per
    channel.
``"encoder"``
    The same pooling over a segmentation network's encoder (sU-Net: its frozen FLIM encoder;
    U-Net: the trained one).

Region descriptors pool only inside a mask (a stroke, a drawn or a predicted mask): the mask is
carried to the feature grid by nearest neighbour (:func:`hitlseg.selection.labels_at`) and the
mean runs over the grid points inside it; for ``"gtfree"`` each superpixel's mean runs over its
part inside the mask, and superpixels outside it count as absent (zero, the descriptor's fill).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from hitlseg.errors import InputError
from hitlseg.progress import Progress, report

if TYPE_CHECKING:  # torch is imported where it computes: 'hitlseg --help' reads KINDS without it (2 s)
    import torch

KINDS = ("gtfree", "flim", "encoder")
#: Default SLIC request of the gtfree descriptor (that of the selection loop in 2D / 3D).
GTFREE_SUPERPIXELS = {2: 20, 3: 40}

__all__ = ["GTFREE_SUPERPIXELS", "KINDS", "Describer", "encoder_digest", "load_describer"]


def encoder_digest(encoder: torch.nn.Module) -> str:
    """SHA-256 (hex, first 16 characters) of an encoder's parameters and buffers, by name."""
    digest = hashlib.sha256()
    for name, tensor in sorted(encoder.state_dict().items()):
        array = tensor.detach().cpu().contiguous().numpy()
        digest.update(f"{name}:{array.dtype}:{array.shape};".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()[:16]


@dataclass
class Describer:
    """Computes one kind of descriptor with a fixed encoder.

    Parameters
    ----------
    kind : {"gtfree", "flim", "encoder"}
    encoder : FLIMEncoder or BackpropEncoder
        Frozen; ``gtfree`` and ``flim`` need a FLIM encoder.
    model_state : dict
        The state of the model file the encoder came from (``FLIMModel.to_state`` or
        ``SegModel.to_state``), kept so an index folder can describe new images on its own.
    preprocessing : dict
        How images are read (``color``, ``normalize``, ``max_side``), from the model.
    options : dict
        ``layer`` (pooled kinds), ``n_superpixels``, ``compactness``, ``stride``, ``length`` (gtfree).
    """

    kind: str
    encoder: torch.nn.Module
    model_state: dict = field(repr=False)
    preprocessing: dict = field(default_factory=dict)
    options: dict = field(default_factory=dict)

    def __post_init__(self):
        from hitlseg.flim.encoder import FLIMEncoder
        from hitlseg.selection.superpixels import DEFAULT_COMPACTNESS

        if self.kind not in KINDS:
            raise InputError(f"descriptor: unknown kind {self.kind!r} (use one of {', '.join(KINDS)})")
        if self.kind in ("gtfree", "flim") and not isinstance(self.encoder, FLIMEncoder):
            raise InputError(f"descriptor {self.kind!r}: needs a FLIM encoder (a FLIM model or an sU-Net), "
                             f"not a network trained end to end")
        self.encoder = self.encoder.eval()
        options = dict(self.options)
        if self.kind == "gtfree":
            n = options.get("n_superpixels") or GTFREE_SUPERPIXELS[self.ndim]
            options = {"n_superpixels": int(n), "compactness": float(options.get("compactness", DEFAULT_COMPACTNESS)),
                       "stride": int(options.get("stride", 2)), "length": int(options.get("length") or 2 * int(n))}
            for name in ("n_superpixels", "stride", "length"):
                if options[name] < 1:
                    raise InputError(f"{name}: must be a positive integer, got {options[name]}")
        else:
            layer = int(options.get("layer", -1))
            depth = len(self.encoder.out_channels)
            if not -depth <= layer < depth:
                raise InputError(f"layer: the encoder has {depth} layers, got {layer}")
            options = {"layer": layer % depth}
        self.options = options
        self.digest = encoder_digest(self.encoder)

    # -- properties -------------------------------------------------------------------------------
    @property
    def ndim(self) -> int:
        return int(self.encoder.ndim)

    @property
    def in_channels(self) -> int:
        return int(self.encoder.in_channels)

    @property
    def kernels(self) -> np.ndarray:
        """gtfree: indices of the first layer's kernels whose maps enter the descriptor."""
        from hitlseg.selection.descriptors import map_kernels

        return map_kernels(self.encoder, "object")[0]

    @property
    def dimension(self) -> int:
        """Length of every descriptor."""
        if self.kind == "gtfree":
            return len(self.kernels) * self.options["length"]
        return int(self.encoder.out_channels[self.options["layer"]])

    def signature(self) -> dict:
        """What an index records to refuse descriptors made another way."""
        return {"descriptor": self.kind, "encoder_digest": self.digest, "dimension": self.dimension,
                "options": dict(self.options), "preprocessing": dict(self.preprocessing)}

    # -- describing -------------------------------------------------------------------------------
    def check_image(self, image, name: str = "image") -> np.ndarray:
        """``image`` as float32 ``(C, *spatial)``, or :class:`InputError` naming ``name``."""
        from hitlseg.validate import check_image_size

        array = np.asarray(image)
        if array.ndim != self.ndim + 1:
            raise InputError(f"{name}: the index holds {self.ndim}D images (C, *spatial), got shape {array.shape}")
        if array.shape[0] != self.in_channels:
            raise InputError(f"{name}: has {array.shape[0]} channels, but the index's encoder takes "
                             f"{self.in_channels}-channel images")
        if not np.issubdtype(array.dtype, np.number) or not np.all(np.isfinite(array)):
            raise InputError(f"{name}: expected finite numbers")
        layers = self.encoder.arch.layers[: 1 if self.kind == "gtfree" else self.options["layer"] + 1]
        check_image_size(array.shape[1:], layers, name, reflect=self._reflect)
        return np.ascontiguousarray(array, dtype=np.float32)

    @property
    def _reflect(self) -> bool:
        from hitlseg.flim.encoder import FLIMEncoder

        return isinstance(self.encoder, FLIMEncoder)

    def _check_mask(self, mask, shape, name: str) -> np.ndarray | None:
        if mask is None:
            return None
        mask = np.asarray(mask)
        if mask.shape != tuple(shape):
            raise InputError(f"{name}: region mask shape {mask.shape} differs from the image's {tuple(shape)}")
        if not (mask.dtype == bool or np.issubdtype(mask.dtype, np.integer)):
            raise InputError(f"{name}: region mask must hold integers or booleans, got {mask.dtype}")
        region = mask > 0
        if not region.any():
            raise InputError(f"{name}: region mask is empty (mark at least one pixel)")
        return region

    def describe(self, image, mask=None, name: str = "image") -> np.ndarray:
        """Descriptor ``(dimension,)`` float32 of one image, pooled inside ``mask > 0`` when given."""
        import torch

        image = self.check_image(image, name)
        region = self._check_mask(mask, image.shape[1:], name)
        device = next(iter(self.encoder.buffers()), None)
        device = device.device if device is not None else torch.device("cpu")
        x = torch.as_tensor(image[None], device=device)
        with torch.no_grad():
            if self.kind == "gtfree":
                return self._gtfree(image, x, region, name)
            features = self.encoder.features(x, upto=self.options["layer"])[self.options["layer"]][0]
        return _pool(features, region, name)

    def _gtfree(self, image: np.ndarray, x: torch.Tensor, region, name: str) -> np.ndarray:
        import torch

        from hitlseg.selection.descriptors import activation_maps, compute_descriptors, labels_at
        from hitlseg.selection.superpixels import slic_superpixels

        kernels = self.kernels
        maps = activation_maps(self.encoder.layers[0], x, kernels, self.options["stride"])
        labels = slic_superpixels(image, self.options["n_superpixels"], self.options["compactness"])
        if region is not None:
            # Outside the region: one extra label whose maps are zeroed, so its mean is 0 and it
            # sorts among the profile's zero fill (activations are ReLU outputs, never below 0).
            labels = np.where(region, labels, int(labels.max()) + 1)
            inside = torch.as_tensor(labels_at(region, tuple(maps.shape[2:])), device=maps.device)
            if not bool(inside.any()):
                raise InputError(f"{name}: region mask covers no point of the feature grid (stride "
                                 f"{self.options['stride']}); draw a larger region")
            maps = maps * inside[None, None].to(maps.dtype)
        return compute_descriptors(maps, [labels], self.options["length"], "zero")[0]

    def describe_many(self, images: Mapping[str, np.ndarray], masks: Mapping[str, np.ndarray] | None = None,
                      progress: Progress = None) -> np.ndarray:
        """Descriptors ``(n, dimension)`` of ``images`` (id -> array), in their order."""
        if len(images) == 0:
            raise InputError("images: the pool is empty (no image to index)")
        out = np.empty((len(images), self.dimension), dtype=np.float32)
        for row, (image_id, image) in enumerate(images.items()):
            report(progress, row, len(images), f"describing {image_id}")
            mask = masks.get(image_id) if masks is not None else None
            out[row] = self.describe(image, mask, name=str(image_id))
        report(progress, len(images), len(images), "described")
        return out

    # -- construction -----------------------------------------------------------------------------
    @classmethod
    def from_state(cls, kind: str, state: dict, options: dict | None = None, source: str = "model",
                   device=None) -> "Describer":
        """A describer over the encoder of a model state (a FLIM model or a segmentation model)."""
        from hitlseg.flim.fit import resolve_device
        from hitlseg.flim.model import FLIMModel
        from hitlseg.nets.model import SegModel

        if not isinstance(state, dict):
            raise InputError(f"{source}: not a hitlseg model file")
        device = resolve_device(device)
        if state.get("format") == "hitlseg-seg-model":
            model = SegModel.from_state(state, source)
            if kind in ("gtfree", "flim") and model.kind != "sunet":
                raise InputError(f"{source}: descriptor {kind!r} needs FLIM filters, but this is a U-Net "
                                 f"trained end to end (use --descriptor encoder)")
            encoder = model.net.encoder
        else:
            model = FLIMModel.from_state(state, source)
            if kind == "encoder":
                raise InputError(f"{source}: descriptor 'encoder' needs a segmentation network (sU-Net or U-Net "
                                 f"model file); this is a FLIM model (use --descriptor flim or gtfree)")
            encoder = model.encoder
        encoder = encoder.to(device)
        return cls(kind, encoder, state, dict(model.preprocessing), dict(options or {}))


def load_describer(kind: str, path: str | Path, options: dict | None = None, device=None) -> "Describer":
    """A :class:`Describer` over the model file ``path`` (``flim.pt`` or a segmentation model)."""
    from hitlseg.flim.model import load_state

    return Describer.from_state(kind, load_state(path), options, str(path), device)


def _pool(features: torch.Tensor, region, name: str) -> np.ndarray:
    """Mean of each channel of ``features`` (M, *grid), over the grid points inside ``region``."""
    import torch

    from hitlseg.selection.descriptors import labels_at

    if region is None:
        return features.flatten(1).mean(1).float().cpu().numpy()
    inside = torch.as_tensor(labels_at(region, tuple(features.shape[1:])), device=features.device)
    if not bool(inside.any()):
        raise InputError(f"{name}: region mask covers no point of the encoder's feature grid; draw a larger region")
    return features[:, inside].mean(1).float().cpu().numpy()
