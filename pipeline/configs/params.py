"""The user's parameters, free of Luigi, and every check that needs neither AWS nor the configs.

One `Params` describes one backfill (or one clean or verify); the Luigi tasks only copy their parameters into it.
The checks here run first, so a bad input fails before the pipeline touches AWS.
"""
from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass
from typing import Optional, Tuple

from pipeline.rules import runs
from pipeline.rules.errors import PipelineError
from spark import storage
from spark.storage import Location, LocationError

RUNNERS = ("local", "emr")
METHODS = ("write", "import")


@dataclass(frozen=True)
class Params:
    """Everything one backfill's tasks share (defaults documented in luigi.cfg); hashable, so one per process."""

    enriched_archive: str
    storage_config: str
    resolver: str
    markers: str = ".manifest-markers"
    since: str = ""
    runner: str = "local"
    batch_size: int = 1000
    batch_minutes: float = 10.0
    create_table: bool = False
    ttl_days: int = 180
    etl_time: str = "run"
    write_mode: str = "fast"
    max_write_capacity: float = 0.0
    capacity_fraction: float = 0.5
    on_demand_capacity: float = 1000.0
    max_malformed_fraction: float = 0.01
    write_expired: bool = False
    max_retry_seconds: float = 600.0
    spark_master: str = "local[*]"
    write_parallelism: int = 0
    progress_seconds: float = 30.0
    emretlrunner_config: str = ""
    log_path: str = ""
    profile: str = ""
    jar: str = ""
    parallel_batches: int = 1  # Luigi's --workers
    emr: Tuple[Tuple[str, str], ...] = ()  # luigi.cfg's [emr] section
    pricing: Tuple[Tuple[str, str], ...] = ()  # luigi.cfg's [pricing] section
    method: str = "write"  # write: the job writes the items; import: a new table by ImportTable (importing.py)
    dry_run: bool = False

    def replace(self, **changes) -> Params:
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True)
class Checked:
    """What the parameters say once checked: the archive, the markers' root and the first run to do."""

    archive: Location
    markers: Location
    since: Optional[str]


def backfill_id(archive: Location, table_name: str, markers: Location) -> str:
    """Stable across restarts of the same backfill (a resumed run finds its EMR cluster again); different for
    another archive, table or markers, so two backfills never share a Luigi task id."""
    return hashlib.sha1(f"{archive.uri}|{table_name}|{markers.uri}".encode()).hexdigest()[:12]


def check_locations(archive_uri: str, markers_uri: str) -> Tuple[Location, Location]:
    if not archive_uri:
        raise PipelineError("--enriched-archive is required (s3://bucket/prefix or a local directory)")
    try:
        archive = storage.parse_location(archive_uri)
    except LocationError as e:
        raise PipelineError(f"--enriched-archive {e}") from None
    try:
        markers = storage.parse_location(markers_uri)
    except LocationError as e:
        raise PipelineError(f"--markers {e}") from None
    if archive.contains(markers):
        raise PipelineError(f"--markers {markers.uri} is inside the enriched archive {archive.uri}: choose another")
    return archive, markers


def check_method(method: str, markers: Location) -> None:
    """--method: import stages its files next to the markers, which must be in S3."""
    if method not in METHODS:
        raise PipelineError(f"--method {method!r} is not one of: {', '.join(METHODS)}")
    if method == "import" and not markers.is_s3:
        raise PipelineError(f"--method import stages its files under --markers, which must be in S3 "
                            f"(s3://...), not {markers.uri}")


def check_params(p: Params) -> Checked:
    """Everything that can be checked without AWS or the configs."""
    if p.runner not in RUNNERS:
        raise PipelineError(f"--runner {p.runner!r} is not one of: {', '.join(RUNNERS)}")
    archive, markers = check_locations(p.enriched_archive, p.markers)
    since = runs.parse_since(p.since)
    if p.runner == "emr" and not (archive.is_s3 and markers.is_s3):
        raise PipelineError("--runner emr needs the archive and --markers in S3 (s3://...)")
    if p.write_mode == "fast" and p.parallel_batches > 1:
        raise PipelineError(
            "--write-mode fast relies on no concurrent writer of earlier etlTimes: it cannot run batches in "
            "parallel (use --workers 1 or --write-mode conditional)"
        )
    check_method(p.method, markers)
    if p.max_write_capacity < 0:
        raise PipelineError(f"--max-write-capacity must be positive, not {p.max_write_capacity}")
    if p.batch_size < 1:
        raise PipelineError(f"--batch-size must be at least 1, not {p.batch_size}")
    if p.batch_minutes <= 0:
        raise PipelineError(f"--batch-minutes must be more than 0, not {p.batch_minutes}")
    return Checked(archive, markers, since)
