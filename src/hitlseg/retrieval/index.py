"""A retrieval index over a pool: descriptors, optional binary codes, faiss search, a folder on disk.

Search
    Float descriptors: exact L2 (``faiss.IndexFlatL2``) or approximate (``faiss.IndexIVFFlat``,
    ``nlist`` ~ sqrt(n) cells, ``nprobe`` of them visited); distances are Euclidean. Binary codes
    (``bits > 0``): Hamming ranking with ``faiss.IndexBinaryFlat`` (or ``IndexBinaryIVF``);
    distances are numbers of differing bits. Results are ordered by distance, ties by row.

Fitting and updates
    What is learned from data (the hash, the IVF cells) is fitted once, on the first ``fit``
    images of :meth:`RetrievalIndex.build`, and then frozen. :meth:`RetrievalIndex.add` encodes new
    images with it, so building from ``A`` and adding ``B`` gives exactly the index built from
    ``A + B`` with ``fit=len(A)``. Build again (without ``fit``) to refit on the whole pool.

On disk (:meth:`RetrievalIndex.save`)
    A folder with ``meta.json`` (format, descriptor kind, encoder digest, dimension, bits, hash,
    search, counts), ``ids.json``, ``vectors.npy`` (float descriptors, always kept: exact re-ranking
    and updates), ``codes.npy`` and ``hash.npz`` (with bits), ``index.faiss`` and, when the index
    was built with a describer, ``model.pt`` (the model state its encoder came from, so the folder
    alone can describe query images). Written to a temporary folder and renamed into place.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Sequence

import numpy as np

from hitlseg import __version__
from hitlseg.errors import InputError
from hitlseg.progress import Progress
from hitlseg.retrieval.hashing import HASHES, check_bits, hasher_from_state, make_hasher

FORMAT = "hitlseg-retrieval-index"
SEARCHES = ("exact", "ivf")

__all__ = ["FORMAT", "SEARCHES", "RetrievalIndex", "check_k", "similar_images"]


def check_k(k) -> int:
    """``k`` as a positive integer."""
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise InputError(f"k: must be a positive integer (how many images to return), got {k!r}")
    return int(k)


def _check_ids(ids: Sequence[str], name: str = "ids") -> list[str]:
    ids = list(ids)
    if not all(isinstance(i, str) and i for i in ids):
        raise InputError(f"{name}: image ids must be non-empty strings")
    if len(set(ids)) != len(ids):
        seen, twice = set(), set()
        for i in ids:
            (twice if i in seen else seen).add(i)
        raise InputError(f"{name}: ids appear twice: {', '.join(sorted(set(twice))[:5])}")
    return ids


class RetrievalIndex:
    """Descriptors of a pool with exact / approximate search and optional binary codes.

    Use :meth:`build` or :meth:`load`; see the module docstring.

    Attributes
    ----------
    ids : list of str
    vectors : ndarray (n, D) float32
    codes : ndarray (n, bits // 8) uint8 or None
    hasher : LSHHasher, ITQHasher, DeepHasher or None
    signature : dict
        Descriptor kind, encoder digest, dimension, options, preprocessing (:meth:`Describer.signature`).
    describer : Describer or None
    """

    def __init__(self, ids, vectors, *, hasher=None, codes=None, search: str = "exact", nlist: int | None = None,
                 nprobe: int | None = None, signature: dict | None = None, describer=None, fitted_on: int = 0,
                 faiss_index=None, seed: int = 0):
        self.ids = list(ids)
        self.vectors = vectors
        self.hasher = hasher
        self.codes = codes
        self.search_mode = search
        self.nlist, self.nprobe = nlist, nprobe
        self.signature = dict(signature or {"dimension": int(vectors.shape[1])})
        self.describer = describer
        self.fitted_on = int(fitted_on)
        self.seed = int(seed)
        self._faiss = faiss_index
        self._rows = {i: r for r, i in enumerate(self.ids)}

    # -- construction -----------------------------------------------------------------------------
    @classmethod
    def build(cls, ids: Sequence[str], vectors, *, bits: int = 0, hash: str = "lsh", labels=None,
              search: str = "exact", fit: int | None = None, seed: int = 0, describer=None,
              deep_config=None, progress: Progress = None) -> "RetrievalIndex":
        """Index ``vectors`` (n, D) of images ``ids``.

        Parameters
        ----------
        bits : int
            0: float descriptors; else binary codes of ``bits`` bits (a multiple of 8).
        hash : {"lsh", "itq", "deep"}
            How codes are made (:mod:`hitlseg.retrieval.hashing`, :mod:`hitlseg.retrieval.deephash`).
        labels : array (fit, L), optional
            Multi-hot labels of the fitted images (the deep hash needs them).
        search : {"exact", "ivf"}
            Exact (flat) or approximate (inverted file) faiss search.
        fit : int, optional
            Fit the hash and the IVF cells on the first ``fit`` images only (default all).
        describer : Describer, optional
            How the descriptors were made; recorded (and stored) so queries are checked against it.
        """
        ids = _check_ids(ids)
        if not ids:
            raise InputError("pool: no image to index (the pool is empty)")
        vectors = _check_matrix(vectors, len(ids), describer.dimension if describer is not None else None)
        if search not in SEARCHES:
            raise InputError(f"search: unknown mode {search!r} (use one of {', '.join(SEARCHES)})")
        if isinstance(bits, bool) or not isinstance(bits, (int, np.integer)) or bits < 0:
            raise InputError(f"bits: must be 0 (float index) or a positive multiple of 8, got {bits!r}")
        fit = len(ids) if fit is None else int(fit)
        if not 1 <= fit <= len(ids):
            raise InputError(f"fit: must be between 1 and {len(ids)} images, got {fit}")
        hasher = codes = None
        if bits:
            check_bits(bits)
            if hash not in HASHES:
                raise InputError(f"hash: unknown method {hash!r} (use one of {', '.join(HASHES)})")
            options = {"config": deep_config} if hash == "deep" and deep_config is not None else {}
            hasher = make_hasher(hash, int(bits), seed, **options)
            if labels is not None and len(labels) != fit:
                raise InputError(f"labels: {len(labels)} rows for the {fit} images the hash is fitted on")
            hasher.fit(vectors[:fit], labels, progress)
            codes = hasher.encode(vectors)
        signature = describer.signature() if describer is not None else {"dimension": int(vectors.shape[1])}
        index = cls(ids, vectors, hasher=hasher, codes=codes, search=search, signature=signature,
                    describer=describer, fitted_on=fit, seed=seed)
        index._faiss = index._new_faiss(fit)
        index._faiss.add(index._payload())
        return index

    def _payload(self, rows=slice(None)) -> np.ndarray:
        return np.ascontiguousarray(self.codes[rows] if self.codes is not None else self.vectors[rows])

    def _new_faiss(self, fit: int):
        """An empty faiss index of this kind, trained on the first ``fit`` rows where it learns."""
        import faiss

        binary = self.codes is not None
        width = self.bits if binary else int(self.vectors.shape[1])
        if self.search_mode == "exact":
            return faiss.IndexBinaryFlat(width) if binary else faiss.IndexFlatL2(width)
        nlist = self.nlist or max(1, min(int(round(np.sqrt(fit))), fit))
        if binary:
            index = faiss.IndexBinaryIVF(faiss.IndexBinaryFlat(width), width, nlist)
            index.cp.seed = self.seed
        else:
            index = faiss.IndexIVFFlat(faiss.IndexFlatL2(width), width, nlist)
            index.cp.seed = self.seed
        index.cp.min_points_per_centroid = 1  # small pools: no warning, every cell kept
        index.train(self._payload(slice(0, fit)))
        self.nlist = nlist
        self.nprobe = self.nprobe or max(1, nlist // 4)
        index.nprobe = self.nprobe
        return index

    # -- properties -------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.ids)

    def __contains__(self, image_id) -> bool:
        return image_id in self._rows

    @property
    def bits(self) -> int:
        return self.hasher.bits if self.hasher is not None else 0

    @property
    def hash(self) -> str | None:
        return self.hasher.name if self.hasher is not None else None

    @property
    def dimension(self) -> int:
        return int(self.vectors.shape[1])

    @property
    def memory_bytes(self) -> int:
        """Bytes of what search scans: the codes with bits, else the float descriptors."""
        return int(self._payload().nbytes)

    def meta(self) -> dict:
        """The ``meta.json`` content."""
        return {"format": FORMAT, "hitlseg_version": __version__, **self.signature, "count": len(self),
                "bits": self.bits, "hash": self.hash, "search": self.search_mode, "nlist": self.nlist,
                "nprobe": self.nprobe, "fitted_on": self.fitted_on, "seed": self.seed,
                "memory_bytes": self.memory_bytes}

    # -- checks -------------------------------------------------------------------------------------
    def check_signature(self, describer) -> None:
        """Refuse a describer other than the one the index was built with."""
        mine = self.signature
        theirs = describer.signature()
        if mine.get("descriptor") is not None and theirs["descriptor"] != mine["descriptor"]:
            raise InputError(f"index: built with descriptor {mine['descriptor']!r}, not {theirs['descriptor']!r}")
        if mine.get("encoder_digest") is not None and theirs["encoder_digest"] != mine["encoder_digest"]:
            raise InputError(f"index: built with another encoder (digest {mine['encoder_digest']}, this model's is "
                             f"{theirs['encoder_digest']}); build a new index for this model")
        if theirs["dimension"] != self.dimension or theirs.get("options") != mine.get("options", theirs.get("options")):
            raise InputError(f"index: built with descriptor options {mine.get('options')} (dimension {self.dimension}), "
                             f"not {theirs.get('options')} (dimension {theirs['dimension']})")

    # -- updates ----------------------------------------------------------------------------------
    def add(self, ids: Sequence[str], vectors, describer=None) -> "RetrievalIndex":
        """Append images (ids not yet in the index) with the frozen hash and cells; returns self."""
        ids = _check_ids(ids)
        if not ids:
            raise InputError("add: no image given")
        if describer is not None:
            self.check_signature(describer)
        present = [i for i in ids if i in self._rows]
        if present:
            raise InputError(f"add: already in the index: {', '.join(present[:5])}"
                             f"{' ...' if len(present) > 5 else ''}")
        vectors = _check_matrix(vectors, len(ids), self.dimension)
        start = len(self.ids)
        self.vectors = np.concatenate([self.vectors, vectors])
        if self.hasher is not None:
            self.codes = np.concatenate([self.codes, self.hasher.encode(vectors)])
        self.ids += ids
        self._rows.update({i: start + r for r, i in enumerate(ids)})
        self._faiss.add(self._payload(slice(start, None)))
        return self

    # -- search -----------------------------------------------------------------------------------
    def encode(self, vectors) -> np.ndarray:
        """What the index compares for descriptors ``vectors`` (codes with bits, else the floats)."""
        vectors = _check_matrix(vectors, None, self.dimension, "query")
        return self.hasher.encode(vectors) if self.hasher is not None else vectors

    def search(self, vectors, k: int = 10) -> list[list[tuple[str, float]]]:
        """The ``k`` nearest images of each query descriptor: lists of ``(id, distance)``."""
        k = min(check_k(k), len(self))
        queries = self.encode(np.atleast_2d(np.asarray(vectors, dtype=np.float32)))
        distances, rows = self._faiss.search(np.ascontiguousarray(queries), k)
        results = []
        for dist, row in zip(distances, rows):
            hits = sorted((float(d), int(r)) for d, r in zip(dist, row) if r >= 0)
            scale = (lambda d: d) if self.hasher is not None else (lambda d: float(np.sqrt(max(d, 0.0))))
            results.append([(self.ids[r], scale(d)) for d, r in hits])
        return results

    def search_id(self, image_id: str, k: int = 10) -> list[tuple[str, float]]:
        """The ``k`` nearest images of an indexed image, the image itself first (distance 0)."""
        if image_id not in self._rows:
            shown = ", ".join(self.ids[:3]) + (" ..." if len(self.ids) > 3 else "")
            raise InputError(f"image id {image_id!r} is not in the index ({len(self)} images: {shown})")
        k = check_k(k)
        hits = self.search(self.vectors[self._rows[image_id]], min(k + 1, len(self)))[0]
        others = [(i, d) for i, d in hits if i != image_id]
        return ([(image_id, 0.0)] + others)[:k]

    # -- persistence ------------------------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        """Write the index folder (see the module docstring), replacing an index already there."""
        import faiss

        path = Path(path)
        if path.exists() and not path.is_dir():
            raise InputError(f"{path}: --out must name a folder for the index, but it is a file")
        if path.is_dir() and any(path.iterdir()) and not (path / "meta.json").is_file():
            raise InputError(f"{path}: folder exists and is not a retrieval index; refusing to replace it")
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.parent / f".{path.name}.tmp-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        try:
            meta = self.meta()
            if self.hasher is not None:
                state = self.hasher.to_state()
                arrays = {k: v for k, v in state.items() if isinstance(v, np.ndarray)}
                if "faiss" in state and not isinstance(state["faiss"], np.ndarray):
                    arrays["faiss"] = np.asarray(state["faiss"], dtype=np.uint8)
                meta["hash_state"] = {k: v for k, v in state.items() if k not in arrays}
                np.savez(tmp / "hash.npz", **arrays)
                np.save(tmp / "codes.npy", self.codes, allow_pickle=False)
            (tmp / "meta.json").write_text(json.dumps(meta, indent=2))
            (tmp / "ids.json").write_text(json.dumps(self.ids))
            np.save(tmp / "vectors.npy", self.vectors, allow_pickle=False)
            if self.codes is not None:
                faiss.write_index_binary(self._faiss, str(tmp / "index.faiss"))
            else:
                faiss.write_index(self._faiss, str(tmp / "index.faiss"))
            if self.describer is not None:
                from hitlseg.flim.model import save_state

                save_state(self.describer.model_state, tmp / "model.pt")
            old = None
            if path.exists():
                old = path.parent / f".{path.name}.old-{os.getpid()}"
                os.replace(path, old)
            os.replace(tmp, path)
            if old is not None:
                shutil.rmtree(old, ignore_errors=True)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return path

    @classmethod
    def load(cls, path: str | Path, device=None) -> "RetrievalIndex":
        """Read an index folder; anything missing or inconsistent raises :class:`InputError` naming it."""
        path = Path(path)
        if not path.is_dir():
            raise InputError(f"{path}: retrieval index folder not found")
        try:
            return _load(cls, path, device)
        except InputError as exc:
            raise InputError(f"{path}: corrupt retrieval index: {exc}") from None
        except (OSError, ValueError, KeyError, TypeError, RuntimeError, EOFError) as exc:
            message = " ".join(str(exc).split())[:200]
            raise InputError(f"{path}: corrupt retrieval index ({type(exc).__name__}: {message})") from None


def _check_matrix(vectors, rows: int | None, dimension: int | None, name: str = "descriptors") -> np.ndarray:
    x = np.asarray(vectors, dtype=np.float32)
    if x.ndim == 1 and rows is None:
        x = x[None]
    if x.ndim != 2 or (rows is not None and len(x) != rows):
        expected = f"({rows}, dimension)" if rows is not None else "(n, dimension)"
        raise InputError(f"{name}: expected shape {expected}, got {x.shape}")
    if dimension is not None and x.shape[1] != dimension:
        raise InputError(f"{name}: dimension {x.shape[1]}, but the index holds descriptors of dimension {dimension} "
                         f"(made with another descriptor or encoder)")
    if not np.all(np.isfinite(x)):
        raise InputError(f"{name}: hold NaN or infinite values")
    return np.ascontiguousarray(x)


def _load(cls, path: Path, device):
    import faiss

    for name in ("meta.json", "ids.json", "vectors.npy", "index.faiss"):
        if not (path / name).is_file():
            raise InputError(f"{name} is missing")
    meta = json.loads((path / "meta.json").read_text())
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise InputError("meta.json is not a hitlseg retrieval index description")
    ids = _check_ids(json.loads((path / "ids.json").read_text()), "ids.json")
    vectors = np.load(path / "vectors.npy", allow_pickle=False)
    dimension = int(meta["dimension"])
    if vectors.ndim != 2 or vectors.shape != (len(ids), dimension) or vectors.dtype != np.float32:
        raise InputError(f"vectors.npy has shape {vectors.shape} ({vectors.dtype}), expected ({len(ids)}, {dimension}) float32")
    if int(meta.get("count", -1)) != len(ids):
        raise InputError(f"meta.json counts {meta.get('count')} images, ids.json lists {len(ids)}")
    bits = int(meta.get("bits") or 0)
    hasher = codes = None
    if bits:
        if not (path / "hash.npz").is_file() or not (path / "codes.npy").is_file():
            raise InputError("hash.npz or codes.npy is missing")
        with np.load(path / "hash.npz", allow_pickle=False) as arrays:
            state = {**dict(meta.get("hash_state") or {}), **{k: arrays[k] for k in arrays.files}}
        hasher = hasher_from_state(state)
        if hasher.bits != bits or hasher.dimension != dimension:
            raise InputError(f"hash.npz holds a {hasher.bits}-bit hash of dimension {hasher.dimension}, meta.json "
                             f"says {bits} bits, dimension {dimension}")
        codes = np.load(path / "codes.npy", allow_pickle=False)
        if codes.shape != (len(ids), bits // 8) or codes.dtype != np.uint8:
            raise InputError(f"codes.npy has shape {codes.shape}, expected ({len(ids)}, {bits // 8}) uint8")
    reader = faiss.read_index_binary if bits else faiss.read_index
    try:
        index = reader(str(path / "index.faiss"))
    except RuntimeError as exc:
        raise InputError(f"index.faiss cannot be read ({' '.join(str(exc).split())[:160]})") from None
    width = bits if bits else dimension
    if index.ntotal != len(ids) or index.d != width:
        raise InputError(f"index.faiss holds {index.ntotal} entries of width {index.d}, expected {len(ids)} of {width}")
    search = meta.get("search", "exact")
    if search not in SEARCHES:
        raise InputError(f"unknown search mode {search!r}")
    if search == "ivf":
        index.nprobe = int(meta["nprobe"])
    signature = {k: meta[k] for k in ("descriptor", "encoder_digest", "dimension", "options", "preprocessing") if k in meta}
    describer = None
    if (path / "model.pt").is_file():
        from hitlseg.flim.model import load_state
        from hitlseg.retrieval.describe import Describer

        describer = Describer.from_state(meta["descriptor"], load_state(path / "model.pt"), meta.get("options"),
                                         "model.pt", device)
        if describer.digest != meta.get("encoder_digest"):
            raise InputError(f"model.pt has encoder digest {describer.digest}, meta.json says {meta.get('encoder_digest')}")
    return cls(ids, vectors, hasher=hasher, codes=codes, search=search, nlist=meta.get("nlist"),
               nprobe=meta.get("nprobe"), signature=signature, describer=describer,
               fitted_on=int(meta.get("fitted_on", len(ids))), faiss_index=index, seed=int(meta.get("seed", 0)))


def similar_images(index: RetrievalIndex, query, k: int = 10, *, mask=None, query_id: str | None = None,
                   name: str = "image") -> list[dict]:
    """The ``k`` images of ``index`` most similar to ``query``: the library call behind a "similar images" view.

    Parameters
    ----------
    index : RetrievalIndex
    query : str or ndarray (C, *spatial)
        An id in the index (its stored descriptor is used), or an image read with the index's
        preprocessing (``index.signature["preprocessing"]``), described with ``index.describer``.
    k : int
        How many images to return (at most the index size).
    mask : ndarray (*spatial), optional
        Query by region: pool the query's features inside ``mask > 0`` (an image query only).
    query_id : str, optional
        The query image's id (e.g. its file stem): when it is in the index and the image is the
        indexed one (same descriptor), it is returned first.

    Returns
    -------
    list of dict
        ``{"rank", "id", "distance"}`` from the most similar; distances are Euclidean (float
        index) or Hamming (bits).
    """
    k = check_k(k)
    if isinstance(query, str):
        if mask is not None:
            raise InputError("mask: a region query needs the image, not only its id")
        hits = index.search_id(query, k)
    else:
        if index.describer is None:
            raise InputError("index: has no stored model to describe a query image (query by id instead)")
        vector = index.describer.describe(query, mask, name)
        own = query_id if (mask is None and query_id is not None and query_id in index) else None
        if own is not None and np.allclose(index.vectors[index._rows[own]], vector, rtol=1e-4, atol=1e-5):
            hits = index.search_id(own, k)
        else:
            hits = index.search(vector, k)[0]
    return [{"rank": r + 1, "id": i, "distance": d} for r, (i, d) in enumerate(hits)]
