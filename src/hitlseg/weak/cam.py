"""An image classifier with class activation maps: CAM, Grad-CAM and Grad-CAM++.

The classifier is a convolutional encoder (trained by backpropagation, or a frozen FLIM
encoder learned from strokes) followed by global average pooling of its last feature map and
one linear layer, ``y_c = sum_k w_ck mean_ij A_k(i, j) + b_c``. Three maps say where class
``c`` is seen, each upsampled to the image and normalised to [0, 1]:

- **CAM** (Zhou et al., "Learning Deep Features for Discriminative Localization", CVPR 2016):
  ``M_c = sum_k w_ck A_k``, min-max normalised;
- **Grad-CAM** (Selvaraju et al., "Grad-CAM: Visual Explanations from Deep Networks via
  Gradient-based Localization", ICCV 2017): ``M_c = ReLU(sum_k alpha_k A_k)`` with
  ``alpha_k`` the spatial mean of ``dy_c / dA_k``, divided by its maximum;
- **Grad-CAM++** (Chattopadhyay et al., "Grad-CAM++: Generalized Gradient-based Visual
  Explanations for Deep Convolutional Networks", WACV 2018): weights
  ``w_k = sum_ij a_ij ReLU(dY_c / dA_k(i, j))`` with ``Y_c = exp(y_c)`` and
  ``a_ij = g^2 / (2 g^2 + sum_ab A_k(a, b) g^3)``, ``g = dy_c / dA_k(i, j)`` (the closed form
  of the paper's eq. 19 for the exponential), then as Grad-CAM.

With a pooled linear head the gradient is the same at every pixel, so Grad-CAM equals the
positive part of CAM (up to scale); the three differ for other heads, and the code computes
each by its definition through autograd.
"""

from __future__ import annotations

import time
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from hitlseg.errors import InputError
from hitlseg.flim.fit import resolve_device
from hitlseg.progress import Progress, report

METHODS = ("cam", "gradcam", "gradcam++")


