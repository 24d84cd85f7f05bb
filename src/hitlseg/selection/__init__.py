"""Ground-truth-free interactive image selection: which image should the person mark next?

Superpixels (computed once per image) and first-layer FLIM filters (refitted from all markers each
round) give every pool image a descriptor; the unselected images closest to and farthest from the
selected ones are recommended, shown on a 2D projection with heatmaps of filter attention, and a
coverage radius tells when more images stop helping. Selectors with one contract
(``query(context, n)``) compare this method with random, ground-truth-based and k-center choices.
"""

from hitlseg.selection.descriptors import (
    FILLS,
    MAPS,
    SuperpixelIndex,
    activation_maps,
    compute_descriptors,
    labels_at,
    map_kernels,
    pooled_descriptors,
    superpixel_means,
)
from hitlseg.selection.heatmap import activation_map, display_rgb, overlay, png_bytes, save_png
from hitlseg.selection.projection import METHODS, Projection, project
from hitlseg.selection.recommend import (
    DISTANCES,
    DUPLICATE_TOLERANCE,
    NearDuplicate,
    Recommendation,
    distances_to_selected,
    recommend,
)
from hitlseg.selection.selectors import (
    SELECTORS,
    GTFreeSelector,
    KCenterSelector,
    LabeledSelector,
    RandomSelector,
    SelectionContext,
    Selector,
    make_selector,
    raw_features,
)
from hitlseg.selection.session import RoundResult, SelectionSession, selection_arch
from hitlseg.selection.stopping import StoppingMonitor, StoppingSignal, coverage_radius
from hitlseg.selection.superpixels import (
    DEFAULT_COMPACTNESS,
    DEFAULT_SUPERPIXELS,
    SuperpixelCache,
    SuperpixelStore,
    compute_superpixels,
    slic_superpixels,
)

__all__ = [
    "DEFAULT_COMPACTNESS",
    "DEFAULT_SUPERPIXELS",
    "DISTANCES",
    "DUPLICATE_TOLERANCE",
    "FILLS",
    "GTFreeSelector",
    "KCenterSelector",
    "LabeledSelector",
    "MAPS",
    "METHODS",
    "NearDuplicate",
    "Projection",
    "RandomSelector",
    "Recommendation",
    "RoundResult",
    "SELECTORS",
    "SelectionContext",
    "SelectionSession",
    "Selector",
    "StoppingMonitor",
    "StoppingSignal",
    "SuperpixelCache",
    "SuperpixelIndex",
    "SuperpixelStore",
    "activation_map",
    "activation_maps",
    "compute_superpixels",
    "coverage_radius",
    "compute_descriptors",
    "display_rgb",
    "distances_to_selected",
    "labels_at",
    "make_selector",
    "map_kernels",
    "overlay",
    "png_bytes",
    "project",
    "raw_features",
    "recommend",
    "save_png",
    "selection_arch",
    "pooled_descriptors",
    "superpixel_means",
    "slic_superpixels",
]
