"""The U-Net family, 2D and 3D: an encoder (FLIM, frozen, or trained by backpropagation) and a
symmetric decoder with skip connections.

Both encoders expose the interface of :class:`hitlseg.flim.FLIMEncoder`: ``features(x)`` returns
each layer's output, ``out_channels`` their widths, ``strides`` their cumulative downsampling,
``ndim`` and ``in_channels``. One :class:`Decoder` therefore serves both.

The decoder walks the encoder's layers back: the deepest features are upsampled to the exact
spatial size of the previous layer's output (FLIM pools may have stride 1, and 'same' pooling
gives ceil sizes), concatenated with it, and passed through two conv-norm-ReLU blocks; the last
stage uses the input image itself as its skip, so the logits come out at the input size.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from hitlseg.errors import InputError
from hitlseg.flim import ops
from hitlseg.flim.spec import ArchSpec, LayerSpec

NORMS = ("batch", "instance", "none")


def conv_layer(ndim: int, in_channels: int, out_channels: int, kernel_size: int = 3, dilation: int = 1,
               bias: bool = True) -> nn.Module:
    """A 'same'-size convolution (zero padding), 2D or 3D."""
    cls = nn.Conv2d if ndim == 2 else nn.Conv3d
    return cls(in_channels, out_channels, kernel_size, padding=dilation * (kernel_size // 2), dilation=dilation, bias=bias)


def norm_layer(ndim: int, channels: int, norm: str) -> nn.Module:
    """Batch or instance normalisation (affine), or identity."""
    if norm == "batch":
        return (nn.BatchNorm2d if ndim == 2 else nn.BatchNorm3d)(channels)
    if norm == "instance":
        return (nn.InstanceNorm2d if ndim == 2 else nn.InstanceNorm3d)(channels, affine=True)
    if norm == "none":
        return nn.Identity()
    raise InputError(f"norm: unknown normalisation {norm!r} (use one of {', '.join(NORMS)})")


class ConvBlock(nn.Sequential):
    """``n_convs`` times conv -> norm -> ReLU."""

    def __init__(self, ndim: int, in_channels: int, out_channels: int, *, n_convs: int = 2, kernel_size: int = 3,
                 dilation: int = 1, norm: str = "instance", relu: bool = True):
        modules: list[nn.Module] = []
        for index in range(n_convs):
            modules.append(conv_layer(ndim, in_channels if index == 0 else out_channels, out_channels, kernel_size,
                                      dilation, bias=norm == "none"))
            modules.append(norm_layer(ndim, out_channels, norm))
            if relu or index < n_convs - 1:
                modules.append(nn.ReLU(inplace=True))
        super().__init__(*modules)


def make_arch(widths: Sequence[int] = (16, 32, 64), *, kernel_size: int = 3, pool: str = "max", pool_size: int = 3,
              pool_stride: int = 2) -> ArchSpec:
    """A plain U-Net encoder architecture: one layer per width, pooling after every layer but the last.

    Parameters
    ----------
    widths : sequence of int
        Output channels of each encoder layer (the depth is ``len(widths)``).
    kernel_size, pool, pool_size, pool_stride
        Convolution kernel and pooling of every layer.

    Returns
    -------
    ArchSpec
        Usable both to fit a FLIM encoder and to build a :class:`BackpropEncoder`.
    """
    if not widths:
        raise InputError("widths: need at least one encoder layer")
    layers = tuple(
        LayerSpec(kernel_size=kernel_size, out_channels=int(w), pool=pool if i < len(widths) - 1 else "none",
                  pool_size=pool_size, pool_stride=pool_stride)
        for i, w in enumerate(widths)
    )
    return ArchSpec(layers)


class BackpropEncoder(nn.Module):
    """A trainable encoder with the layout of a FLIM architecture.

    Each layer is ``convs_per_layer`` times conv (the spec's kernel size, dilation and width) ->
    norm -> ReLU, followed by the spec's pooling (same operation and output size as FLIM's), so
    the baseline differs from the sU-Net only in how the encoder is learned.
    """

    def __init__(self, arch: ArchSpec, in_channels: int, ndim: int, *, norm: str = "instance", convs_per_layer: int = 1):
        super().__init__()
        if ndim not in (2, 3):
            raise InputError(f"ndim: must be 2 or 3, got {ndim}")
        if in_channels < 1:
            raise InputError(f"in_channels: must be positive, got {in_channels}")
        self.arch = arch
        self._ndim = int(ndim)
        self._in_channels = int(in_channels)
        blocks = []
        channels = in_channels
        for spec in arch.layers:
            blocks.append(ConvBlock(ndim, channels, spec.out_channels, n_convs=convs_per_layer, kernel_size=spec.kernel_size,
                                    dilation=spec.dilation, norm=norm, relu=spec.relu))
            channels = spec.out_channels
        self.blocks = nn.ModuleList(blocks)

    @property
    def ndim(self) -> int:
        return self._ndim

    @property
    def in_channels(self) -> int:
        return self._in_channels

    @property
    def out_channels(self) -> list[int]:
        return [spec.out_channels for spec in self.arch.layers]

    @property
    def strides(self) -> list[int]:
        return self.arch.strides

    def check_input(self, x: torch.Tensor) -> None:
        ops.check_batch(x, self.ndim, self.in_channels)

    def features(self, x: torch.Tensor, upto: int | None = None) -> list[torch.Tensor]:
        """Outputs of layers 0..``upto`` (all by default)."""
        self.check_input(x)
        stages = [lambda x, block=block, spec=spec: ops.pool(block(x), spec.pool, spec.pool_size, spec.pool_stride)
                  for block, spec in zip(self.blocks, self.arch.layers)]
        return ops.layer_outputs(x, stages, upto)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)[-1]


def decoder_widths(encoder_channels: Sequence[int]) -> list[int]:
    """Symmetric widths: stage ``j`` (skip = encoder layer ``j``'s input) outputs the width of layer ``j``'s input.

    Stage 0 (skip: the image) gets half the first layer's width.
    """
    channels = list(encoder_channels)
    return [max(1, channels[0] // 2)] + channels[:-1]


class Decoder(nn.Module):
    """Symmetric decoder: upsample to the skip's exact size, concatenate, two conv blocks; then 1x1 to logits.

    Parameters
    ----------
    ndim : int
        2 or 3.
    in_channels : int
        Channels of the input image (the first skip).
    encoder_channels : sequence of int
        Widths of the encoder layers' outputs.
    n_outputs : int
        Output channels (classes including background).
    widths : sequence of int, optional
        Output width of each stage, from the image level (0) to the level of the last-but-one
        encoder layer; :func:`decoder_widths` by default.
    """

    def __init__(self, ndim: int, in_channels: int, encoder_channels: Sequence[int], n_outputs: int, *,
                 widths: Sequence[int] | None = None, norm: str = "instance", convs_per_stage: int = 2):
        super().__init__()
        encoder_channels = list(encoder_channels)
        widths = list(widths) if widths is not None else decoder_widths(encoder_channels)
        if len(widths) != len(encoder_channels):
            raise InputError(f"decoder widths: need {len(encoder_channels)} values (one per encoder layer), got {len(widths)}")
        self.ndim = ndim
        self.widths = widths
        skips = [in_channels] + encoder_channels[:-1]  # skip of stage j
        stages = []
        below = encoder_channels[-1]
        for level in reversed(range(len(encoder_channels))):
            stages.append(ConvBlock(ndim, below + skips[level], widths[level], n_convs=convs_per_stage, norm=norm))
            below = widths[level]
        self.stages = nn.ModuleList(stages)  # deepest first
        self.head = conv_layer(ndim, widths[0], n_outputs, kernel_size=1)

    def forward(self, image: torch.Tensor, features: Sequence[torch.Tensor]) -> torch.Tensor:
        skips = [image] + list(features[:-1])
        x = features[-1]
        mode = "bilinear" if self.ndim == 2 else "trilinear"
        for stage, skip in zip(self.stages, reversed(skips)):
            if x.shape[2:] != skip.shape[2:]:
                x = F.interpolate(x, size=skip.shape[2:], mode=mode, align_corners=False)
            x = stage(torch.cat([x, skip], dim=1))
        return self.head(x)


class SegNet(nn.Module):
    """Encoder + decoder; ``forward`` maps ``(N, C, *spatial)`` to logits ``(N, n_classes + 1, *spatial)``.

    With ``frozen=True`` (the sU-Net), the encoder is never trained: its features are computed
    without gradients, it stays in eval mode, and :meth:`trainable_parameters` leaves it out.
    """

    def __init__(self, encoder: nn.Module, n_classes: int, *, frozen: bool, norm: str = "instance",
                 widths: Sequence[int] | None = None):
        super().__init__()
        if n_classes < 1:
            raise InputError(f"n_classes: need at least one object class, got {n_classes}")
        self.encoder = encoder
        self.frozen = bool(frozen)
        self.n_classes = int(n_classes)
        self.norm = norm
        self.decoder = Decoder(encoder.ndim, encoder.in_channels, encoder.out_channels, n_classes + 1, widths=widths, norm=norm)
        if self.frozen:
            for parameter in self.encoder.parameters():
                parameter.requires_grad_(False)
            self.encoder.eval()

    @property
    def ndim(self) -> int:
        return self.encoder.ndim

    @property
    def in_channels(self) -> int:
        return self.encoder.in_channels

    def train(self, mode: bool = True) -> "SegNet":
        super().train(mode)
        if self.frozen:
            self.encoder.eval()
        return self

    def trainable_parameters(self) -> list[nn.Parameter]:
        """Parameters the optimiser updates (the decoder only when the encoder is frozen)."""
        modules = [self.decoder] if self.frozen else [self.encoder, self.decoder]
        return [p for m in modules for p in m.parameters() if p.requires_grad]

    def trainable_state(self) -> dict[str, torch.Tensor]:
        """State dict of everything but a frozen encoder (what training changes and a model file stores)."""
        state = self.state_dict()
        if self.frozen:
            state = {k: v for k, v in state.items() if not k.startswith("encoder.")}
        return dict(state)

    def load_trainable_state(self, state: dict[str, torch.Tensor]) -> None:
        """Inverse of :meth:`trainable_state`; raises ``RuntimeError`` on mismatched keys or shapes."""
        if self.frozen:
            extra = [k for k in state if not k.startswith("decoder.")]
            if extra:
                raise RuntimeError(f"unexpected keys {extra[:3]}")
            self.decoder.load_state_dict({k[len("decoder."):]: v for k, v in state.items()}, strict=True)
        else:
            self.load_state_dict(state, strict=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.frozen:
            with torch.no_grad():
                features = self.encoder.features(x)
        else:
            features = self.encoder.features(x)
        return self.decoder(x, features)
