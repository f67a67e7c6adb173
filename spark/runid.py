"""Run ids of the enriched archive and the names made from them, for the job and the pipeline alike.

A run id is EmrEtlRunner's timestamp `YYYY-MM-DD-HH-MM-SS`; its archive folder is `run=<id>`, and every per-run
file (report, marker, lease, clean and verify record) is `run=<id>.json`. Run ids sort as their timestamps.
"""
from __future__ import annotations

from datetime import datetime
from typing import Optional

RUN_FORMAT = "%Y-%m-%d-%H-%M-%S"
RUN_PREFIX = "run="
FILE_SUFFIX = ".json"


def parse_run_id(text: str) -> Optional[str]:
    """The run id when `text` is exactly a real timestamp in EmrEtlRunner's format, else None."""
    if not isinstance(text, str) or len(text) != 19:
        return None
    try:
        return datetime.strptime(text, RUN_FORMAT).strftime(RUN_FORMAT)
    except ValueError:
        return None


def folder_name(run: str) -> str:
    """The run's folder in the archive."""
    return f"{RUN_PREFIX}{run}"


def run_of_folder(name: str) -> Optional[str]:
    """The run id of an archive folder name, or None when the name is not `run=<a real run id>`."""
    return parse_run_id(name[len(RUN_PREFIX):]) if name.startswith(RUN_PREFIX) else None


def file_name(run: str) -> str:
    """The name of a run's file: its report, marker, lease or record."""
    return f"{RUN_PREFIX}{run}{FILE_SUFFIX}"


def run_of_file(name: str) -> Optional[str]:
    """What stands for the run in a `run=<id>.json` name (not checked as a timestamp), or None for another name."""
    if name.startswith(RUN_PREFIX) and name.endswith(FILE_SUFFIX) and len(name) > len(RUN_PREFIX + FILE_SUFFIX):
        return name[len(RUN_PREFIX):-len(FILE_SUFFIX)]
    return None
