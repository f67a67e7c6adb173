"""From parameters to a plan: validated settings, the checked table, the runs to do and their batches.

The order is the contract: everything that needs no AWS call (parameters, configs) is checked first, so a bad
input fails before the pipeline touches AWS.
"""
from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

from spark import storage
from spark.storage import Location, LocationError

from . import configs, runs, table
from .errors import PipelineError
from .markers import MarkerStore

log = logging.getLogger("manifest.plan")


@dataclass
class Params:
    """The user's parameters, independent of Luigi so the plan can be tested and reused by every task."""

    enriched_archive: str
    storage_config: str
    resolver: str
    markers: str
    since: str = ""
    runner: str = "local"
    batch_size: int = 10
    create_table: bool = False
    max_write_capacity: float = 0.0
    capacity_fraction: float = 0.5
    on_demand_capacity: float = 1000.0
    write_mode: str = "fast"
    parallel_batches: int = 1
    dry_run: bool = False
    method: str = "write"  # write: the job writes the items; import: a new table by ImportTable (importer.py)
    archive_origin: str = ""  # where enriched_archive came from when not --enriched-archive, for messages
    emr: Optional[Dict[str, Any]] = None  # the EMR runner's checked cluster settings (emretlrunner.cluster_settings)


@dataclass
class Context:
    """What every task needs and can rebuild cheaply: checked parameters, validated configs, the marker store."""

    params: Params
    config: configs.StorageConfig
    archive: Location
    store: MarkerStore
    since: Optional[str]

    @property
    def backfill_id(self) -> str:
        return backfill_id(self.archive, self.config.table, self.store.root)


@dataclass
class Plan:
    context: Context
    table: table.TableInfo
    budget: float  # WCU/s for the whole backfill
    runs_done: List[str] = field(default_factory=list)
    runs_todo: List[str] = field(default_factory=list)
    runs_skipped: List[Dict[str, str]] = field(default_factory=list)
    batches: List[Tuple[str, List[str]]] = field(default_factory=list)


def backfill_id(archive: Location, table_name: str, markers: Location) -> str:
    """Stable across restarts of the same backfill, so a resumed run finds its EMR cluster again."""
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


def check_params(p: Params) -> Tuple[Location, Location, Optional[str]]:
    """Everything that can be checked without AWS or the configs."""
    if p.runner not in ("local", "emr"):
        raise PipelineError(f"--runner {p.runner!r} is not one of: local, emr")
    archive, markers = check_locations(p.enriched_archive, p.markers)
    since = runs.parse_since(p.since)
    if p.runner == "emr" and not (archive.is_s3 and markers.is_s3):
        raise PipelineError("--runner emr needs the archive and --markers in S3 (s3://...)")
    if p.write_mode == "fast" and p.parallel_batches > 1:
        raise PipelineError(
            "--write-mode fast relies on no concurrent writer of earlier etlTimes: it cannot run batches in "
            "parallel (use --workers 1 or --write-mode conditional)"
        )
    from .importer import check_method  # here: importer builds on the tasks, which build on this module

    check_method(p.method, markers)
    if p.max_write_capacity < 0:
        raise PipelineError(f"--max-write-capacity must be positive, not {p.max_write_capacity}")
    return archive, markers, since


def load_context(p: Params) -> Context:
    """Parameters, then configs: no AWS call is made before both are valid."""
    archive, markers, since = check_params(p)
    config = configs.load_configs(p.storage_config, p.resolver)
    return Context(p, config, archive, MarkerStore(markers, config.table), since)


def make_plan(p: Params, dynamodb=None, s3=None) -> Plan:
    ctx = load_context(p)
    s3 = s3 or storage.s3_client()
    if not storage.exists(ctx.archive, s3):
        origin = f" (from {p.archive_origin})" if p.archive_origin else ""
        raise PipelineError(f"enriched archive {ctx.archive.uri}{origin} does not exist or is empty")
    dynamodb = dynamodb or ctx.config.boto3_session().client("dynamodb")
    if p.method == "import":  # the import creates the table: it must not exist (checked below, with the runs)
        info = table.describe_table(dynamodb, ctx.config.table, ctx.config.region)
        budget = float(p.on_demand_capacity)
    elif p.dry_run and p.create_table:  # a dry run writes nothing: a table it would create is a new on-demand one
        info = table.describe_table(dynamodb, ctx.config.table, ctx.config.region)
        budget = (table.write_budget(info, p.max_write_capacity, p.capacity_fraction, p.on_demand_capacity) if info
                  else float(p.max_write_capacity or p.on_demand_capacity))
    else:
        info = table.ensure_table(dynamodb, ctx.config.table, ctx.config.region, p.create_table)
        budget = table.write_budget(info, p.max_write_capacity, p.capacity_fraction, p.on_demand_capacity)
    all_runs, skipped = runs.enumerate_runs(ctx.archive, s3)
    in_scope, before = runs.split_since(all_runs, ctx.since)
    skipped += [{"run": r, "reason": f"before --since {ctx.since}"} for r in before]
    done = ctx.store.done_runs()
    todo = [r for r in in_scope if r not in done]
    batches = runs.make_batches(todo, p.batch_size) if todo else []
    if p.method == "import":  # one job over every run to do: keys settle across all of them
        from .importer import check_import_plan, import_id

        check_import_plan(ctx.store, info, ctx.config.table, ctx.config.region, ctx.backfill_id, todo)
        batches = [(import_id(ctx.backfill_id, todo), list(todo))] if todo else []
    plan = Plan(ctx, info, budget, sorted(done & set(in_scope)), todo, skipped, batches)
    log.info("%d runs in the archive, %d to do, %d already done, %d skipped; %d batches; budget %.0f WCU/s",
             len(all_runs), len(todo), len(plan.runs_done), len(skipped), len(plan.batches), budget)
    return plan
