"""The execution layer: per-image work in-process or on Dask, streamed to resumable zarr stores.

:class:`Executor` maps a pure function over items (in-process; a ``LocalCluster`` with
``workers=N``; an existing scheduler with ``scheduler=ADDRESS`` or ``$HITLSEG_SCHEDULER``).
:func:`pool_superpixels`, :func:`pool_descriptors`, :func:`predict_pool` and :func:`pool_pseudo_labels` run the library's
per-image functions over a pool; :func:`predict_blocks` predicts one image larger than memory
block by block. Results go to :class:`ResultStore` zarr stores with a done-mask, so a rerun
resumes. The CLI adds ``--workers``/``--scheduler`` with :func:`add_execution_arguments` and
builds the executor with :func:`executor_from_args`.
"""

from hitlseg.parallel.blocks import BlockPrediction, block_grid, export_labels, open_image, predict_blocks
from hitlseg.parallel.executor import ENV_SCHEDULER, Executor, add_execution_arguments, executor_from_args
from hitlseg.parallel.pool import (PoolSource, as_pool, image_descriptor, image_prediction, image_pseudo_labels,
                                   image_superpixels, pool_descriptors, pool_pseudo_labels, pool_superpixels,
                                   predict_pool)
from hitlseg.parallel.store import ResultStore, StoredMapping, fingerprint

__all__ = [
    "BlockPrediction",
    "ENV_SCHEDULER",
    "Executor",
    "PoolSource",
    "ResultStore",
    "StoredMapping",
    "add_execution_arguments",
    "as_pool",
    "block_grid",
    "executor_from_args",
    "export_labels",
    "fingerprint",
    "image_descriptor",
    "image_prediction",
    "image_pseudo_labels",
    "image_superpixels",
    "open_image",
    "pool_descriptors",
    "pool_pseudo_labels",
    "pool_superpixels",
    "predict_blocks",
]
