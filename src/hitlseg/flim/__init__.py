"""Feature Learning from Image Markers: encoders whose kernels are estimated from marker patches."""

from hitlseg.flim.decoders import DECODERS, Decoded, decode, masks_from_saliency, saliency_maps
from hitlseg.flim.encoder import FLIMEncoder, FLIMLayer
from hitlseg.flim.fit import fit_encoder, resolve_device
from hitlseg.flim.model import FLIMModel
from hitlseg.flim.spec import ArchSpec, LayerSpec, default_arch, read_arch

__all__ = [
    "ArchSpec",
    "DECODERS",
    "Decoded",
    "FLIMEncoder",
    "FLIMLayer",
    "FLIMModel",
    "LayerSpec",
    "decode",
    "default_arch",
    "fit_encoder",
    "masks_from_saliency",
    "read_arch",
    "resolve_device",
    "saliency_maps",
]
