"""A learned hash head on frozen descriptors: order-sensitive triplet ranking + multi-label classification.

The head is a small MLP (standardised descriptor -> ``hidden`` ReLU units -> ``bits``) whose
relaxed codes are ``tanh(beta * z)``; the code of an image is ``sign(z)``. It is trained on the
images an index is fitted on, with their labels (a multi-hot matrix: classes present in the
markers or the accepted masks, or image-level labels, see :mod:`hitlseg.retrieval.labels`):

* **triplet ranking, order-sensitive** (Chen et al. 2018): the similarity of two images is the
  number of labels they share; for an anchor ``i`` and images ``j``, ``k`` with
  ``s_ij > s_ik``, the relaxed Hamming distance (``(bits - b_i . b_j) / 2``, divided by ``bits``)
  to ``j`` must be smaller than to ``k`` by a margin ``margin * (s_ij - s_ik)``, so that images
  sharing more labels rank higher;
* **multi-label classification**: a linear layer on the relaxed codes predicts the labels
  (binary cross-entropy), so the bits also carry the labels themselves;
* **continuation** against the quantisation loss (Cao et al., HashNet, ICCV 2017): ``beta``
  grows from 1 to ``beta_max`` in stages, so the relaxed codes approach the signs, plus
  ``quantization * mean((|b| - 1)^2)``.

Training is seeded (a forked torch RNG) and full-batch, so the same data and seed give the same
codes.

References
----------
Z. Chen, R. Cai, J. Lu, J. Feng, J. Zhou, "Order-sensitive deep hashing for multimorbidity medical
image retrieval", MICCAI 2018 (LNCS 11070), doi:10.1007/978-3-030-00928-1_70.
Z. Cao, M. Long, J. Wang, P. S. Yu, "HashNet: deep learning to hash by continuation", ICCV 2017.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import nn

from hitlseg.errors import InputError
from hitlseg.progress import Progress, report
from hitlseg.retrieval.hashing import _check_vectors, check_bits, pack

__all__ = ["DeepHashConfig", "DeepHasher"]


@dataclass
class DeepHashConfig:
    """Training settings of :class:`DeepHasher` (defaults chosen a priori, not tuned on test images)."""

    hidden: int = 256
    epochs: int = 300
    lr: float = 1e-3
    weight_decay: float = 1e-4
    margin: float = 0.1
    classification: float = 1.0
    quantization: float = 0.1
    beta_max: float = 8.0
    stages: int = 4
    triplets_per_anchor: int = 16


class _Head(nn.Module):
    def __init__(self, dimension: int, hidden: int, bits: int, n_labels: int):
        super().__init__()
        self.hash = nn.Sequential(nn.Linear(dimension, hidden), nn.ReLU(), nn.Linear(hidden, bits))
        self.classify = nn.Linear(bits, n_labels)


class DeepHasher:
    """Learned hash codes of ``bits`` bits (see the module docstring)."""

    name = "deep"

    def __init__(self, bits: int, seed: int = 0, config: DeepHashConfig | None = None):
        self.bits, self.seed = check_bits(bits), int(seed)
        self.config = config or DeepHashConfig()
        self.head: _Head | None = None
        self.mean: np.ndarray | None = None
        self.scale: np.ndarray | None = None
        self.history: list[float] = []

    @property
    def dimension(self) -> int:
        self._check_fitted()
        return int(self.mean.shape[0])

    def _check_fitted(self):
        if self.head is None:
            raise InputError("hash: not fitted yet (call fit first)")

    def _standardise(self, x: np.ndarray) -> torch.Tensor:
        return torch.from_numpy((x - self.mean) / self.scale)

    def fit(self, vectors, labels, progress: Progress = None) -> "DeepHasher":
        """Train on descriptors ``(n, D)`` and a multi-hot label matrix ``(n, L)``."""
        x = _check_vectors(vectors)
        if labels is None:
            raise InputError("labels: the deep hash learns from labels (markers, masks or image-level labels); "
                             "none were given (use --labels, or --hash lsh|itq)")
        y = np.asarray(labels, dtype=np.float32)
        if y.ndim != 2 or len(y) != len(x):
            raise InputError(f"labels: expected a ({len(x)}, n_labels) matrix, got shape {y.shape}")
        if y.shape[1] == 0 or not y.any():
            raise InputError("labels: no image has a label; the deep hash has nothing to learn from")
        if len(x) < 3:
            raise InputError(f"descriptors: the deep hash needs at least 3 labelled images, got {len(x)}")
        cfg = self.config
        self.mean = x.mean(0)
        self.scale = np.maximum(x.std(0), 1e-6 * max(float(x.std()), 1e-12)).astype(np.float32)
        self.scale[self.scale == 0] = 1.0
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            generator = torch.Generator().manual_seed(self.seed)
            head = _Head(x.shape[1], cfg.hidden, self.bits, y.shape[1])
            self.history = _train(head, self._standardise(x), torch.from_numpy(y), self.bits, cfg, generator, progress)
        self.head = head.eval()
        return self

    def relaxed(self, vectors) -> np.ndarray:
        """Pre-sign outputs ``z`` ``(n, bits)`` of the hash layer."""
        self._check_fitted()
        x = _check_vectors(vectors, self.dimension)
        with torch.no_grad():
            return self.head.hash(self._standardise(x)).numpy()

    def encode(self, vectors) -> np.ndarray:
        return pack(self.relaxed(vectors))

    # -- persistence ------------------------------------------------------------------------------
    def to_state(self) -> dict:
        self._check_fitted()
        weights = {f"w:{k}": v.detach().cpu().numpy() for k, v in self.head.state_dict().items()}
        return {"hash": self.name, "bits": self.bits, "seed": self.seed, "config": asdict(self.config),
                "mean": self.mean, "scale": self.scale, "n_labels": int(self.head.classify.out_features), **weights}

    @classmethod
    def from_state(cls, state: dict) -> "DeepHasher":
        config = state["config"]
        config = DeepHashConfig(**(config if isinstance(config, dict) else dict(config)))
        hasher = cls(int(state["bits"]), int(state["seed"]), config)
        hasher.mean = np.asarray(state["mean"], dtype=np.float32)
        hasher.scale = np.asarray(state["scale"], dtype=np.float32)
        head = _Head(len(hasher.mean), config.hidden, hasher.bits, int(state["n_labels"]))
        weights = {k[2:]: torch.from_numpy(np.asarray(v)) for k, v in state.items() if str(k).startswith("w:")}
        try:
            head.load_state_dict(weights, strict=True)
        except RuntimeError as exc:
            raise InputError(f"deep hash weights do not fit its head ({' '.join(str(exc).split())[:200]})") from None
        hasher.head = head.eval()
        return hasher


def _train(head: _Head, x: torch.Tensor, y: torch.Tensor, bits: int, cfg: DeepHashConfig,
           generator: torch.Generator, progress: Progress) -> list[float]:
    similarity = y @ y.T  # shared labels
    n = len(x)
    optimiser = torch.optim.Adam(head.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    bce = nn.BCEWithLogitsLoss()
    anchors = torch.arange(n).repeat_interleave(cfg.triplets_per_anchor)
    history = []
    head.train()
    for epoch in range(cfg.epochs):
        stage = min(cfg.stages - 1, epoch * cfg.stages // cfg.epochs)
        beta = cfg.beta_max ** (stage / max(cfg.stages - 1, 1))
        z = head.hash(x)
        b = torch.tanh(beta * z)
        j = torch.randint(n, (len(anchors),), generator=generator)
        k = torch.randint(n, (len(anchors),), generator=generator)
        gap = similarity[anchors, j] - similarity[anchors, k]
        keep = (gap > 0) & (j != anchors)
        near = (bits - (b[anchors] * b[j]).sum(1)) / (2 * bits)
        far = (bits - (b[anchors] * b[k]).sum(1)) / (2 * bits)
        hinge = torch.relu(near - far + cfg.margin * gap)
        ranking = hinge[keep].mean() if bool(keep.any()) else b.sum() * 0
        loss = ranking + cfg.classification * bce(head.classify(b), y) + cfg.quantization * ((b.abs() - 1) ** 2).mean()
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        history.append(float(loss.detach()))
        report(progress, epoch + 1, cfg.epochs, f"deep hash, epoch {epoch + 1}/{cfg.epochs}")
    return history
