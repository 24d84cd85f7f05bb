"""FLIM architecture specification: layers of conv -> ReLU -> pooling, saved as JSON.

Besides hitlseg's own JSON, :func:`read_arch` reads the FLIM community's ``arch.json``
(``nlayers``, ``stdev_factor``, ``layerN.conv.{kernel_size, dilation_rate, nkernels_per_marker,
noutput_channels}``, ``layerN.relu``, ``layerN.pooling.{type, size, stride}``; a third size of 0
means 2D).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from hitlseg.errors import InputError

POOL_TYPES = ("max", "avg", "none")


@dataclass(frozen=True)
class LayerSpec:
    """One FLIM layer: conv (kernels estimated from marker patches), optional ReLU, pooling."""

    kernel_size: int = 3
    dilation: int = 1
    kernels_per_marker: int = 8
    out_channels: int = 32
    relu: bool = True
    pool: str = "max"
    pool_size: int = 3
    pool_stride: int = 1

    def __post_init__(self):
        for name in ("kernel_size", "dilation", "kernels_per_marker", "out_channels", "pool_size", "pool_stride"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise InputError(f"{name}: must be a positive integer, got {value!r}")
        if self.kernel_size % 2 == 0:
            raise InputError(f"kernel_size: must be odd so patches are centred on a pixel, got {self.kernel_size}")
        if self.pool not in POOL_TYPES:
            raise InputError(f"pool: unknown type {self.pool!r} (use one of {', '.join(POOL_TYPES)})")

    @property
    def reach(self) -> int:
        """Half extent of the (dilated) kernel in pixels."""
        return self.dilation * (self.kernel_size // 2)


@dataclass(frozen=True)
class ArchSpec:
    """A FLIM encoder architecture: its layers and the marker-normalisation ``stdev_factor``."""

    layers: tuple[LayerSpec, ...] = field(default_factory=tuple)
    stdev_factor: float = 0.01

    def __post_init__(self):
        if not self.layers:
            raise InputError("arch: needs at least one layer")
        if self.stdev_factor < 0:
            raise InputError(f"stdev_factor: must be >= 0, got {self.stdev_factor}")

    @property
    def strides(self) -> list[int]:
        """Cumulative downsampling factor after each layer."""
        strides, total = [], 1
        for layer in self.layers:
            total *= layer.pool_stride if layer.pool != "none" else 1
            strides.append(total)
        return strides

    @property
    def total_stride(self) -> int:
        """Downsampling factor of the whole encoder."""
        return self.strides[-1]

    def to_dict(self) -> dict:
        """JSON-ready dictionary (hitlseg's own format)."""
        return {"format": "hitlseg-flim-arch", "stdev_factor": self.stdev_factor, "layers": [asdict(l) for l in self.layers]}

    @classmethod
    def from_dict(cls, data: dict, source: str = "arch") -> "ArchSpec":
        """Build from hitlseg's format or the FLIM community's ``arch.json`` dictionary."""
        if not isinstance(data, dict):
            raise InputError(f"{source}: an architecture must be a JSON object")
        try:
            if "nlayers" in data:
                return _from_community(data)
            layers = tuple(LayerSpec(**layer) for layer in data["layers"])
            return cls(layers, float(data.get("stdev_factor", 0.01)))
        except InputError as exc:
            raise InputError(f"{source}: {exc}") from None
        except (KeyError, TypeError, ValueError) as exc:
            raise InputError(f"{source}: not a FLIM architecture ({type(exc).__name__}: {exc})") from None

    def save(self, path: str | Path) -> Path:
        """Write as JSON, atomically."""
        from hitlseg.project.files import write_json

        return write_json(path, self.to_dict(), indent=2)


def _from_community(data: dict) -> ArchSpec:
    layers = []
    for index in range(1, int(data["nlayers"]) + 1):
        layer = data[f"layer{index}"]
        conv, pooling = layer["conv"], layer.get("pooling", {"type": "none"})
        size = conv["kernel_size"]
        kernel = int(size[0] if isinstance(size, list) else size)
        dilation = conv.get("dilation_rate", 1)
        pool_type = str(pooling.get("type", "none")).replace("_pool", "").replace("pool", "") or "none"
        pool_size = pooling.get("size", 1)
        layers.append(
            LayerSpec(
                kernel_size=kernel,
                dilation=int(dilation[0] if isinstance(dilation, list) else dilation),
                kernels_per_marker=int(conv["nkernels_per_marker"]),
                out_channels=int(conv["noutput_channels"]),
                relu=bool(layer.get("relu", True)),
                pool=pool_type if pool_type in POOL_TYPES else "none",
                pool_size=int(pool_size[0] if isinstance(pool_size, list) else pool_size),
                pool_stride=int(pooling.get("stride", 1)),
            )
        )
    return ArchSpec(tuple(layers), float(data.get("stdev_factor", 0.01)))


def read_arch(path: str | Path) -> ArchSpec:
    """Read an architecture JSON file (hitlseg's format or the FLIM community's ``arch.json``)."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise InputError(f"{path}: architecture file not found") from None
    except (OSError, ValueError) as exc:
        raise InputError(f"{path}: not valid JSON ({exc})") from None
    return ArchSpec.from_dict(data, source=str(path))


def default_arch() -> ArchSpec:
    """Three layers of 3-wide kernels dilated 1, 2 and 3; 32/32/64 channels; average pooling with
    stride 2 after layers 1 and 2 (features at 1/4 resolution)."""
    return ArchSpec(
        (
            LayerSpec(kernel_size=3, dilation=1, kernels_per_marker=8, out_channels=32, pool="avg", pool_size=3, pool_stride=2),
            LayerSpec(kernel_size=3, dilation=2, kernels_per_marker=8, out_channels=32, pool="avg", pool_size=3, pool_stride=2),
            LayerSpec(kernel_size=3, dilation=3, kernels_per_marker=8, out_channels=64, pool="avg", pool_size=3, pool_stride=1),
        )
    )
