"""A project on disk: a SQLite store of images, versioned markers, selections, models, runs and
events, plus array files (see :mod:`hitlseg.project.store` for the layout and guarantees)."""

from hitlseg.project.schema import SCHEMA_VERSION
from hitlseg.project.store import DB_NAME, Project

__all__ = ["DB_NAME", "SCHEMA_VERSION", "Project"]
