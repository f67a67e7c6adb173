"""PopulateManifest --method import: a new table made by DynamoDB's ImportTable from staged files, no write capacity.

One Spark job (mode "import") over every run to do settles each key across the whole backfill (nothing can be
conditioned on an import, so the earliest (etlTime, run) of a key must be the one staged) and writes the items as
gzip DynamoDB JSON under `<markers>/<table>/_import/<import id>/data/`. Then ImportTable creates the table from them;
the pipeline waits, enables TTL on `ttl` and marks the runs with their reports.

`_import/<import id>/import.json` records the attempt: its ImportArn once started, its last status. The import id
is derived from the backfill and its runs to do, so a re-run of the same command finds the record and waits for the
import it started (ClientToken = import id and attempt: DynamoDB never starts a second import for a retried call).
A FAILED or CANCELLED import fails the task naming DynamoDB's reason and marks nothing; the next run stages again as
a new attempt.
"""
from __future__ import annotations

import hashlib
import logging
import time
from typing import Callable, List, Optional

from pipeline.rules.batches import Batch
from pipeline.rules.errors import PipelineError
from pipeline.runners.outcome import Status
from pipeline.stores import records, table
from pipeline.stores.markers import MarkerStore, utc_now
from spark import storage
from spark.errors import one_line
from spark.manifest import ATTRIBUTES, KEY_SCHEMA
from spark.storage import Location

from .context import Context
from .launch import Launcher
from .lifecycle import Stage, build_spec, leases_for, read_reports, run_job, settle

log = logging.getLogger("manifest.importer")

IMPORT_FOLDER = "_import"
FINISHED_BADLY = ("FAILED", "CANCELLED")
POLL_SECONDS = 5.0


# --- planning (pure, or one read) ---------------------------------------------------------------------------

def import_id(backfill_id: str, runs: List[str]) -> str:
    """The same for a re-run of the same backfill over the same runs: a resumed run finds its import again."""
    return hashlib.sha1(f"{backfill_id}|{','.join(sorted(runs))}".encode()).hexdigest()[:16]


def import_folder(store: MarkerStore, ident: str) -> Location:
    return store.folder.child(IMPORT_FOLDER, ident)


def record_location(store: MarkerStore, ident: str) -> Location:
    return import_folder(store, ident).child("import.json")


def staging_location(store: MarkerStore, ident: str) -> Location:
    return import_folder(store, ident).child("data")


def started(record: Optional[dict]) -> bool:
    """Whether the record names an import that is running or has completed, or may have been started (STARTING:
    staged and ImportTable called, its answer not recorded; calling it again with the same ClientToken is safe)."""
    return bool(record and (record.get("import_arn") or record.get("status") == "STARTING")
                and record.get("status") not in FINISHED_BADLY)


def check_import_plan(store: MarkerStore, info: Optional[table.TableInfo], table_name: str, region: str,
                      ident: str) -> None:
    """Refuse to import into a table that exists, unless it is the one this backfill's own import is creating."""
    if info is None or started(store.read_json(record_location(store, ident))):
        return
    raise PipelineError(f"--method import creates the table, but DynamoDB table '{table_name}' already exists in "
                        f"{region}: use --method write (the default), or import into a new table")


# --- DynamoDB calls -----------------------------------------------------------------------------------------

def client_token(ident: str, attempt: int) -> str:
    return f"manifest-{ident}-{attempt}"


def start_import(client, table_name: str, staging: Location, token: str) -> str:
    """ImportTable from the staged gzip DynamoDB JSON into a new on-demand table with the manifest's key schema."""
    response = client.import_table(
        ClientToken=token,
        S3BucketSource={"S3Bucket": staging.bucket, "S3KeyPrefix": staging.key.rstrip("/") + "/"},
        InputFormat="DYNAMODB_JSON",
        InputCompressionType="GZIP",
        TableCreationParameters={"TableName": table_name, "AttributeDefinitions": ATTRIBUTES,
                                 "KeySchema": KEY_SCHEMA, "BillingMode": "PAY_PER_REQUEST"},
    )
    return response["ImportTableDescription"]["ImportArn"]


def wait_import(client, arn: str, status: Callable[[dict], None], poll: float = POLL_SECONDS,
                timeout: float = 48 * 3600) -> dict:
    """DescribeImport until the import is no longer IN_PROGRESS (or CANCELLING); its last description."""
    deadline = time.monotonic() + timeout
    while True:
        desc = client.describe_import(ImportArn=arn)["ImportTableDescription"]
        status(desc)
        if desc["ImportStatus"] not in ("IN_PROGRESS", "CANCELLING"):
            return desc
        if time.monotonic() > deadline:
            raise PipelineError(f"import {arn} still {desc['ImportStatus']} after {timeout / 3600:.0f} h: run the "
                                "same command again to keep waiting")
        time.sleep(poll)


