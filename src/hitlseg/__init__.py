"""hitlseg: human-in-the-loop image segmentation with Feature Learning from Image Markers."""

__version__ = "0.1.0"

from hitlseg.errors import InputError  # noqa: E402

__all__ = ["InputError", "__version__"]
