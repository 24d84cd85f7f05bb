"""A FLIM model on disk: encoder, kernel classes, preprocessing and decoder choice in one file."""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from hitlseg import __version__
from hitlseg.errors import InputError
from hitlseg.flim.decoders import DECODERS, Decoded, decode
from hitlseg.flim.encoder import FLIMEncoder
from hitlseg.flim.fit import fit_encoder, resolve_device
from hitlseg.flim.spec import ArchSpec
from hitlseg.progress import Progress

FORMAT = "hitlseg-flim-model"


@dataclass
class FLIMModel:
    """A fitted FLIM encoder with what is needed to use it on new images.

    Attributes
    ----------
    encoder : FLIMEncoder
    n_classes : int
        Object classes seen in the markers (1 for object/background).
    preprocessing : dict
        How images were read (``color``, ``normalize``), so predictions read them the same way.
    decoder : str
        Default adaptive decoder rule.
    decoder_layer : int
        Layer whose features are decoded (-1: the last).
    """

    encoder: FLIMEncoder
    n_classes: int = 1
    preprocessing: dict = field(default_factory=lambda: {"color": "lab", "normalize": "percentile"})
    decoder: str = "labels"
    decoder_layer: int = -1

    @classmethod
    def fit(cls, images: Sequence[np.ndarray], markers: Sequence[np.ndarray], arch: ArchSpec | None = None, *,
            seed: int = 0, device=None, names=None, preprocessing: dict | None = None, decoder: str = "labels",
            progress: Progress = None) -> "FLIMModel":
        """Fit the encoder (see :func:`hitlseg.flim.fit.fit_encoder`) and wrap it as a model."""
        if decoder not in DECODERS:
            raise InputError(f"decoder: unknown rule {decoder!r} (use one of {', '.join(DECODERS)})")
        encoder = fit_encoder(images, markers, arch, seed=seed, device=device, names=names, progress=progress)
        n_classes = max(1, max(int(np.max(m)) for m in markers) - 1)
        return cls(encoder, n_classes, dict(preprocessing or {"color": "lab", "normalize": "percentile"}), decoder)

    @property
    def device(self) -> torch.device:
        return self.encoder.layers[0].weight.device

    def to(self, device) -> "FLIMModel":
        self.encoder.to(resolve_device(device))
        return self

    def features(self, image: np.ndarray, layer: int | None = None) -> torch.Tensor:
        """Features (C, *spatial') of one image (C, *spatial) at ``layer`` (default: decoder layer)."""
        layer = self.decoder_layer if layer is None else layer
        index = layer % len(self.encoder.layers)
        x = torch.as_tensor(np.asarray(image, dtype=np.float32), device=self.device)[None]
        with torch.no_grad():
            return self.encoder.features(x, upto=index)[index][0]

    def predict(self, image: np.ndarray, decoder: str | None = None) -> Decoded:
        """Saliency (K, *spatial) and mask (*spatial) of one image (C, *spatial)."""
        rule = decoder or self.decoder
        layer = self.encoder.layers[self.decoder_layer]
        n_classes = self.n_classes if rule != "weights" else None
        return decode(self.features(image), layer.kernel_classes, tuple(np.shape(image)[1:]), rule, n_classes)

    # -- persistence ---------------------------------------------------------------------------
    def to_state(self) -> dict:
        return {
            "format": FORMAT,
            "hitlseg_version": __version__,
            "encoder": self.encoder.to_state(),
            "n_classes": self.n_classes,
            "preprocessing": dict(self.preprocessing),
            "decoder": self.decoder,
            "decoder_layer": self.decoder_layer,
        }

    @classmethod
    def from_state(cls, state: dict, source: str = "model") -> "FLIMModel":
        if not isinstance(state, dict) or state.get("format") != FORMAT:
            raise InputError(f"{source}: not a hitlseg FLIM model file")
        return cls(FLIMEncoder.from_state(state["encoder"]).eval(), int(state["n_classes"]), dict(state["preprocessing"]),
                   str(state["decoder"]), int(state["decoder_layer"]))

    def save(self, path: str | Path) -> Path:
        """Write the model to one file, atomically."""
        return save_state(self.to_state(), path)

    @classmethod
    def load(cls, path: str | Path, device=None) -> "FLIMModel":
        """Read a model written by :meth:`save`; no training data is needed."""
        return cls.from_state(load_state(path), str(path)).to(device)


def save_state(state: dict, path: str | Path) -> Path:
    """``torch.save`` to a temporary file, then rename over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        torch.save(state, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def load_state(path: str | Path) -> dict:
    """Load a dictionary saved by :func:`save_state` (tensors and plain values only)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: model file not found")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise InputError(f"{path}: cannot read model file ({type(exc).__name__}: {exc})") from exc