# --- the state machine --------------------------------------------------------------------------------------

def run_import(ctx: Context, launcher: Launcher, batch: Batch, status: Status, dynamodb=None,
               poll: float = POLL_SECONDS) -> List[dict]:
    """Every run to do in one staging job, then ImportTable, TTL, and the runs' markers; resumable at each step
    from the import's record."""
    store, config, ident = ctx.store, ctx.config, batch.id
    stage = Stage(staging=staging_location(store, ident).uri)
    with leases_for(ctx, stage, batch.runs, f"import {ident}", status):
        todo = stage.todo(store, batch.runs, ident)
        if not todo:
            status.message("every run was done meanwhile by another process")
            return []
        if todo != list(batch.runs):
            raise PipelineError(f"import {ident}: {len(batch.runs) - len(todo)} of its runs were marked "
                                "meanwhile by another process: run the command again to plan anew")
        dynamodb = dynamodb or config.dynamodb_client()
        record_loc = record_location(store, ident)
        record = store.read_json(record_loc) or {}
        if not started(record):
            record = _start(ctx, dynamodb, _stage(ctx, launcher, batch, stage, record, status))
        elif not record.get("import_arn"):
            log.info("import %s: staged earlier, starting ImportTable again with the same ClientToken", ident)
            record = _start(ctx, dynamodb, record)
        else:
            log.info("import %s: resuming, waiting for %s", ident, record["import_arn"])
        desc = wait_import(dynamodb, record["import_arn"], lambda d: status.message(
            f"ImportTable {d['ImportStatus']}: {d.get('ImportedItemCount') or 0:,} items imported"), poll)
        record.update(status=desc["ImportStatus"], checked_at=utc_now(),
                      imported_items=desc.get("ImportedItemCount"), error_count=desc.get("ErrorCount"))
        store.write_json(record_loc, record)
        if desc["ImportStatus"] != "COMPLETED":
            raise PipelineError(f"import {ident} of table '{config.table}' ended {desc['ImportStatus']}: "
                                f"{desc.get('FailureCode') or 'no code'}: "
                                f"{one_line(desc.get('FailureMessage') or 'no message')}; "
                                "no run was marked")
        if desc.get("ImportedItemCount") is not None and desc["ImportedItemCount"] != record["staged_items"]:
            raise PipelineError(f"import {ident}: {record['staged_items']} items staged but "
                                f"{desc['ImportedItemCount']} imported; no run was marked")
        table.enable_ttl(dynamodb, config.table, config.region)
        records.forget_cleaned(store, todo)  # written again: no longer cleaned runs
        reports = read_reports(store, store.reports(ident), todo)
        for run in todo:
            store.mark(run, reports[run])
        status.message(f"imported {record['staged_items']:,} items; {len(todo)} runs marked")
        status.percentage(100)
        return [reports[run] for run in todo]


def _stage(ctx: Context, launcher: Launcher, batch: Batch, stage: Stage, earlier: dict, status: Status) -> dict:
    """Run the staging job and check every run's report; the record of the attempt about to start."""
    store, config, ident = ctx.store, ctx.config, batch.id
    staging = storage.parse_location(stage.staging)
    storage.delete_all(staging, store.client)  # an earlier attempt's files are never imported
    status.message(f"staging the items of {len(batch.runs)} runs")
    reports = store.reports(ident)
    spec = build_spec(ctx, stage.name, ident, batch.runs, reports.uri, **stage.spec_options(ctx, 0.0))
    outcome = run_job(ctx, launcher, spec, store.batch_spec(ident), status)
    try:
        staged_reports = settle(store, stage, ident, list(batch.runs), outcome,
                                read_reports(store, reports, batch.runs), status)
    except PipelineError as e:
        raise PipelineError(f"import {ident}: nothing imported, as the staging job did not complete every run: "
                            f"{e}") from None
    attempt = int(earlier.get("attempt", 0)) + 1
    token = client_token(ident, attempt)
    record = {"import_id": ident, "attempt": attempt, "client_token": token, "runs": list(batch.runs),
              "staging": staging.uri, "staged_items": sum(r["counts"]["written"] for r in staged_reports),
              "table": config.table, "region": config.region, "status": "STARTING", "started_at": utc_now()}
    store.write_json(record_location(store, ident), record)
    return record


def _start(ctx: Context, dynamodb, record: dict) -> dict:
    store, ident = ctx.store, record["import_id"]
    staging = storage.parse_location(record["staging"])
    record["import_arn"] = start_import(dynamodb, ctx.config.table, staging, record["client_token"])
    record["status"] = "IN_PROGRESS"
    store.write_json(record_location(store, ident), record)
    log.info("import %s: %d items staged, ImportTable started: %s", ident, record["staged_items"],
             record["import_arn"])
    return record
