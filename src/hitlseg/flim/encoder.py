"""The FLIM encoder as a torch module: per layer, marker-based normalisation -> conv -> ReLU -> pool."""

from __future__ import annotations

from dataclasses import asdict

import torch
from torch import nn

from hitlseg.flim import ops
from hitlseg.flim.spec import ArchSpec, LayerSpec


class FLIMLayer(nn.Module):
    """One learned FLIM layer.

    Buffers: ``mean`` and ``std`` (per input channel, from marked pixels), ``weight``
    ``(out, in, k, k[, k])`` of unit-norm kernels, and ``kernel_classes`` (the class of the marker
    each kernel came from: 0 background, c for object class c). With ``folded=True`` the
    normalisation is folded into the conv weights and a bias, giving the same output.
    """

    def __init__(self, spec: LayerSpec, weight: torch.Tensor, mean: torch.Tensor, std: torch.Tensor,
                 kernel_classes: torch.Tensor, folded: bool = False):
        super().__init__()
        self.spec = spec
        self.folded = folded
        self.register_buffer("weight", weight.float())
        self.register_buffer("mean", mean.float())
        self.register_buffer("std", std.float())
        self.register_buffer("kernel_classes", kernel_classes.long())
        if folded:
            folded_weight, folded_bias = self.folded_parameters()
            self.register_buffer("folded_weight", folded_weight)
            self.register_buffer("folded_bias", folded_bias)

    def folded_parameters(self, kernels=None) -> tuple[torch.Tensor, torch.Tensor]:
        """Conv weight and bias with the normalisation folded in, for all kernels or the given indices.

        ``conv(x, weight, bias) == conv(normalize(x), self.weight)`` for those kernels.
        """
        weight = self.weight if kernels is None else self.weight[torch.as_tensor(kernels, device=self.weight.device)]
        shape = (1, -1) + (1,) * (weight.dim() - 2)
        folded = weight / self.std.reshape(shape)
        return folded, -(folded * self.mean.reshape(shape)).flatten(1).sum(1)

    @property
    def in_channels(self) -> int:
        return int(self.weight.shape[1])

    @property
    def out_channels(self) -> int:
        return int(self.weight.shape[0])

    @property
    def ndim(self) -> int:
        return self.weight.dim() - 2

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """Marker-based z-score of ``x`` (N, C, *spatial)."""
        shape = (1, -1) + (1,) * self.ndim
        return (x - self.mean.reshape(shape)) / self.std.reshape(shape)

    def convolve(self, x: torch.Tensor) -> torch.Tensor:
        """Normalisation and convolution (before ReLU and pooling)."""
        if self.folded:
            return ops.conv(x, self.folded_weight, self.folded_bias, self.spec.dilation)
        return ops.conv(self.normalize(x), self.weight, None, self.spec.dilation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.convolve(x)
        if self.spec.relu:
            y = torch.relu(y)
        return ops.pool(y, self.spec.pool, self.spec.pool_size, self.spec.pool_stride)


class FLIMEncoder(nn.Module):
    """A stack of :class:`FLIMLayer`; no parameter is trained by backpropagation.

    ``forward(x)`` maps ``(N, C, *spatial)`` to the last layer's features; :meth:`features`
    returns every layer's output (for skip connections and decoders at any depth).
    """

    def __init__(self, arch: ArchSpec, layers: list[FLIMLayer]):
        super().__init__()
        self.arch = arch
        self.layers = nn.ModuleList(layers)
        for parameter in self.parameters():
            parameter.requires_grad_(False)

    @property
    def ndim(self) -> int:
        """Spatial dimensions (2 or 3)."""
        return self.layers[0].ndim

    @property
    def in_channels(self) -> int:
        return self.layers[0].in_channels

    @property
    def out_channels(self) -> list[int]:
        """Channels of each layer's output."""
        return [layer.out_channels for layer in self.layers]

    @property
    def strides(self) -> list[int]:
        """Cumulative downsampling factor after each layer."""
        return self.arch.strides

    def check_input(self, x: torch.Tensor) -> None:
        """Raise :class:`InputError` if ``x`` is not ``(N, in_channels, *spatial)`` of the right ndim."""
        ops.check_batch(x, self.ndim, self.in_channels, "was learned on")

    def features(self, x: torch.Tensor, upto: int | None = None) -> list[torch.Tensor]:
        """Outputs of layers 0..``upto`` (all by default) for a batch ``x``."""
        self.check_input(x)
        return ops.layer_outputs(x, self.layers, upto)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)[-1]

    def folded(self) -> "FLIMEncoder":
        """A copy whose layers fold the normalisation into conv weights and biases (same outputs)."""
        layers = [FLIMLayer(l.spec, l.weight, l.mean, l.std, l.kernel_classes, folded=True) for l in self.layers]
        return FLIMEncoder(self.arch, layers).to(self.layers[0].weight.device)

    def kernel_classes(self, layer: int = -1) -> torch.Tensor:
        """Class of the marker each kernel of ``layer`` was learned from."""
        return self.layers[layer].kernel_classes

    def to_state(self) -> dict:
        """Plain dictionary of tensors and numbers, for :func:`torch.save` with ``weights_only`` loading."""
        return {
            "arch": self.arch.to_dict(),
            "layers": [
                {"weight": l.weight.cpu(), "mean": l.mean.cpu(), "std": l.std.cpu(), "kernel_classes": l.kernel_classes.cpu(),
                 "spec": asdict(l.spec)}
                for l in self.layers
            ],
        }

    @classmethod
    def from_state(cls, state: dict) -> "FLIMEncoder":
        """Inverse of :meth:`to_state`."""
        arch = ArchSpec.from_dict(state["arch"])
        layers = [
            FLIMLayer(LayerSpec(**l["spec"]), l["weight"], l["mean"], l["std"], l["kernel_classes"]) for l in state["layers"]
        ]
        return cls(arch, layers)
