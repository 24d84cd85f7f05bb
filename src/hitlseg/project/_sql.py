"""Helpers shared by the project store's modules: timestamps and JSON columns."""

from __future__ import annotations

import json
from datetime import datetime, timezone

from hitlseg.errors import InputError
from hitlseg.plain import to_plain


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="microseconds").replace("+00:00", "Z")


def _dumps(value, what: str) -> str:
    try:
        return json.dumps(to_plain({} if value is None else value), sort_keys=True)
    except (TypeError, ValueError) as exc:
        raise InputError(f"{what}: cannot be stored as JSON ({exc})") from exc


def _loads(text):
    return None if text is None else json.loads(text)
