"""How many events a run holds, estimated from its objects' names and sizes: what batches are cut by and what the
dry run shows until --count-events counts them.

Events = bytes / AVG_LINE_BYTES (an enriched line of 131 fields) after inflating objects named *.gz or *.gzip by
GZIP_RATIO (bench/ archives' lines compress 6.4-6.6x; real archives vary): rough, and said to be.
"""
from __future__ import annotations

from typing import Iterable, Tuple

AVG_LINE_BYTES = 1300
GZIP_RATIO = 6.0
GZIP_SUFFIXES = (".gz", ".gzip")


def is_gzip_name(name: str) -> bool:
    """The dry run sees names only (the job tells gzip by its magic bytes), hence a rough estimate."""
    return name.lower().endswith(GZIP_SUFFIXES)


def events_from_bytes(objects: Iterable[Tuple[str, int]]) -> int:
    """Events in (name, size) objects at AVG_LINE_BYTES a line, gzip names inflated by GZIP_RATIO."""
    inflated = sum(size * GZIP_RATIO if is_gzip_name(name) else size for name, size in objects)
    return int(round(inflated / AVG_LINE_BYTES))
