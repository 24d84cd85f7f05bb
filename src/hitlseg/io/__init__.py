"""Reading and writing images, volumes, masks and markers: the only place that touches image files."""

from hitlseg.io.formats import is_image_file, is_volume, stem_of, suffix_of
from hitlseg.io.images import ImageMeta, normalize_intensity, output_name, peek_image, read_image, read_mask, write_array
from hitlseg.io.markers import marker_ids, read_markers, read_markers_text, write_markers, write_markers_text

__all__ = [
    "ImageMeta",
    "is_image_file",
    "is_volume",
    "marker_ids",
    "normalize_intensity",
    "output_name",
    "peek_image",
    "read_image",
    "read_mask",
    "read_markers",
    "read_markers_text",
    "stem_of",
    "suffix_of",
    "write_array",
    "write_markers",
    "write_markers_text",
]
