"""A segmentation model on disk: architecture, weights, FLIM encoder and preprocessing in one file."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from hitlseg import __version__
from hitlseg.errors import InputError
from hitlseg.plain import to_plain
from hitlseg.flim.encoder import FLIMEncoder
from hitlseg.flim.fit import resolve_device
from hitlseg.flim.model import (brief_error, check_preprocessing, encoder_from_state, load_state, save_state, state_int,
                                state_value)
from hitlseg.flim.spec import ArchSpec, default_arch
from hitlseg.nets.infer import Prediction, predict
from hitlseg.nets.postprocess import check_postprocess, postprocess as apply_postprocess
from hitlseg.nets.unet import BackpropEncoder, SegNet
from hitlseg.validate import check_image_size

FORMAT = "hitlseg-seg-model"
KINDS = ("sunet", "unet")
DEFAULT_PREPROCESSING = {"color": "lab", "normalize": "percentile"}


@dataclass
class SegModel:
    """A U-Net-family segmentation network with what is needed to use it on new images.

    Attributes
    ----------
    kind : {"sunet", "unet"}
        ``sunet``: frozen FLIM encoder + trained decoder; ``unet``: encoder trained too.
    net : SegNet
        The network; logits ``(N, n_classes + 1, *spatial)``.
    preprocessing : dict
        How images are read (``color``, ``normalize``), passed to :func:`hitlseg.io.read_image`.
    window : tuple of int or None
        Sliding-window size for images larger than it (the training crop size).
    info : dict
        Free-form provenance (training history, split, encoder source), plain values only.
    postprocess : {"none", "largest", "agree"}
        Applied to the labels of every prediction (:mod:`hitlseg.nets.postprocess`): ``largest``
        keeps the largest object and fills its holes, for images that hold one object each;
        ``agree`` keeps the objects the FLIM adaptive decoder also finds (sU-Net only).
    flim_decoder : str or None
        Adaptive decoder rule (:data:`hitlseg.flim.decoders.DECODERS`) that ``agree`` runs on the
        frozen FLIM encoder; the strokes learner stores the one the markers choose
        (:func:`hitlseg.flim.decoders.choose_rule`). None: ``labels`` when the last layer has
        kernels of two or more marker classes, ``weights`` otherwise.
    """

    kind: str
    net: SegNet
    preprocessing: dict = field(default_factory=lambda: dict(DEFAULT_PREPROCESSING))
    window: tuple[int, ...] | None = None
    info: dict = field(default_factory=dict)
    postprocess: str = "none"
    flim_decoder: str | None = None

    def __post_init__(self):
        self.postprocess = check_postprocess(self.postprocess)
        self.flim_decoder = _check_flim_decoder(self.flim_decoder)

    # -- construction -----------------------------------------------------------------------------
    @classmethod
    def sunet(cls, encoder: FLIMEncoder, n_classes: int, *, preprocessing: dict | None = None, norm: str = "instance",
              widths: Sequence[int] | None = None, seed: int = 0) -> "SegModel":
        """sU-Net: ``encoder`` (a fitted FLIM encoder, kept frozen) and a symmetric decoder initialised with ``seed``."""
        if not isinstance(encoder, FLIMEncoder):
            raise InputError(f"encoder: need a fitted FLIMEncoder, got {type(encoder).__name__}")
        with torch.random.fork_rng(devices=[]):  # seeded initialisation, global RNG left as it was
            torch.manual_seed(seed)
            net = SegNet(encoder.eval(), n_classes, frozen=True, norm=norm, widths=widths)
        return cls("sunet", net, dict(preprocessing or DEFAULT_PREPROCESSING))

    @classmethod
    def unet(cls, in_channels: int, n_classes: int, ndim: int = 2, *, arch: ArchSpec | None = None,
             preprocessing: dict | None = None, norm: str = "instance", widths: Sequence[int] | None = None,
             convs_per_layer: int = 1, seed: int = 0) -> "SegModel":
        """Baseline U-Net: a trainable encoder laid out like ``arch`` (the FLIM default) and the same decoder."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            encoder = BackpropEncoder(arch or default_arch(), in_channels, ndim, norm=norm, convs_per_layer=convs_per_layer)
            net = SegNet(encoder, n_classes, frozen=False, norm=norm, widths=widths)
        return cls("unet", net, dict(preprocessing or DEFAULT_PREPROCESSING))

    # -- properties ------------------------------------------------------------------------------
    @property
    def n_classes(self) -> int:
        return self.net.n_classes

    @property
    def in_channels(self) -> int:
        return self.net.in_channels

    @property
    def ndim(self) -> int:
        return self.net.ndim

    @property
    def arch(self) -> ArchSpec:
        return self.net.encoder.arch

    @property
    def device(self) -> torch.device:
        return next(iter(self.net.decoder.parameters())).device

    def to(self, device=None) -> "SegModel":
        self.net.to(resolve_device(device))
        return self

    # -- inference -------------------------------------------------------------------------------
    def check_image(self, image: np.ndarray, name: str = "image") -> np.ndarray:
        """Return ``image`` as float32, or raise :class:`InputError` naming it if it does not fit the model
        (dimensions, channels, or too small for the encoder)."""
        image = np.asarray(image, dtype=np.float32)
        if image.ndim != self.ndim + 1:
            raise InputError(f"{name}: the model is {self.ndim}D and needs (C, *spatial) images, got shape {image.shape}")
        if image.shape[0] != self.in_channels:
            raise InputError(f"{name}: has {image.shape[0]} channels, but the model was trained on "
                             f"{self.in_channels}-channel images")
        check_image_size(image.shape[1:], self.arch, name, reflect=self.kind == "sunet")
        return image

    def predict(self, image: np.ndarray, *, name: str = "image", window="auto", overlap: float = 0.5,
                blend: str = "gaussian", postprocess: str | None = None) -> Prediction:
        """Probabilities ``(K + 1, *spatial)`` and labels of one image ``(C, *spatial)``.

        ``window="auto"`` uses a sliding window of :attr:`window` for images larger than it and
        the whole image otherwise; ``None`` always runs the whole image. ``postprocess`` (default:
        the model's :attr:`postprocess`) changes the labels only, never the probabilities.
        """
        rule = self.postprocess if postprocess is None else check_postprocess(postprocess)
        image = self.check_image(image, name)
        window = self.window if window == "auto" else window
        prediction = predict(self.net, image, window=window, overlap=overlap, blend=blend)
        if rule != "none":
            prediction = Prediction(prediction.probabilities, self.postprocess_labels(image, prediction.labels, rule))
        return prediction

    def postprocess_labels(self, image: np.ndarray, labels: np.ndarray, rule: str | None = None) -> np.ndarray:
        """``labels`` of ``image`` after the post-processing ``rule`` (default: the model's :attr:`postprocess`).

        ``agree`` decodes the image with the FLIM adaptive decoder (:attr:`flim_decoder`) on the
        sU-Net's frozen encoder, at full resolution, and keeps the objects of ``labels`` that its
        mask overlaps (:func:`hitlseg.nets.postprocess.agreeing_objects`).
        """
        rule = self.postprocess if rule is None else check_postprocess(rule)
        if rule != "agree":
            return apply_postprocess(labels, rule)
        return apply_postprocess(labels, rule, other=self.flim_mask(image))

    def flim_mask(self, image: np.ndarray) -> np.ndarray:
        """The FLIM adaptive decoder's mask of ``image`` (C, *spatial) on this sU-Net's frozen encoder."""
        from hitlseg.flim.decoders import decode

        encoder = self.net.encoder
        if not isinstance(encoder, FLIMEncoder):
            raise InputError("postprocess 'agree': needs an sU-Net (a frozen FLIM encoder); this model's encoder "
                             "was trained by backpropagation")
        layer = encoder.layers[-1]
        rule = self.flim_decoder or _default_flim_decoder(layer.kernel_classes)
        x = torch.as_tensor(self.check_image(image), device=self.device)[None]
        with torch.no_grad():
            features = encoder.features(x, upto=len(encoder.layers) - 1)[-1][0]
        n_classes = None if rule == "weights" else self.n_classes
        return decode(features, layer.kernel_classes, tuple(image.shape[1:]), rule, n_classes).mask

    # -- persistence -----------------------------------------------------------------------------
    def to_state(self) -> dict:
        """Plain dictionary of tensors and values (see :meth:`save`)."""
        encoder = self.net.encoder
        return {
            "format": FORMAT,
            "hitlseg_version": __version__,
            "kind": self.kind,
            "ndim": self.ndim,
            "in_channels": self.in_channels,
            "n_classes": self.n_classes,
            "arch": encoder.arch.to_dict(),
            "norm": self.net.norm,
            "decoder_widths": list(self.net.decoder.widths),
            "convs_per_layer": _convs_per_layer(encoder),
            "flim_encoder": encoder.to_state() if isinstance(encoder, FLIMEncoder) else None,
            "weights": {k: v.detach().cpu() for k, v in self.net.trainable_state().items()},
            "preprocessing": dict(self.preprocessing),
            "window": list(self.window) if self.window is not None else None,
            "info": to_plain(self.info),
            "postprocess": self.postprocess,
            "flim_decoder": self.flim_decoder,
        }

    @classmethod
    def from_state(cls, state: dict, source: str = "model") -> "SegModel":
        """Inverse of :meth:`to_state`; a state that is not one raises :class:`InputError` naming ``source``."""
        if isinstance(state, dict) and state.get("format") == "hitlseg-flim-model":
            raise InputError(f"{source}: is a FLIM model (use it with 'flim predict' or as --encoder flim:FILE), "
                             f"not a segmentation model")
        if not isinstance(state, dict) or state.get("format") != FORMAT:
            raise InputError(f"{source}: not a hitlseg segmentation model file")
        try:
            model = _model_from_state(cls, state)
        except InputError as exc:
            raise InputError(f"{source}: corrupt segmentation model file: {exc}") from None
        except (KeyError, TypeError, ValueError, RuntimeError) as exc:
            raise InputError(f"{source}: corrupt segmentation model file ({brief_error(exc)})") from None
        model.net.eval()
        return model

    def save(self, path: str | Path) -> Path:
        """Write the model (architecture, weights, FLIM encoder, preprocessing) to one file, atomically."""
        return save_state(self.to_state(), path)

    @classmethod
    def load(cls, path: str | Path, device=None) -> "SegModel":
        """Read a model written by :meth:`save`."""
        return cls.from_state(load_state(path), str(path)).to(device)