class CamClassifier(nn.Module):
    """Encoder + global average pooling + linear head; ``forward`` gives class logits ``(N, n_labels)``.

    Parameters
    ----------
    encoder : nn.Module
        An encoder with the interface of :class:`hitlseg.flim.FLIMEncoder` (``features(x)``,
        ``out_channels``, ``ndim``, ``in_channels``): a :class:`hitlseg.nets.BackpropEncoder` or
        a fitted FLIM encoder.
    n_labels : int
        Number of image classes (at least 2).
    frozen : bool
        Keep the encoder fixed (features without gradients to its weights): the FLIM case.
    """

    def __init__(self, encoder: nn.Module, n_labels: int, *, frozen: bool = False):
        super().__init__()
        if int(n_labels) < 2:
            raise InputError(f"n_labels: a classifier needs at least 2 image classes, got {n_labels}")
        self.encoder = encoder
        self.frozen = bool(frozen)
        self.head = nn.Linear(encoder.out_channels[-1], int(n_labels))
        if self.frozen:
            for parameter in self.encoder.parameters():
                parameter.requires_grad_(False)
            self.encoder.eval()

    @property
    def n_labels(self) -> int:
        return self.head.out_features

    @property
    def ndim(self) -> int:
        return self.encoder.ndim

    def train(self, mode: bool = True) -> "CamClassifier":
        super().train(mode)
        if self.frozen:
            self.encoder.eval()
        return self

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Every encoder layer's output (without gradients to a frozen encoder)."""
        if self.frozen:
            with torch.no_grad():
                return self.encoder.features(x)
        return self.encoder.features(x)

    def classify(self, last: torch.Tensor) -> torch.Tensor:
        """Logits of the last feature map ``(N, C, *s)``: pooled, then the linear head."""
        return self.head(last.flatten(2).mean(-1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classify(self.features(x)[-1])


def _check_method(method: str) -> str:
    if method not in METHODS:
        raise InputError(f"method: unknown activation map {method!r} (use one of {', '.join(METHODS)})")
    return method


def _normalise(maps: torch.Tensor, method: str) -> torch.Tensor:
    """Per map, to [0, 1]: CAM min-max; the gradient maps (already ReLU'd) divided by their maximum."""
    flat = maps.flatten(1)
    if method == "cam":
        low = flat.min(1).values
        flat = flat - low[:, None]
    high = flat.max(1).values
    flat = torch.where(high[:, None] > 0, flat / high.clamp_min(1e-12)[:, None], torch.zeros_like(flat))
    return flat.view_as(maps)


def activation_maps(model: CamClassifier, images: torch.Tensor, targets=None, method: str = "cam") -> tuple[torch.Tensor, torch.Tensor]:
    """Activation maps of a batch at the resolution of the images, and the class logits.

    Parameters
    ----------
    model : CamClassifier
        Or any module with ``features(x)`` and ``classify(last)`` (the joint model).
    images : Tensor, shape (N, C, *spatial)
    targets : sequence of int, optional
        Class whose map to compute per image; the predicted class by default.
    method : {"cam", "gradcam", "gradcam++"}

    Returns
    -------
    maps : Tensor, shape (N, *spatial), values in [0, 1]
    logits : Tensor, shape (N, n_labels)
    """
    method = _check_method(method)
    was_training = model.training
    model.eval()
    try:
        with torch.enable_grad():
            last = model.features(images)[-1].detach().requires_grad_(True)
            logits = model.classify(last)
            if targets is None:
                chosen = logits.argmax(1)
            else:
                chosen = torch.as_tensor(np.asarray(targets), dtype=torch.long, device=logits.device).reshape(-1)
                if chosen.numel() != logits.shape[0] or bool((chosen < 0).any()) or bool((chosen >= logits.shape[1]).any()):
                    raise InputError(f"targets: need one class in 0..{logits.shape[1] - 1} per image, got {targets!r}")
            score = logits.gather(1, chosen[:, None]).sum()
            if method == "cam":
                weights = model.head.weight[chosen]  # (N, C)
                maps = torch.einsum("nc,nc...->n...", weights, last)
            else:
                (grads,) = torch.autograd.grad(score, last)
                if method == "gradcam":
                    weights = grads.flatten(2).mean(-1)
                else:  # Grad-CAM++, eq. 19 of the paper with Y = exp(y): first-order grads to powers
                    g2, g3 = grads ** 2, grads ** 3
                    summed = last.flatten(2).sum(-1).view(*last.shape[:2], *([1] * (last.ndim - 2)))
                    denominator = 2 * g2 + summed * g3
                    alpha = torch.where(denominator != 0, g2 / torch.where(denominator != 0, denominator,
                                                                           torch.ones_like(denominator)),
                                        torch.zeros_like(g2))
                    weights = (alpha * F.relu(grads)).flatten(2).sum(-1)
                maps = F.relu(torch.einsum("nc,nc...->n...", weights, last))
        maps = maps.detach()
        mode = "bilinear" if maps.ndim == 3 else "trilinear"
        maps = F.interpolate(maps[:, None], size=images.shape[2:], mode=mode, align_corners=False)[:, 0]
        return _normalise(maps, method), logits.detach()
    finally:
        model.train(was_training)


def class_activation_map(model: CamClassifier, image: np.ndarray, target: int | None = None, method: str = "cam") -> np.ndarray:
    """The activation map of one image ``(C, *spatial)``: float32 ``(*spatial)`` in [0, 1].

    Parameters
    ----------
    model : CamClassifier
    image : ndarray, shape (C, *spatial)
    target : int, optional
        The class whose map to compute; the predicted class by default.
    method : {"cam", "gradcam", "gradcam++"}
        See the module docstring for the three definitions and their papers.

    Returns
    -------
    ndarray of float32, shape (*spatial)

    References
    ----------
    Zhou et al., CVPR 2016; Selvaraju et al., ICCV 2017; Chattopadhyay et al., WACV 2018.
    """
    image = np.asarray(image, dtype=np.float32)
    if image.ndim != model.ndim + 1:
        raise InputError(f"image: the classifier is {model.ndim}D and needs (C, *spatial), got shape {image.shape}")
    device = next(model.parameters()).device
    maps, _ = activation_maps(model, torch.as_tensor(image, device=device)[None],
                              None if target is None else [int(target)], method)
    return maps[0].cpu().numpy().astype(np.float32)


def shape_batches(shapes: Sequence[tuple], batch_size: int, rng: np.random.Generator) -> list[list[int]]:
    """Shuffled batches of indices whose items share a shape (images of different sizes never stack)."""
    order = rng.permutation(len(shapes))
    groups: dict[tuple, list[int]] = {}
    for index in order:
        groups.setdefault(tuple(shapes[index]), []).append(int(index))
    batches = [group[i:i + batch_size] for group in groups.values() for i in range(0, len(group), batch_size)]
    return [batches[i] for i in rng.permutation(len(batches))]


def train_classifier(model: CamClassifier, images: Sequence[np.ndarray], labels: Sequence[int], *, epochs: int = 20,
                     lr: float = 1e-3, batch_size: int = 4, seed: int = 0, device=None, flip: bool = True,
                     progress: Progress = None) -> dict:
    """Train ``model`` on image-level labels by cross-entropy (Adam); returns a history.

    Parameters
    ----------
    model : CamClassifier
    images : sequence of ndarray, shape (C, *spatial)
        Images of equal or different sizes (only equal sizes share a batch).
    labels : sequence of int
        Class index of each image.
    epochs, lr, batch_size : int, float, int
    seed : int
        Seed of the batch order, the flips and nothing else (the weights are initialised by the caller).
    device : str, optional
        CUDA when present by default.
    flip : bool
        Random flips along each spatial axis.
    progress : callable, optional
        ``progress(done, total, message)`` after each epoch.

    Returns
    -------
    dict
        ``history`` (per epoch: ``loss``, ``accuracy`` on the training images) and ``seconds``.
    """
    labels = np.asarray(labels, dtype=np.int64)
    if len(images) != len(labels) or not len(images):
        raise InputError(f"images, labels: need as many labels as images (at least one), got {len(images)} and {len(labels)}")
    if labels.min() < 0 or labels.max() >= model.n_labels:
        raise InputError(f"labels: must be in 0..{model.n_labels - 1}")
    for name, value in (("epochs", epochs), ("batch_size", batch_size)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise InputError(f"{name}: must be a positive integer, got {value!r}")
    device = resolve_device(device)
    model.to(device)
    tensors = [torch.as_tensor(np.asarray(im, dtype=np.float32)) for im in images]
    targets = torch.as_tensor(labels)
    optimiser = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=lr)
    history, start = [], time.perf_counter()
    model.train()
    for epoch in range(epochs):
        rng = np.random.default_rng([seed, epoch])
        total, correct, seen = 0.0, 0, 0
        for batch in shape_batches([t.shape for t in tensors], batch_size, rng):
            x = torch.stack([tensors[i] for i in batch]).to(device)
            if flip:
                for axis in range(2, x.ndim):
                    if rng.random() < 0.5:
                        x = x.flip(axis)
            y = targets[batch].to(device)
            logits = model(x)
            loss = F.cross_entropy(logits, y)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            total += float(loss.detach()) * len(batch)
            correct += int((logits.argmax(1) == y).sum())
            seen += len(batch)
        history.append({"epoch": epoch + 1, "loss": total / seen, "accuracy": correct / seen})
        report(progress, epoch + 1, epochs, f"loss {total / seen:.3f}")
    model.eval()
    return {"history": history, "seconds": time.perf_counter() - start}


def predict_labels(model: CamClassifier, images: Sequence[np.ndarray]) -> np.ndarray:
    """Predicted class index of each image (int64)."""
    device = next(model.parameters()).device
    model.eval()
    out = []
    with torch.no_grad():
        for image in images:
            out.append(int(model(torch.as_tensor(np.asarray(image, dtype=np.float32), device=device)[None]).argmax(1)))
    return np.array(out, dtype=np.int64)
