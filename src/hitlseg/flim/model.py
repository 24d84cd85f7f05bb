"""A FLIM model on disk: encoder, kernel classes, preprocessing and decoder choice in one file."""

from __future__ import annotations

import glob
import os
import pickle
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from hitlseg import __version__
from hitlseg.errors import InputError
from hitlseg.flim.decoders import DECODER_CHOICES, DECODERS, DEFAULT_DECODER, Decoded, choose_rule, decode
from hitlseg.flim.encoder import FLIMEncoder
from hitlseg.flim.fit import fit_encoder, resolve_device
from hitlseg.flim.spec import ArchSpec, LayerSpec
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
        Default adaptive decoder rule (one of :data:`DECODERS`).
    decoder_layer : int
        Layer whose features are decoded (-1: the last).
    decoder_scores : dict
        With ``decoder="auto"`` at fit: each rule's recall of the marker pixels, by which the
        rule was chosen (see :func:`hitlseg.flim.decoders.choose_rule`).
    """

    encoder: FLIMEncoder
    n_classes: int = 1
    preprocessing: dict = field(default_factory=lambda: {"color": "lab", "normalize": "percentile"})
    decoder: str = "labels"
    decoder_layer: int = -1
    decoder_scores: dict = field(default_factory=dict)

    @classmethod
    def fit(cls, images: Sequence[np.ndarray], markers: Sequence[np.ndarray], arch: ArchSpec | None = None, *,
            seed: int = 0, device=None, names=None, preprocessing: dict | None = None, decoder: str = DEFAULT_DECODER,
            progress: Progress = None) -> "FLIMModel":
        """Fit the encoder (see :func:`hitlseg.flim.fit.fit_encoder`) and wrap it as a model.

        ``decoder="auto"`` (the default) stores the rule that best labels the markers' own pixels.
        """
        if decoder not in DECODER_CHOICES:
            raise InputError(f"decoder: unknown rule {decoder!r} (use one of {', '.join(DECODER_CHOICES)})")
        encoder = fit_encoder(images, markers, arch, seed=seed, device=device, names=names, progress=progress)
        n_classes = max(1, max(int(np.max(m)) for m in markers) - 1)
        model = cls(encoder, n_classes, dict(preprocessing or {"color": "lab", "normalize": "percentile"}),
                    "labels" if decoder == "auto" else decoder)
        if decoder == "auto":
            layer = model.encoder.layers[model.decoder_layer]
            features = [model.features(image) for image in images]
            model.decoder, model.decoder_scores = choose_rule(features, layer.kernel_classes, markers, n_classes)
        return model

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

    def predict(self, image: np.ndarray, decoder: str | None = None, *, name: str = "image") -> Decoded:
        """Saliency (K, *spatial) and mask (*spatial) of one image (C, *spatial); ``name`` is used in error messages."""
        from hitlseg.validate import check_image_size

        index = self.decoder_layer % len(self.encoder.layers)
        check_image_size(np.shape(image)[1:], [layer.spec for layer in self.encoder.layers[: index + 1]], name)
        rule = self.decoder if decoder in (None, "auto") else decoder
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
            "decoder_scores": dict(self.decoder_scores),
        }

    @classmethod
    def from_state(cls, state: dict, source: str = "model") -> "FLIMModel":
        """Inverse of :meth:`to_state`; a state that is not one raises :class:`InputError` naming ``source``."""
        if isinstance(state, dict) and state.get("format") == "hitlseg-seg-model":
            raise InputError(f"{source}: is a segmentation model (SegModel), not a FLIM model")
        if not isinstance(state, dict) or state.get("format") != FORMAT:
            raise InputError(f"{source}: not a hitlseg FLIM model file")
        try:
            encoder = encoder_from_state(state_value(state, "encoder", dict))
            n_classes = state_int(state, "n_classes", 1)
            preprocessing = check_preprocessing(state_value(state, "preprocessing", dict))
            decoder = state_value(state, "decoder", str)
            if decoder not in DECODERS:
                raise InputError(f"'decoder' is {decoder!r}, not one of {', '.join(DECODERS)}")
            layer = state_int(state, "decoder_layer", -len(encoder.layers))
            if layer >= len(encoder.layers):
                raise InputError(f"'decoder_layer' is {layer}, but the encoder has {len(encoder.layers)} layers")
            scores = state.get("decoder_scores", {})  # absent in files before hitlseg chose rules
            if not isinstance(scores, dict) or not all(r in DECODERS and isinstance(v, (int, float))
                                                       for r, v in scores.items()):
                raise InputError("'decoder_scores' is not a map of decoder rules to numbers")
        except InputError as exc:
            raise InputError(f"{source}: corrupt FLIM model file: {exc}") from None
        return cls(encoder.eval(), n_classes, preprocessing, decoder, layer, {r: float(v) for r, v in scores.items()})

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
    _remove_orphan_temps(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        torch.save(state, tmp)
        os.replace(tmp, path)
    except OSError as exc:  # name the model file, not the temporary one
        raise OSError(exc.errno, exc.strerror or str(exc), str(path)) from exc
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def _remove_orphan_temps(path: Path) -> None:
    """Delete ``.NAME.PID.*.tmp`` files whose writer process is gone (killed mid-write)."""
    for tmp in path.parent.glob(f".{glob.escape(path.name)}.*.tmp"):
        pid = tmp.name[len(path.name) + 2:].split(".", 1)[0]
        if not pid.isdigit() or _alive(int(pid)):
            continue
        try:
            tmp.unlink()
        except OSError:
            pass


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def load_state(path: str | Path) -> dict:
    """Load a dictionary saved by :func:`save_state` (tensors and plain values only).

    Pickled objects other than tensors and plain values are refused (``weights_only``); a file
    that cannot be read raises :class:`InputError` naming it.
    """
    path = Path(path)
    if path.is_dir():
        raise InputError(f"{path}: is a folder, not a model file")
    if not path.is_file():
        raise InputError(f"{path}: model file not found")
    if path.stat().st_size == 0:
        raise InputError(f"{path}: model file is empty")
    try:
        with warnings.catch_warnings():  # torch warns about the pickle protocol of files it then refuses
            warnings.simplefilter("ignore")
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise InputError(f"{path}: not a hitlseg model file: it holds objects other than tensors and plain values, "
                         f"which are refused (unpickling them could run code)") from None
    except Exception as exc:
        raise InputError(f"{path}: cannot read model file: truncated, or not written by hitlseg "
                         f"({brief_error(exc)})") from None


def brief_error(exc: BaseException, limit: int = 240) -> str:
    """``Type: message`` of ``exc`` on one line, at most ``limit`` characters."""
    message = " ".join(str(exc).split())
    text = f"{type(exc).__name__}: {message}" if message else type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


# -- checks of a model file's contents ---------------------------------------------------------------
# A model file is a dictionary of plain values and tensors; a missing key, a value of the wrong
# type or tensors that do not fit together raise InputError saying which (callers add the file).


def state_value(state: dict, key: str, kinds, what: str = ""):
    """``state[key]``, checked to be an instance of ``kinds``."""
    kinds = kinds if isinstance(kinds, tuple) else (kinds,)
    if key not in state:
        raise InputError(f"missing {what}{key!r}")
    value = state[key]
    if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
        expected = " or ".join(k.__name__ for k in kinds)
        raise InputError(f"{what}{key!r} has type {type(value).__name__}, expected {expected}")
    return value


def state_int(state: dict, key: str, minimum: int, what: str = "") -> int:
    """``state[key]`` as an integer of at least ``minimum``."""
    value = state_value(state, key, int, what)
    if value < minimum:
        raise InputError(f"{what}{key!r} is {value}, below {minimum}")
    return int(value)


def check_preprocessing(preprocessing: dict) -> dict:
    """A copy of ``preprocessing`` with ``color``, ``normalize`` and ``max_side`` checked against what the readers accept."""
    from hitlseg.io.images import COLOR_MODES, NORMALIZATIONS

    from hitlseg.io.resample import check_max_side

    for key, allowed in (("color", COLOR_MODES), ("normalize", NORMALIZATIONS)):
        value = preprocessing.get(key)
        if value is not None and value not in allowed:
            raise InputError(f"preprocessing {key!r} is {value!r}, not one of {', '.join(allowed)}")
    check_max_side(preprocessing.get("max_side"), "preprocessing 'max_side'")
    return dict(preprocessing)


def _tensor(layer: dict, key: str, what: str, ndims: tuple[int, ...], floating: bool = True) -> torch.Tensor:
    value = state_value(layer, key, torch.Tensor, what)
    if value.dim() not in ndims:
        raise InputError(f"{what}{key!r} has {value.dim()} dimensions, not {' or '.join(map(str, ndims))}")
    if floating and not value.is_floating_point():
        raise InputError(f"{what}{key!r} holds {value.dtype} values, not floating point")
    if value.is_floating_point() and not bool(torch.isfinite(value).all()):
        raise InputError(f"{what}{key!r} holds NaN or infinite values")
    return value


def _check_layer(layer, index: int, channels: int | None) -> int:
    """Check one layer of an encoder state; returns its output channels."""
    what = f"encoder layer {index} "
    if not isinstance(layer, dict):
        raise InputError(f"{what}is a {type(layer).__name__}, not a dict")
    weight = _tensor(layer, "weight", what, (4, 5))
    out, inputs, *kernel = weight.shape
    if channels is not None and inputs != channels:
        raise InputError(f"{what}takes {inputs} channels, but the layer before gives {channels}")
    for key in ("mean", "std"):
        values = _tensor(layer, key, what, (1,))
        if values.numel() != inputs:
            raise InputError(f"{what}{key!r} has {values.numel()} values for {inputs} input channels")
    if not bool((layer["std"] > 0).all()):
        raise InputError(f"{what}'std' holds values <= 0")
    classes = _tensor(layer, "kernel_classes", what, (1,), floating=False)
    if tuple(classes.shape) != (out,) or classes.is_floating_point() or classes.dtype == torch.bool:
        raise InputError(f"{what}'kernel_classes' must hold {out} integer classes, one per kernel")
    spec = state_value(layer, "spec", dict, what)
    try:
        spec = LayerSpec(**spec)
    except TypeError as exc:
        raise InputError(f"{what}'spec' is not a layer specification ({exc})") from None
    except InputError as exc:
        raise InputError(f"{what}'spec': {exc}") from None
    if len(set(kernel)) != 1 or kernel[0] != spec.kernel_size:
        raise InputError(f"{what}'weight' has kernels of size {tuple(kernel)}, but its spec says {spec.kernel_size}")
    return out


def encoder_from_state(state: dict) -> FLIMEncoder:
    """A :class:`FLIMEncoder` from :meth:`FLIMEncoder.to_state` output, every part checked first.

    Raises
    ------
    InputError
        Naming the missing key or the value that is wrong (callers add the file).
    """
    ArchSpec.from_dict(state_value(state, "arch", dict, "encoder "), "encoder 'arch'")
    layers = state_value(state, "layers", list, "encoder ")
    if not layers:
        raise InputError("encoder 'layers' is empty")
    channels = None
    for index, layer in enumerate(layers, 1):
        channels = _check_layer(layer, index, channels)
    if len({layer["weight"].dim() for layer in layers}) != 1:
        raise InputError("encoder layers mix 2D and 3D kernels")
    return FLIMEncoder.from_state(state)
