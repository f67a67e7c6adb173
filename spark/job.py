"""The Spark job: one batch of archive runs into the DynamoDB event manifest, and one report per run.

Three passes over data read once: (1) tasks of data objects (a large object alone, small ones packed together)
stream, parse and count them, their events kept (memory and disk) for later (spark.reading); (2) the driver,
knowing every object's counts, fails the runs that cannot be trusted (unreadable or archived objects, too many
malformed lines) before anything is written (spark.runstate); (3) the other runs' events are collapsed by key
(in-run duplicates, expiry, earliest run of the batch) into hash partitions that each act with their share of the
budget (spark.passes).

The spec's mode picks pass (3): populate writes; clean deletes the items the runs wrote and verify reads them; import
stages the items for DynamoDB's ImportTable. All of them start from the same parsing and the same per-run etlTime,
so a clean removes exactly what a populate wrote and a verify checks exactly that.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, List, Optional, Sequence, Tuple, TypeVar

from pyspark import StorageLevel
from pyspark.sql import SparkSession

from spark import reading
from spark.clients import endpoints
from spark.errors import error_line, spark_error_line
from spark.passes import MODES, run_pass
from spark.progress import PROGRESS_SECONDS, Progress
from spark.refusals import DEFAULT_CHAIN, told
from spark.runid import parse_run_id
from spark.runstate import add_object_stats, count_only, finish_report, judge, save_report, tell_refusals
from spark.spec import BatchSpec
from spark.storage import Location, LocationError, parse_location, read_bytes, s3_client

LOG = logging.getLogger("manifest.job")
DRIVER_THREADS = 8  # the driver's S3 requests in flight; botocore pools 10 connections a client
T, R = TypeVar("T"), TypeVar("R")


class JobError(Exception):
    """A batch that cannot start (bad spec, unreadable credentials); the message is one line."""


def main(argv: Optional[List[str]] = None) -> int:
    """spark-submit populate.py --spec <location>: 0 when every run is ok, 1 when one is not, 2 for a bad spec."""
    parser = argparse.ArgumentParser(prog="populate.py", description="Populate the Snowplow event manifest "
                                                                     "from a batch of enriched-archive runs.")
    parser.add_argument("--spec", required=True, help="local path or s3:// object holding the batch spec JSON")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    LOG.setLevel(logging.INFO)
    try:
        spec = load_spec(args.spec)
    except JobError as e:
        LOG.error("%s", e)
        return 2
    spark = SparkSession.builder.appName(f"snowplow-manifest-populator {spec.batch_id}").getOrCreate()
    spark.sparkContext.setLogLevel("WARN")
    try:
        return run_batch(spark, spec)
    except JobError as e:
        LOG.error("%s", e)
        return 2
    except Exception as e:  # noqa: BLE001 - one line for the user; the runs without a report stay unmarked
        LOG.error("batch %s failed: %s", spec.batch_id, spark_error_line(e))
        return 1
    finally:
        spark.stop()


def load_spec(uri: str) -> BatchSpec:
    try:
        text = read_bytes(parse_location(uri)).decode("utf-8")
    except Exception as e:  # noqa: BLE001 - any failure is one line for the user
        line, refused = told(e)
        tell_refusals([line] if refused else [])
        raise JobError(f"cannot read the batch spec at {uri}: {line}") from None
    try:
        return BatchSpec.from_json(text)
    except (ValueError, TypeError) as e:
        raise JobError(f"invalid batch spec at {uri}: {error_line(e)}") from None


def load_credentials(uri: Optional[str], client=None) -> Optional[dict]:
    """The staged {"accessKeyId", "secretAccessKey"} for DynamoDB, or None for the default chain.

    Errors never quote the file: it holds the secret. AWS's refusal of it is told (its line names the object).
    """
    if uri is None:
        return None
    try:
        data = json.loads(read_bytes(parse_location(uri), client).decode("utf-8"))
    except Exception as e:  # noqa: BLE001
        line, refused = told(e)
        if refused:
            tell_refusals([line])
            raise JobError(f"cannot read the credentials at {uri}: {line}") from None
        raise JobError(f"cannot read the credentials at {uri} ({type(e).__name__})") from None
    if not isinstance(data, dict) or not data.get("accessKeyId") or not data.get("secretAccessKey"):
        raise JobError(f"the credentials at {uri} must be a JSON object with accessKeyId and secretAccessKey")
    return {k: data[k] for k in ("accessKeyId", "secretAccessKey", "sessionToken") if data.get(k)}


def check_spec(spec: BatchSpec) -> Tuple[Location, Location]:
    """The archive and reports locations of a spec the job can run, else JobError: nothing is read before this."""
    try:
        archive, reports = parse_location(spec.archive), parse_location(spec.reports)
    except LocationError as e:
        raise JobError(str(e)) from None
    if not spec.runs:
        raise JobError("the batch spec names no runs")
    bad = [r for r in spec.runs if parse_run_id(r) != r]
    if bad:
        raise JobError(f"run ids must look like YYYY-MM-DD-HH-MM-SS, not {bad[0]!r}")
    if len(set(spec.runs)) != len(spec.runs):
        raise JobError("the batch spec names a run twice")
    if spec.count_only and spec.mode != "populate":
        raise JobError(f"count_only is a populate option, not one of mode {spec.mode!r}")
    if not spec.count_only:
        if not spec.table or not spec.region:
            raise JobError("the batch spec must name the table and its region")
        capacity = MODES[spec.mode].capacity
        if spec.mode == "import":  # writes files, not items: no capacity is used
            if not spec.staging:
                raise JobError("an import batch spec must name its staging prefix")
            try:
                parse_location(spec.staging)
            except LocationError as e:
                raise JobError(f"staging: {e}") from None
        elif not getattr(spec, capacity) > 0:
            raise JobError(f"{capacity} must be positive, not {getattr(spec, capacity)!r}")
    if not 0 <= spec.max_malformed_fraction <= 1:
        raise JobError(f"max_malformed_fraction must be between 0 and 1, not {spec.max_malformed_fraction!r}")
    return archive, reports


def run_batch(spark, spec: BatchSpec) -> int:
    """Process one batch and write its reports; 0 when every run is ok, 1 otherwise."""
    archive, reports = check_spec(spec)
    s3_identity = spec.identities.get("s3") or DEFAULT_CHAIN
    uses_s3 = archive.is_s3 or reports.is_s3 or (spec.credentials or "").startswith("s3")
    client = s3_client(identity=s3_identity) if uses_s3 else None  # one client: making one costs ~0.5 s of CPU
    credentials = None if spec.count_only else load_credentials(spec.credentials, client)
    now = spec.now if spec.now is not None else time.time()
    states = in_order(lambda run: reading.list_run(archive, run, spec, client), spec.runs)
    sc = spark.sparkContext
    tasks = reading.reading_tasks(states, sc.defaultParallelism, endpoints(), s3_identity)
    mode = MODES[spec.mode]
    parsed = None
    read_s = action_s = 0.0
    progress = Progress(sc, float(spec.extra.get("progress_seconds", PROGRESS_SECONDS)))
    progress.start()
    try:
        if tasks:
            started = time.monotonic()
            progress.enter("reading")
            parsed = sc.parallelize(tasks, len(tasks)).mapPartitions(reading.read_objects)
            if not spec.count_only:  # read once, kept for the action pass
                parsed = parsed.persist(StorageLevel.MEMORY_AND_DISK)
            try:
                stats = reading.stats_records(parsed)
            except Exception as e:  # noqa: BLE001 - Spark itself failed: every run read is unknown
                stats = []
                for s in states:
                    if s.ok and s.objects:
                        s.fail(f"reading failed: {spark_error_line(e)}")
            read_s = time.monotonic() - started
            add_object_stats(states, stats)
            judge(states, spec.max_malformed_fraction)
        if spec.count_only:
            for s in states:
                count_only(s)
        elif parsed is not None and any(s.ok and s.valid for s in states):
            started = time.monotonic()
            rate = getattr(spec, mode.capacity) if mode.capacity else 0.0
            progress.enter(mode.phase, sum(s.valid for s in states if s.ok), rate, mode.unit)
            run_pass(sc, parsed, states, spec, credentials, now)
            action_s = time.monotonic() - started
    finally:
        progress.stop()
        if parsed is not None and parsed.is_cached:
            parsed.unpersist()
    for s in states:
        finish_report(s, read_s, mode.timing, action_s)
    unsaved = [why for why in in_order(lambda s: save_report(reports, s, client), states) if why]
    tell_refusals([s.report["refused"] for s in states if s.report.get("refused")]
                  + [line for line, refused in unsaved if refused])
    return 0 if not unsaved and all(s.ok for s in states) else 1


def in_order(work: Callable[[T], R], items: Sequence[T]) -> List[R]:
    """work(item) for every item, DRIVER_THREADS at a time, results in the items' order: the driver's per-run S3
    requests (a run's listing, its report) wait on the network, and a batch may hold a thousand runs."""
    with ThreadPoolExecutor(DRIVER_THREADS) as pool:
        return list(pool.map(work, items))


if __name__ == "__main__":
    sys.exit(main())
