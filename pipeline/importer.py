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
import tempfile
import time
from typing import Callable, List, Optional

from spark import report as reports
from spark import storage
from spark.errors import one_line
from spark.manifest import ATTRIBUTES, KEY_SCHEMA
from spark.spec import BatchSpec
from spark.storage import Location

from . import leases, table
from .errors import PipelineError
from .markers import MarkerStore, utc_now
from .tasks import RunBatch

log = logging.getLogger("manifest.importer")

METHODS = ("write", "import")
IMPORT_FOLDER = "_import"
FINISHED_BADLY = ("FAILED", "CANCELLED")
POLL_SECONDS = 5.0


# --- planning (pure, or one read) ---------------------------------------------------------------------------

def check_method(method: str, markers: Location) -> None:
    """--method, before any AWS call: import stages its files next to the markers, which must be in S3."""
    if method not in METHODS:
        raise PipelineError(f"--method {method!r} is not one of: {', '.join(METHODS)}")
    if method == "import" and not markers.is_s3:
        raise PipelineError(f"--method import stages its files under --markers, which must be in S3 "
                            f"(s3://...), not {markers.uri}")


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
                      backfill_id: str, todo: List[str]) -> None:
    """Refuse to import into a table that exists, unless it is the one this backfill's own import is creating."""
    if not todo or info is None:
        return
    if started(store.read_json(record_location(store, import_id(backfill_id, todo)))):
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


# --- the task -----------------------------------------------------------------------------------------------

class ImportBatch(RunBatch):
    """Every run to do in one Spark job staging the final items, then ImportTable, TTL, and the runs' markers."""

    @property
    def task_family_display(self) -> str:
        return f"ImportBatch {self.batch_id}"

    def run(self):
        ctx = self.context()
        store, config = ctx.store, ctx.config
        ident = self.batch_id
        with leases.hold(store.folder, self.runs, store.client, purpose=f"import {ident}",
                         waiting=self.set_status_message):
            todo = [r for r in self.runs if r not in store.done_runs()]
            if not todo:
                self.set_status_message("every run was done meanwhile by another process")
                return
            if todo != list(self.runs):
                raise PipelineError(f"import {ident}: {len(self.runs) - len(todo)} of its runs were marked "
                                    "meanwhile by another process: run the command again to plan anew")
            dynamodb = config.boto3_session().client("dynamodb")
            record_loc = record_location(store, ident)
            record = store.read_json(record_loc) or {}
            if not started(record):
                record = self._start(ctx, dynamodb, self._stage(ctx, record))
            elif not record.get("import_arn"):
                log.info("import %s: staged earlier, starting ImportTable again with the same ClientToken", ident)
                record = self._start(ctx, dynamodb, record)
            else:
                log.info("import %s: resuming, waiting for %s", ident, record["import_arn"])
            desc = wait_import(dynamodb, record["import_arn"], self._import_status)
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
            from .maintenance import forget_cleaned  # here: maintenance builds on the tasks too

            forget_cleaned(store, todo)  # written again: no longer cleaned runs
            for run in todo:
                store.mark(run, store.read_json(store.report(ident, run)))
            self.set_status_message(f"imported {record['staged_items']:,} items; {len(todo)} runs marked")
            self.set_progress_percentage(100)

    def _stage(self, ctx, earlier: dict) -> dict:
        """Run the staging job and check every run's report; the record of the attempt about to start."""
        store, config, ident = ctx.store, ctx.config, self.batch_id
        staging = staging_location(store, ident)
        storage.delete_all(staging, store.client)  # an earlier attempt's files are never imported
        self.set_status_message(f"staging the items of {len(self.runs)} runs")
        spec = BatchSpec(
            batch_id=ident, archive=ctx.archive.uri, runs=list(self.runs), reports=store.reports(ident).uri,
            table=config.table, region=config.region, ttl_days=self.ttl_days, etl_time=self.etl_time,
            max_write_capacity=0.0, write_parallelism=self.write_parallelism,
            max_malformed_fraction=self.max_malformed_fraction, write_expired=self.write_expired,
            extra={"progress_seconds": self.progress_seconds}, mode="import", staging=staging.uri,
        )
        with tempfile.TemporaryDirectory(prefix="manifest-") as private:
            outcome = self._run_job(ctx, spec, private)
        failed, staged = [], 0
        for run in self.runs:
            rep = store.read_json(store.report(ident, run))
            problem = "the job wrote no report" if rep is None else reports.completeness_problem(rep)
            if rep is not None and problem is None and rep.get("mode") != "import":
                problem = f"its report is of a {rep.get('mode', 'populate')} job"
            if problem:
                failed.append(f"run {run}: {problem}")
            else:
                staged += rep["counts"]["written"]
        if failed or not outcome.ok:
            raise PipelineError(f"import {ident}: nothing imported, as the staging job did not complete every run "
                                f"({outcome.detail}): " + "; ".join(failed or ["job failed"]))
        attempt = int(earlier.get("attempt", 0)) + 1
        token = client_token(ident, attempt)
        record = {"import_id": ident, "attempt": attempt, "client_token": token, "runs": list(self.runs),
                  "staging": staging.uri, "staged_items": staged, "table": config.table, "region": config.region,
                  "status": "STARTING", "started_at": utc_now()}
        store.write_json(record_location(store, ident), record)
        return record

    def _start(self, ctx, dynamodb, record: dict) -> dict:
        store, ident = ctx.store, self.batch_id
        staging = storage.parse_location(record["staging"])
        record["import_arn"] = start_import(dynamodb, ctx.config.table, staging, record["client_token"])
        record["status"] = "IN_PROGRESS"
        store.write_json(record_location(store, ident), record)
        log.info("import %s: %d items staged, ImportTable started: %s", ident, record["staged_items"],
                 record["import_arn"])
        return record

    def _import_status(self, desc: dict) -> None:
        self.set_status_message(f"ImportTable {desc['ImportStatus']}: {desc.get('ImportedItemCount') or 0:,} "
                                "items imported")
