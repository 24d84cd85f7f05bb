"""Content-based image retrieval: descriptor indexes, exact / approximate search, binary hash codes.

* :mod:`.describe`: what an image (or a region of it) is described by: the ground-truth-free
  selection descriptor, or pooled FLIM / network-encoder features;
* :mod:`.index`: :class:`RetrievalIndex` (faiss search, incremental updates, a folder on disk) and
  :func:`similar_images`, the call a "similar images" view makes;
* :mod:`.hashing`, :mod:`.deephash`: LSH, ITQ and a learned order-sensitive hash head;
* :mod:`.labels`, :mod:`.evaluate`: relevance from labels, mAP@k, NDCG@k, precision-recall, timing.
"""

from hitlseg.retrieval.build import add_dataset, describe_dataset, index_dataset, learning_labels
from hitlseg.retrieval.describe import KINDS, Describer, encoder_digest, load_describer
from hitlseg.retrieval.hashing import HASHES, ITQHasher, LSHHasher, make_hasher
from hitlseg.retrieval.index import SEARCHES, RetrievalIndex, similar_images

__all__ = [
    "HASHES",
    "KINDS",
    "SEARCHES",
    "DeepHashConfig",
    "DeepHasher",
    "Describer",
    "ITQHasher",
    "LSHHasher",
    "RetrievalIndex",
    "add_dataset",
    "describe_dataset",
    "encoder_digest",
    "index_dataset",
    "learning_labels",
    "load_describer",
    "make_hasher",
    "similar_images",
]


def __getattr__(name: str):
    """The learned hash head imports torch: only when it is asked for (``hitlseg --help`` stays light)."""
    if name in ("DeepHashConfig", "DeepHasher"):
        from hitlseg.retrieval import deephash

        return getattr(deephash, name)
    raise AttributeError(f"module 'hitlseg.retrieval' has no attribute {name!r}")