def _convs_per_layer(encoder) -> int:
    if isinstance(encoder, BackpropEncoder):
        return sum(isinstance(m, (torch.nn.Conv2d, torch.nn.Conv3d)) for m in encoder.blocks[0])
    return 1


def _model_from_state(cls, state: dict) -> SegModel:
    """Build the model of :meth:`SegModel.to_state` output, checking each entry first."""
    kind = state_value(state, "kind", str)
    if kind not in KINDS:
        raise InputError(f"unknown model kind {kind!r} (use one of {', '.join(KINDS)})")
    ndim = state_int(state, "ndim", 2)
    if ndim not in (2, 3):
        raise InputError(f"'ndim' is {ndim}, not 2 or 3")
    in_channels, n_classes = state_int(state, "in_channels", 1), state_int(state, "n_classes", 1)
    arch = ArchSpec.from_dict(state_value(state, "arch", dict), "'arch'")
    norm = state_value(state, "norm", str)
    widths = state_value(state, "decoder_widths", list)
    if not all(isinstance(w, int) and not isinstance(w, bool) and w > 0 for w in widths):
        raise InputError(f"'decoder_widths' must be positive integers, got {widths!r}")
    preprocessing = check_preprocessing(state_value(state, "preprocessing", dict))
    weights = state_value(state, "weights", dict)
    if not all(isinstance(v, torch.Tensor) for v in weights.values()):
        raise InputError("'weights' must map names to tensors")
    if not all(bool(torch.isfinite(v).all()) for v in weights.values() if v.is_floating_point()):
        raise InputError("'weights' hold NaN or infinite values")
    options = {"preprocessing": preprocessing, "norm": norm, "widths": widths}
    if kind == "sunet":
        encoder = encoder_from_state(state_value(state, "flim_encoder", dict))
        if (encoder.ndim, encoder.in_channels) != (ndim, in_channels):
            raise InputError(f"the FLIM encoder takes {encoder.in_channels}-channel {encoder.ndim}D images, but the "
                             f"model says {in_channels}-channel {ndim}D")
        model = cls.sunet(encoder, n_classes, **options)
    else:
        convs = state_int(state, "convs_per_layer", 1) if "convs_per_layer" in state else 1
        model = cls.unet(in_channels, n_classes, ndim, arch=arch, convs_per_layer=convs, **options)
    model.net.load_trainable_state(weights)
    window = state.get("window")
    if window is not None:
        if not (isinstance(window, (list, tuple)) and len(window) == ndim
                and all(isinstance(w, int) and not isinstance(w, bool) and w > 0 for w in window)):
            raise InputError(f"'window' must be {ndim} positive integers or None, got {window!r}")
        model.window = tuple(window)
    info = state.get("info")
    if info is not None and not isinstance(info, dict):
        raise InputError(f"'info' is a {type(info).__name__}, expected dict")
    model.info = dict(info or {})
    postprocess = state.get("postprocess", "none")  # absent from models written before it existed
    if not isinstance(postprocess, str):
        raise InputError(f"'postprocess' is a {type(postprocess).__name__}, expected str")
    model.postprocess = check_postprocess(postprocess)
    model.flim_decoder = _check_flim_decoder(state.get("flim_decoder"))  # absent before it existed
    return model


def _check_flim_decoder(rule):
    from hitlseg.flim.decoders import DECODERS

    if rule is not None and rule not in DECODERS:
        raise InputError(f"flim_decoder: unknown adaptive decoder rule {rule!r} (use one of {', '.join(DECODERS)})")
    return rule


def _default_flim_decoder(kernel_classes: torch.Tensor) -> str:
    """``labels`` with kernels of background and an object class at least, ``weights`` otherwise."""
    present = {int(c) for c in torch.unique(kernel_classes)}
    return "labels" if 0 in present and len(present) > 1 else "weights"
