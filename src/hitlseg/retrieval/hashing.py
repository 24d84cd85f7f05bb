"""Binary codes of descriptors: random-projection LSH and ITQ (the learned deep hash is in :mod:`.deephash`).

Every hasher is fitted once, on the descriptors an index is built from, and then frozen: codes of
images added later come from the same transform. Codes are packed 8 bits per byte (``numpy.packbits``
order), the layout of faiss's binary indexes, so ``bits`` must be a multiple of 8.

References
----------
M. S. Charikar, "Similarity estimation techniques from rounding algorithms", STOC 2002 (sign of
random hyperplanes). Y. Gong and S. Lazebnik, "Iterative quantization: a procrustean approach to
learning binary codes", CVPR 2011.
"""

from __future__ import annotations

import numpy as np

from hitlseg.errors import InputError

HASHES = ("lsh", "itq", "deep")

__all__ = ["HASHES", "ITQHasher", "LSHHasher", "check_bits", "hasher_from_state", "make_hasher", "pack", "unpack"]


def check_bits(bits) -> int:
    """``bits`` as a positive multiple of 8 (faiss binary codes are whole bytes)."""
    if isinstance(bits, bool) or not isinstance(bits, (int, np.integer)) or bits < 8 or bits % 8:
        raise InputError(f"bits: must be a positive multiple of 8 (8, 16, 32, 64 ...), got {bits!r}")
    return int(bits)


def pack(signs: np.ndarray) -> np.ndarray:
    """Bits ``(n, bits)`` (True / positive = 1) packed to ``(n, bits // 8)`` uint8."""
    return np.packbits(np.asarray(signs) > 0, axis=1)


def unpack(codes: np.ndarray, bits: int) -> np.ndarray:
    """Inverse of :func:`pack`: ``(n, bits)`` uint8 of 0 / 1."""
    return np.unpackbits(np.asarray(codes, dtype=np.uint8), axis=1)[:, :bits]


def _check_vectors(vectors, dimension: int | None = None, name: str = "descriptors") -> np.ndarray:
    x = np.asarray(vectors, dtype=np.float32)
    if x.ndim != 2 or len(x) == 0:
        raise InputError(f"{name}: expected a non-empty (n, dimension) array, got shape {x.shape}")
    if dimension is not None and x.shape[1] != dimension:
        raise InputError(f"{name}: have dimension {x.shape[1]}, the hash was fitted on dimension {dimension}")
    if not np.all(np.isfinite(x)):
        raise InputError(f"{name}: hold NaN or infinite values")
    return np.ascontiguousarray(x)


class LSHHasher:
    """Random-projection LSH: bit ``b`` is ``sign(w_b . (x - mean))`` with Gaussian ``w_b`` (Charikar 2002).

    The hyperplanes pass through the mean of the fitted descriptors (descriptors of ReLU features
    are all positive: hyperplanes through the origin would give nearly constant bits).
    Written with numpy: faiss's ``IndexLSH`` draws its rotation with a seed of its own that
    cannot be chosen, and the method is one matrix product.
    """

    name = "lsh"

    def __init__(self, bits: int, seed: int = 0):
        self.bits, self.seed = check_bits(bits), int(seed)
        self.mean: np.ndarray | None = None
        self.planes: np.ndarray | None = None

    def fit(self, vectors, labels=None, progress=None) -> "LSHHasher":
        x = _check_vectors(vectors)
        self.mean = x.mean(0)
        self.planes = np.random.default_rng(self.seed).standard_normal((x.shape[1], self.bits)).astype(np.float32)
        return self

    @property
    def dimension(self) -> int:
        self._check_fitted()
        return int(self.planes.shape[0])

    def _check_fitted(self):
        if self.planes is None:
            raise InputError("hash: not fitted yet (call fit first)")

    def encode(self, vectors) -> np.ndarray:
        self._check_fitted()
        x = _check_vectors(vectors, self.dimension)
        return pack((x - self.mean) @ self.planes)

    def to_state(self) -> dict:
        self._check_fitted()
        return {"hash": self.name, "bits": self.bits, "seed": self.seed, "mean": self.mean, "planes": self.planes}

    @classmethod
    def from_state(cls, state: dict) -> "LSHHasher":
        hasher = cls(int(state["bits"]), int(state["seed"]))
        hasher.mean = np.asarray(state["mean"], dtype=np.float32)
        hasher.planes = np.asarray(state["planes"], dtype=np.float32)
        if hasher.planes.shape != (len(hasher.mean), hasher.bits):
            raise InputError(f"LSH planes have shape {hasher.planes.shape}, expected ({len(hasher.mean)}, {hasher.bits})")
        return hasher


