"""SQLite schema of a project (``DIR/project.sqlite``).

JSON columns hold UTF-8 JSON text; times are ISO 8601 UTC strings (``...Z``). File columns hold
paths relative to the project folder, with ``/`` separators.
"""

SCHEMA_VERSION = 1

SCHEMA = """
CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

-- One row per image (2D file) or case (3D volume, possibly one file per modality).
CREATE TABLE images (
    id         TEXT PRIMARY KEY,          -- file stem or case folder name
    position   INTEGER NOT NULL UNIQUE,   -- order of registration (sorted ids)
    paths      TEXT NOT NULL,             -- JSON list: absolute paths, or relative to DIR when copied
    mask_path  TEXT,                      -- same convention; NULL without ground truth
    shape      TEXT NOT NULL,             -- JSON list: spatial shape (H, W) or (D, H, W)
    channels   INTEGER NOT NULL,
    ndim       INTEGER NOT NULL CHECK (ndim IN (2, 3)),
    group_name TEXT,                      -- train/validation/test group folder, if any
    added_at   TEXT NOT NULL
);

-- Every save of markers is a new version, 1, 2, 3... per image; rows are never updated.
CREATE TABLE marker_versions (
    image_id     TEXT NOT NULL REFERENCES images(id),
    version      INTEGER NOT NULL CHECK (version >= 1),
    created_at   TEXT NOT NULL,
    author       TEXT,
    file         TEXT NOT NULL UNIQUE,    -- arrays/markers/<id>/vNNNN.npy
    n_marked     INTEGER NOT NULL,
    class_counts TEXT NOT NULL,           -- JSON {label: pixels}
    PRIMARY KEY (image_id, version)
);

-- Images chosen in the selection loop, in order.
CREATE TABLE selections (
    round      INTEGER PRIMARY KEY CHECK (round >= 1),
    image_id   TEXT NOT NULL UNIQUE REFERENCES images(id),
    source     TEXT NOT NULL,             -- policy or person that chose it
    created_at TEXT NOT NULL
);

CREATE TABLE models (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    kind       TEXT NOT NULL,
    file       TEXT NOT NULL UNIQUE,      -- models/NNNN-<kind><suffix>
    created_at TEXT NOT NULL,
    params     TEXT NOT NULL DEFAULT '{}',
    metrics    TEXT NOT NULL DEFAULT '{}'
);

CREATE TABLE runs (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    kind        TEXT NOT NULL,
    status      TEXT NOT NULL CHECK (status IN ('running', 'done', 'failed')),
    started_at  TEXT NOT NULL,
    finished_at TEXT,
    params      TEXT NOT NULL DEFAULT '{}',
    result      TEXT,
    error       TEXT
);

CREATE TABLE events (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,
    time    TEXT NOT NULL,
    kind    TEXT NOT NULL,
    payload TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX events_by_kind ON events (kind, id);
"""
