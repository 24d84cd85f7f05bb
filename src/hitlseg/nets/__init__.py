"""Segmentation networks: sU-Net (frozen FLIM encoder + trained decoder) and a U-Net baseline, 2D and 3D."""

from hitlseg.nets.infer import Prediction, predict, predict_probabilities
from hitlseg.nets.model import SegModel
from hitlseg.nets.train import TrainConfig, TrainResult, segmentation_loss, train, validation_dice
from hitlseg.nets.unet import BackpropEncoder, Decoder, SegNet, make_arch

__all__ = [
    "BackpropEncoder",
    "Decoder",
    "Prediction",
    "SegModel",
    "SegNet",
    "TrainConfig",
    "TrainResult",
    "make_arch",
    "predict",
    "predict_probabilities",
    "segmentation_loss",
    "train",
    "validation_dice",
]