class ITQHasher:
    """Iterative quantization (Gong & Lazebnik 2011): PCA to ``bits`` dimensions, then the rotation
    that brings the projected data closest to the binary hypercube; bits are the signs.

    faiss's ``ITQTransform`` (centring, PCA, 50 ITQ iterations from a rotation drawn with ``seed``)
    followed by an ``IndexLSH`` without rotation or thresholds (the sign).
    """

    name = "itq"

    def __init__(self, bits: int, seed: int = 0):
        self.bits, self.seed = check_bits(bits), int(seed)
        self.index = None

    def fit(self, vectors, labels=None, progress=None) -> "ITQHasher":
        import faiss

        x = _check_vectors(vectors)
        if self.bits > x.shape[1]:
            raise InputError(f"bits: ITQ projects onto principal components, so it needs bits <= the descriptor "
                             f"dimension ({x.shape[1]}), got {self.bits}")
        if len(x) < self.bits:
            raise InputError(f"descriptors: ITQ keeps {self.bits} principal components, so it needs at least "
                             f"{self.bits} images to fit, got {len(x)} (use fewer bits or --hash lsh)")
        transform = faiss.ITQTransform(x.shape[1], self.bits, True)
        transform.itq.seed = self.seed
        transform.max_train_per_dim = max(10, -(-len(x) // x.shape[1]))  # use every image (no subsampling)
        index = faiss.IndexPreTransform(transform, faiss.IndexLSH(self.bits, self.bits, False, False))
        try:
            index.train(x)
        except RuntimeError as exc:
            raise InputError(f"descriptors: ITQ cannot be fitted ({' '.join(str(exc).split())[:200]})") from None
        self.index = index
        return self

    @property
    def dimension(self) -> int:
        self._check_fitted()
        return int(self.index.d)

    def _check_fitted(self):
        if self.index is None:
            raise InputError("hash: not fitted yet (call fit first)")

    def encode(self, vectors) -> np.ndarray:
        self._check_fitted()
        x = _check_vectors(vectors, self.dimension)
        return np.ascontiguousarray(self.index.sa_encode(x), dtype=np.uint8)

    def to_state(self) -> dict:
        import faiss

        self._check_fitted()
        return {"hash": self.name, "bits": self.bits, "seed": self.seed, "faiss": faiss.serialize_index(self.index)}

    @classmethod
    def from_state(cls, state: dict) -> "ITQHasher":
        import faiss

        hasher = cls(int(state["bits"]), int(state["seed"]))
        try:
            hasher.index = faiss.deserialize_index(np.asarray(state["faiss"], dtype=np.uint8))
        except RuntimeError as exc:
            raise InputError(f"ITQ transform cannot be read ({' '.join(str(exc).split())[:200]})") from None
        return hasher


def make_hasher(name: str, bits: int, seed: int = 0, **options):
    """A new hasher ``name`` (:data:`HASHES`) of ``bits`` bits; ``options`` go to the deep hash."""
    if name == "lsh":
        return LSHHasher(bits, seed)
    if name == "itq":
        return ITQHasher(bits, seed)
    if name == "deep":
        from hitlseg.retrieval.deephash import DeepHasher

        return DeepHasher(bits, seed, **options)
    raise InputError(f"hash: unknown method {name!r} (use one of {', '.join(HASHES)})")


def hasher_from_state(state: dict):
    """Inverse of ``to_state`` of any hasher."""
    name = str(state.get("hash"))
    if name == "lsh":
        return LSHHasher.from_state(state)
    if name == "itq":
        return ITQHasher.from_state(state)
    if name == "deep":
        from hitlseg.retrieval.deephash import DeepHasher

        return DeepHasher.from_state(state)
    raise InputError(f"unknown hash method {name!r} in the index")
