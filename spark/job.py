"""The Spark job: one batch of archive runs into the DynamoDB event manifest, and one report per run.

Three passes over data read once: (1) tasks of data objects (a large object alone, small ones packed together)
stream, parse and count them, their events kept (memory and disk) for later; (2) the driver, knowing every
object's counts, fails the runs that cannot be trusted (unreadable or archived objects, too many malformed
lines) before anything is written; (3) the other runs' events are collapsed by key (in-run duplicates, expiry,
earliest run of the batch) into hash partitions that each write their share of the capacity budget. Every
count reaches the driver as the result of an action, never through accumulators, so a retried task cannot
count twice.

The spec's mode picks pass (3): populate writes; clean deletes the items the runs wrote and verify reads them
(spark.maintenance), from the same parsing and the same per-run etlTime, so a clean removes exactly what a
populate wrote and a verify checks exactly that.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import re
import sys
import threading
import time
import zlib
from dataclasses import dataclass, field
from functools import partial
from typing import Dict, Iterator, List, Optional, Tuple

from spark import events as ev
from spark.archive import ArchiveReadError, archived_objects, data_objects, read_lines
from spark.report import (
    MALFORMED_REASONS,
    MODE_FAILURES,
    MODE_OUTCOMES,
    counts_add_up,
    dumps,
    merge_examples,
    new_report,
)
from spark.spec import BatchSpec
from spark.storage import Location, LocationError, list_objects, parse_location, read_bytes, s3_client, write_bytes

LOG = logging.getLogger("manifest.job")
_RUN_ID = re.compile(r"^\d{4}-\d\d-\d\d-\d\d-\d\d-\d\d\Z")
PROGRESS_SECONDS = 30.0  # between progress lines (spec.extra["progress_seconds"] overrides)
WRITE_THREADS = 8  # DynamoDB requests in flight per writing task (spec.extra["write_threads"] overrides)
# Reading tasks: objects are packed up to a share of the input, as Spark packs small files; each object is
# charged an opening cost so that a task never holds very many tiny ones (S3 Loader writes thousands).
MIN_TASK_BYTES = 8 << 20
MAX_TASK_BYTES = 128 << 20
OPEN_COST_BYTES = 1 << 20
# Endpoint overrides boto3 reads itself; tasks take the driver's, as executor processes may predate them.
ENDPOINT_VARIABLES = ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL_DYNAMODB")


class JobError(Exception):
    """A batch that cannot start (bad spec, unreadable credentials); the message is one line."""


@dataclass
class RunState:
    """The driver's view of one run while the batch goes through its passes."""

    run: str
    folder: Location
    report: dict
    objects: List[Tuple[str, int]] = field(default_factory=list)  # (name, bytes) of its data objects
    valid: int = 0
    min_etl_ms: Optional[int] = None

    @property
    def ok(self) -> bool:
        return self.report["status"] == "ok"

    def fail(self, error: str) -> None:
        self.report["status"] = "failed"
        self.report["errors"].append(error)


class Progress(threading.Thread):
    """A one-line progress report at a steady interval while a batch runs, on the driver's log.

    The read pass counts Spark tasks; the write pass is paced by the budget, so its share done is estimated from
    the time spent against the events to settle at that rate (capped below 100 until the pass ends).
    """

    READ_SHARE = 30.0  # of the batch's percentage

    def __init__(self, sc, interval: float):
        super().__init__(daemon=True, name="progress")
        self.sc, self.interval = sc, interval
        self.phase, self.events, self.rate = "listing", 0, 0.0
        self.started = self.phase_started = time.monotonic()
        self._stop = threading.Event()

    def enter(self, phase: str, events: int = 0, rate: float = 0.0) -> None:
        self.phase, self.events, self.rate, self.phase_started = phase, events, rate, time.monotonic()

    def line(self) -> str:
        elapsed = time.monotonic() - self.phase_started
        if self.phase in _ACTION_PHASES and self.events and self.rate:
            share = min(0.99, elapsed * self.rate / self.events)
            pct = self.READ_SHARE + (100 - self.READ_SHARE) * share
            unit = "RCU/s" if self.phase == "checking" else "WCU/s"
            detail = f"{self.phase} ~{int(share * self.events):,} of ~{self.events:,} items at {self.rate:g} {unit}"
        else:
            done = total = 0
            tracker = self.sc.statusTracker()
            for stage in tracker.getActiveStageIds():
                info = tracker.getStageInfo(stage)
                if info:
                    done, total = done + info.numCompletedTasks, total + info.numTasks
            pct = self.READ_SHARE * done / total if total else 0.0
            detail = f"{self.phase}: {done}/{total} tasks"
        return f"progress: {pct:.0f}% {detail}, {time.monotonic() - self.started:.0f} s elapsed"

    def run(self) -> None:
        while not self._stop.wait(self.interval):
            LOG.info("%s", self.line())

    def stop(self) -> None:
        self._stop.set()


# --- entry points -------------------------------------------------------------------------------------------

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
    from pyspark.sql import SparkSession

    spark = SparkSession.builder.appName(f"snowplow-manifest-populator {spec.batch_id}").getOrCreate()
    spark.sparkContext.setLogLevel("WARN")
    try:
        return run_batch(spark, spec)
    except JobError as e:
        LOG.error("%s", e)
        return 2
    except Exception as e:  # noqa: BLE001 - one line for the user; the runs without a report stay unmarked
        LOG.error("batch %s failed: %s", spec.batch_id, _spark_error(e))
        return 1
    finally:
        spark.stop()


def load_spec(uri: str) -> BatchSpec:
    try:
        text = read_bytes(parse_location(uri)).decode("utf-8")
    except Exception as e:  # noqa: BLE001 - any failure is one line for the user
        raise JobError(f"cannot read the batch spec at {uri}: {_one_line(e)}") from None
    try:
        return BatchSpec.from_json(text)
    except (ValueError, TypeError) as e:
        raise JobError(f"invalid batch spec at {uri}: {_one_line(e)}") from None


def load_credentials(uri: Optional[str]) -> Optional[dict]:
    """The staged {"accessKeyId", "secretAccessKey"} for DynamoDB, or None for the default chain.

    Errors never quote the file: it holds the secret.
    """
    if uri is None:
        return None
    try:
        data = json.loads(read_bytes(parse_location(uri)).decode("utf-8"))
    except Exception as e:  # noqa: BLE001
        raise JobError(f"cannot read the credentials at {uri} ({type(e).__name__})") from None
    if not isinstance(data, dict) or not data.get("accessKeyId") or not data.get("secretAccessKey"):
        raise JobError(f"the credentials at {uri} must be a JSON object with accessKeyId and secretAccessKey")
    return {k: data[k] for k in ("accessKeyId", "secretAccessKey", "sessionToken") if data.get(k)}


def run_batch(spark, spec: BatchSpec) -> int:
    """Process one batch and write its reports; 0 when every run is ok, 1 otherwise."""
    archive, reports = _check_spec(spec)
    credentials = None if spec.count_only else load_credentials(spec.credentials)
    now = spec.now if spec.now is not None else time.time()
    client = s3_client() if archive.is_s3 else None
    states = [_list_run(archive, run, spec.batch_id, client, spec) for run in spec.runs]
    sc = spark.sparkContext
    endpoints = _endpoints()
    objects = [(size, i, s.folder.child(name).uri, name) for i, s in enumerate(states) if s.ok
               for name, size in s.objects]
    groups = [[(i, uri, name, endpoints) for _, i, uri, name in group]
              for group in pack_objects(objects, sc.defaultParallelism)]
    parsed = None
    read_s = write_s = 0.0
    progress = Progress(sc, float(spec.extra.get("progress_seconds", PROGRESS_SECONDS)))
    progress.start()
    try:
        if groups:
            from pyspark import StorageLevel

            started = time.monotonic()
            progress.enter("reading")
            parsed = sc.parallelize(groups, len(groups)).mapPartitions(_read_objects)
            if not spec.count_only:  # read once, kept for the write pass
                parsed = parsed.persist(StorageLevel.MEMORY_AND_DISK)
            try:
                stats = parsed.filter(_is_stats).collect()
            except Exception as e:  # noqa: BLE001 - Spark itself failed: every run read is unknown
                stats = []
                for s in states:
                    if s.ok and s.objects:
                        s.fail(f"reading failed: {_spark_error(e)}")
            read_s = time.monotonic() - started
            _apply_stats(states, stats, spec)
        if spec.count_only:
            for s in states:
                _count_only(s)
        elif parsed is not None and any(s.ok and s.valid for s in states):
            started = time.monotonic()
            rate = spec.max_read_capacity if spec.mode == "verify" else spec.max_write_capacity
            progress.enter(_ACTION_PHASES[spec.mode], sum(s.valid for s in states if s.ok), rate)
            _PASSES[spec.mode](sc, parsed, states, spec, credentials, now)
            write_s = time.monotonic() - started
    finally:
        progress.stop()
        if parsed is not None and parsed.is_cached:
            parsed.unpersist()
    saved = True
    for s in states:
        _finish_report(s, read_s, write_s)
        saved = _save_report(reports, s) and saved
    return 0 if saved and all(s.ok for s in states) else 1


def _check_spec(spec: BatchSpec) -> Tuple[Location, Location]:
    try:
        archive, reports = parse_location(spec.archive), parse_location(spec.reports)
    except LocationError as e:
        raise JobError(str(e)) from None
    if not spec.runs:
        raise JobError("the batch spec names no runs")
    bad = [r for r in spec.runs if not isinstance(r, str) or not _RUN_ID.match(r)]
    if bad:
        raise JobError(f"run ids must look like YYYY-MM-DD-HH-MM-SS, not {bad[0]!r}")
    if len(set(spec.runs)) != len(spec.runs):
        raise JobError("the batch spec names a run twice")
    if spec.count_only and spec.mode != "populate":
        raise JobError(f"count_only is a populate option, not one of mode {spec.mode!r}")
    if not spec.count_only:
        if not spec.table or not spec.region:
            raise JobError("the batch spec must name the table and its region")
        capacity = "max_read_capacity" if spec.mode == "verify" else "max_write_capacity"
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


# --- listing and reading ------------------------------------------------------------------------------------

def _list_run(archive: Location, run: str, batch_id: str, client=None, spec: Optional[BatchSpec] = None) -> RunState:
    """The run's data objects; archived (GLACIER, DEEP_ARCHIVE) ones fail the run before any reading."""
    folder = archive.child(f"run={run}")
    mode = spec.mode if spec is not None else "populate"
    state = RunState(run, folder, new_report(run, batch_id, mode))
    if mode == "verify":  # what the counts cover; missing_examples: up to 10 keys missing or late
        state.report.update(sample={"size": spec.sample, "seed": spec.sample_seed} if spec.sample else None,
                            missing_examples=[])
    try:
        listed = list_objects(folder, client)
        data = data_objects(listed)
        archived = archived_objects(folder, data, client) if folder.is_s3 else []
    except Exception as e:  # noqa: BLE001
        state.fail(f"cannot list {folder.uri}: {_one_line(e)}")
        return state
    state.objects = [(o.name, o.size) for o in data]
    unreadable = set(archived)
    state.report["objects"] = [
        {"key": folder.child(o.name).uri, "bytes": o.size, "lines": 0,
         "error": "archived in GLACIER or DEEP_ARCHIVE: restore it first" if o.name in unreadable else None}
        for o in data]
    if archived:
        shown = ", ".join(folder.child(a).uri for a in archived[:5])
        more = f" and {len(archived) - 5} more" if len(archived) > 5 else ""
        state.fail(f"{len(archived)} objects are archived in GLACIER or DEEP_ARCHIVE and cannot be read "
                   f"(restore them first): {shown}{more}")
    if not data:
        what = "holds no data objects" if listed else "is empty or missing"
        state.report["warnings"] = [f"{folder.uri} {what}"]
    LOG.info("run %s: %d objects, %d bytes%s", run, len(data), sum(o.size for o in data),
             f", {len(archived)} archived" if archived else "")
    return state


def pack_objects(objects: List[tuple], parallelism: int) -> List[List[tuple]]:
    """Group (size, ...) objects into reading tasks: largest first, each task up to a share of the input.

    A share is the input over Spark's parallelism, kept between MIN_TASK_BYTES and MAX_TASK_BYTES; an object
    larger than that is a task of its own (one object is never split: gzip cannot be).
    """
    total = sum(o[0] + OPEN_COST_BYTES for o in objects)
    target = max(MIN_TASK_BYTES, min(MAX_TASK_BYTES, total // max(1, parallelism)))
    groups: List[List[tuple]] = []
    loads: List[int] = []
    for o in sorted(objects, key=lambda o: (-o[0],) + tuple(o[1:])):
        cost = o[0] + OPEN_COST_BYTES
        fits = [g for g, load in enumerate(loads) if load + cost <= target]
        if fits:  # the emptiest group it fits in, so groups even out
            g = min(fits, key=loads.__getitem__)
            groups[g].append(o)
            loads[g] += cost
        else:
            groups.append([o])
            loads.append(cost)
    return groups


def _read_objects(groups: Iterator[List[Tuple[int, str, str, dict]]]) -> Iterator:
    """Per object: its run index (an int), its events as (event_id, fingerprint, etl ms) tuples, a stats dict."""
    for group in groups:
        for run_index, uri, name, endpoints in group:
            yield run_index
            tally = ev.LineTally()
            error = None
            try:
                loc = parse_location(uri)
                client = _client("s3", endpoints) if loc.is_s3 else None
                yield from ev.scan_lines(read_lines(loc, client, name=uri), name, tally)
            except ArchiveReadError as e:
                error = str(e)
            except Exception as e:  # noqa: BLE001 - the run fails naming the object; other runs go on
                error = f"{uri}: cannot read: {_one_line(e)}"
            yield {"run_index": run_index, "key": uri, "lines": tally.lines, "malformed": tally.malformed,
                   "examples": tally.examples, "no_fingerprint": tally.no_fingerprint, "valid": tally.valid,
                   "min_etl_ms": tally.min_etl_ms, "error": error}


_CLIENTS: Dict[tuple, object] = {}


def _client(service: str, endpoints: Dict[str, str], region: Optional[str] = None,
            credentials: Optional[dict] = None):
    """A boto3 client kept for the life of the executor's Python worker: creating one costs ~0.5 s of CPU here."""
    _use_endpoints(endpoints)
    key = (service, tuple(sorted(endpoints.items())), region, tuple(sorted((credentials or {}).items())))
    client = _CLIENTS.get(key)
    if client is None:
        if service == "s3":
            client = s3_client()
        else:
            from spark.writer import dynamodb_client

            client = dynamodb_client(region, credentials)
        _CLIENTS[key] = client
    return client


def _is_stats(record) -> bool:
    return isinstance(record, dict)


# --- driver: deciding ---------------------------------------------------------------------------------------

def _apply_stats(states: List[RunState], stats: List[dict], spec: BatchSpec) -> None:
    """Fold the objects' counts into their runs, then fail the runs that must not be written."""
    objects = {o["key"]: o for s in states for o in s.report["objects"]}
    for st in sorted(stats, key=lambda x: (x["run_index"], x["key"])):
        s = states[st["run_index"]]
        counts = s.report["counts"]
        counts["lines"] += st["lines"]
        for reason in MALFORMED_REASONS:
            counts["malformed"][reason] += st["malformed"][reason]
        counts["malformed_examples"] = merge_examples(counts["malformed_examples"], st["examples"])
        counts["no_fingerprint"] += st["no_fingerprint"]
        s.valid += st["valid"]
        if st["min_etl_ms"] is not None and (s.min_etl_ms is None or st["min_etl_ms"] < s.min_etl_ms):
            s.min_etl_ms = st["min_etl_ms"]
        objects[st["key"]].update(lines=st["lines"], error=st["error"])
    for s in states:
        if not s.ok:
            continue
        unread = [o["key"] for o in s.report["objects"] if o["error"]]
        if unread:
            first = next(o["error"] for o in s.report["objects"] if o["error"])
            s.fail(f"{len(unread)} objects could not be read: {first}")
            continue
        counts = s.report["counts"]
        malformed = sum(counts["malformed"].values())
        if counts["lines"] and malformed / counts["lines"] > spec.max_malformed_fraction:
            reasons = ", ".join(f"{n} {r}" for r, n in counts["malformed"].items() if n)
            s.fail(f"{malformed} of {counts['lines']} lines are malformed ({reasons}), "
                   f"above the limit of {spec.max_malformed_fraction:.2%}")
    for s in states:
        if s.min_etl_ms is not None:
            s.report["etl_time"] = ev.etl_seconds(s.min_etl_ms)


def _count_only(s: RunState) -> None:
    s.report["count_only"] = True
    s.report["counts"]["not_written"] = s.valid


# --- writing ------------------------------------------------------------------------------------------------

def _write_pass(sc, parsed, states: List[RunState], spec: BatchSpec, credentials: Optional[dict],
                now: float) -> None:
    """Collapse the ok runs' events by key into P hash partitions and write each with 1/P of the budget."""
    writing = {i: s for i, s in enumerate(states) if s.ok and s.valid}
    partitions = spec.write_parallelism or sc.defaultParallelism
    config = {
        "ttl_days": spec.ttl_days, "now": now, "write_expired": spec.write_expired, "table": spec.table,
        "region": spec.region, "credentials": credentials, "mode": spec.write_mode,
        "rate": spec.max_write_capacity / partitions, "max_retry_seconds": spec.max_retry_seconds,
        "threads": int(spec.extra.get("write_threads", WRITE_THREADS)), "endpoints": _endpoints(),
    }

    results = (_copies_by_key(parsed, writing, spec, partitions)
               .mapPartitions(lambda items: _write_partition(items, config)))
    _collect_outcomes(results, writing, spec, "writing", "write_failures", "written")


def _copies_by_key(parsed, acting: Dict[int, RunState], spec: BatchSpec, partitions: int):
    """The acting runs' events as (event_id, fingerprint) -> copies (ev.merge_copies) in P hash partitions.

    A copy's etlTime is what the populator writes for it: the run's earliest etl_tstamp, or the event's own.
    """
    run_etl = {i: (s.run, ev.etl_seconds(s.min_etl_ms)) for i, s in acting.items()}
    per_event = spec.etl_time == "event"

    def keyed(records: Iterator) -> Iterator:
        run = etl = None
        for r in records:
            kind = r.__class__
            if kind is tuple:
                if run is not None:
                    yield (r[0], r[1]), ((r[2] // 1000 if per_event else etl, run, 1),)
            elif kind is int:  # the next object's run: None when that run is not acted on
                run, etl = run_etl.get(r, (None, None))

    return parsed.mapPartitions(keyed).reduceByKey(ev.merge_copies, partitions, _key_partition)


def _collect_outcomes(results, acting: Dict[int, RunState], spec: BatchSpec, verb: str, failures: str,
                      past: str) -> None:
    """Run the partitions' actions and fold their per-run outcome counts (and examples) into the reports.

    Any partition's error fails every acting run: which keys it left undone is unknown.
    """
    try:
        collected = results.collect()
    except Exception as e:  # noqa: BLE001 - Spark itself failed: nothing is known of the requests
        for s in acting.values():
            s.fail(f"{verb} failed: {_spark_error(e)}")
        collected = []
    by_run = {s.run: s for s in acting.values()}
    errors = []
    for result in collected:
        if result["error"]:
            errors.append(result["error"])
        for run, outcomes in result["outcomes"].items():
            counts = by_run[run].report["counts"]
            for name, n in outcomes.items():
                counts[name] = counts.get(name, 0) + n
        for run, examples in result.get("examples", {}).items():
            report = by_run[run].report
            report["missing_examples"] = merge_examples(report.get("missing_examples", []), examples)
    for s in acting.values():
        if not s.ok:
            continue
        counts = s.report["counts"]
        if errors:
            s.fail(f"{verb} failed: {errors[0]}")
        elif counts[failures]:
            s.fail(f"{counts[failures]} items were not {past} within {spec.max_retry_seconds:g} s "
                   "of throttling or errors")


# --- clean and verify ---------------------------------------------------------------------------------------

def _maintenance_config(spec: BatchSpec, credentials: Optional[dict], now: float, rate: float) -> dict:
    return {"table": spec.table, "region": spec.region, "credentials": credentials, "rate": rate,
            "max_retry_seconds": spec.max_retry_seconds, "ttl_days": spec.ttl_days, "now": now,
            "threads": int(spec.extra.get("write_threads", WRITE_THREADS)), "endpoints": _endpoints()}


def _clean_pass(sc, parsed, states: List[RunState], spec: BatchSpec, credentials: Optional[dict],
                now: float) -> None:
    """Delete what the ok runs wrote, key by key in P hash partitions, each with 1/P of the WCU budget."""
    acting = {i: s for i, s in enumerate(states) if s.ok and s.valid}
    partitions = spec.write_parallelism or sc.defaultParallelism
    config = _maintenance_config(spec, credentials, now, spec.max_write_capacity / partitions)
    results = (_copies_by_key(parsed, acting, spec, partitions)
               .mapPartitions(lambda keys: _clean_partition(keys, config)))
    _collect_outcomes(results, acting, spec, "deleting", "delete_failures", "deleted")


def _verify_pass(sc, parsed, states: List[RunState], spec: BatchSpec, credentials: Optional[dict],
                 now: float) -> None:
    """Check the ok runs' keys (or each run's sample of spec.sample keys), each partition with 1/P of the RCU budget."""
    acting = {i: s for i, s in enumerate(states) if s.ok and s.valid}
    partitions = spec.write_parallelism or sc.defaultParallelism
    config = _maintenance_config(spec, credentials, now, spec.max_read_capacity / partitions)
    keys = _copies_by_key(parsed, acting, spec, partitions)
    if spec.sample:
        keys = _draw_sample(sc, keys, acting, spec, now, partitions)
        if keys is None:
            return
    results = keys.mapPartitions(lambda k: _verify_partition(k, config))
    _collect_outcomes(results, acting, spec, "reading", "read_failures", "read")


def _draw_sample(sc, keys, acting: Dict[int, RunState], spec: BatchSpec, now: float, partitions: int):
    """Each run's sample as keys of the same shape, its other keys counted (duplicates, expired, not sampled)."""
    from spark import maintenance as mt

    k, seed, ttl_days = spec.sample, spec.sample_seed, spec.ttl_days
    try:
        samples = dict(keys.flatMap(lambda kv: mt.sample_entries(kv[0][0], kv[0][1], kv[1], ttl_days, now, seed))
                       .aggregateByKey(mt.empty_sample(), partial(mt.sample_add, k), partial(mt.sample_merge, k),
                                       max(1, min(partitions, len(acting))))
                       .collect())
    except Exception as e:  # noqa: BLE001 - Spark itself failed: no run can be checked
        for s in acting.values():
            s.fail(f"sampling failed: {_spark_error(e)}")
        return None
    by_run = {s.run: s for s in acting.values()}
    for run, drawn in samples.items():
        counts = by_run[run].report["counts"]
        counts["in_run_duplicates"] += drawn["in_run_duplicates"]
        counts["expired"] += drawn["expired"]
        counts["not_sampled"] += drawn["eligible"] - len(drawn["heap"])
    chosen = sorted(mt.sampled_keys(samples).items())
    return sc.parallelize(chosen, max(1, min(partitions, len(chosen))))


def _clean_partition(keys: Iterator, config: dict) -> Iterator[dict]:
    from spark.maintenance import delete_items, split_copies
    from spark.ratelimit import TokenBucket

    def delete(targets: Iterator) -> Dict[str, Dict[str, int]]:
        client = _client("dynamodb", config["endpoints"], config["region"], config["credentials"])
        return delete_items(targets, client=client, table=config["table"], limiter=TokenBucket(config["rate"]),
                            max_retry_seconds=config["max_retry_seconds"], concurrency=config["threads"])

    yield _settle_and_act(keys, split_copies, delete, "delete_failures")


def _verify_partition(keys: Iterator, config: dict) -> Iterator[dict]:
    from spark.maintenance import check_items, split_copies
    from spark.ratelimit import TokenBucket

    examples: Dict[str, List[str]] = {}

    def check(targets: Iterator) -> Dict[str, Dict[str, int]]:
        client = _client("dynamodb", config["endpoints"], config["region"], config["credentials"])
        result = check_items(targets, client=client, table=config["table"], read_limiter=TokenBucket(config["rate"]),
                             max_retry_seconds=config["max_retry_seconds"], concurrency=config["threads"])
        examples.update(result.examples)
        return result.counts

    result = _settle_and_act(keys, partial(split_copies, ttl_days=config["ttl_days"], now=config["now"]), check,
                             "read_failures")
    result["examples"] = examples
    yield result


def _settle_and_act(keys: Iterator, split, act, failures: str) -> dict:
    """Split each key's copies into targets and settled outcomes, and act on the targets (delete or check).

    When `act` raises, every target of the partition counts as a failure and the error is returned: nothing is
    counted twice and every copy is counted once.
    """
    outcomes: Dict[str, Dict[str, int]] = {}
    owed: Dict[str, int] = {}

    def add(run: str, name: str, n: int) -> None:
        row = outcomes.setdefault(run, {})
        row[name] = row.get(name, 0) + n

    def targets() -> Iterator:
        for (event_id, fingerprint), copies in keys:
            chosen, settled = split(copies)
            for run, outcome, n in settled:
                add(run, outcome, n)
            for _, run in chosen:
                owed[run] = owed.get(run, 0) + 1
            if chosen:
                yield event_id, fingerprint, chosen

    pending = targets()
    error = None
    try:
        done = act(pending)
    except Exception as e:  # noqa: BLE001 - the partition's runs fail with this line
        error = _one_line(e)
        for _ in pending:  # settle the keys not reached yet
            pass
        done = {run: {failures: n} for run, n in owed.items()}
    for run, row in done.items():
        for name, n in row.items():
            if n:
                add(run, name, n)
    return {"outcomes": outcomes, "error": error}


def _endpoints() -> Dict[str, str]:
    return {name: os.environ[name] for name in ENDPOINT_VARIABLES if os.environ.get(name)}


def _use_endpoints(endpoints: Dict[str, str]) -> None:
    """Make this executor process's endpoint variables the driver's."""
    for name in ENDPOINT_VARIABLES:
        if name in endpoints:
            os.environ[name] = endpoints[name]
        else:
            os.environ.pop(name, None)


def _key_partition(key: Tuple[str, str]) -> int:
    """A hash of the event id that is the same in every Python process (str hashes are salted)."""
    return zlib.crc32(key[0].encode("utf-8"))


def _write_partition(keys: Iterator, config: dict) -> Iterator[dict]:
    """Settle and write one partition of keys; one dict of per-run outcome counts (and an error, if any)."""
    from spark.ratelimit import TokenBucket
    from spark.writer import ManifestItem, write_items

    outcomes: Dict[str, Dict[str, int]] = {}
    winners: Dict[str, int] = {}
    ttl_days, now, write_expired = config["ttl_days"], config["now"], config["write_expired"]

    def items() -> Iterator[ManifestItem]:
        for (event_id, fingerprint), copies in keys:
            winner, settled = ev.settle(copies, ttl_days, now, write_expired)
            for run, outcome, n in settled:
                row = outcomes.setdefault(run, {})
                row[outcome] = row.get(outcome, 0) + n
            if winner is not None:
                etl, run = winner
                winners[run] = winners.get(run, 0) + 1
                yield ManifestItem(event_id, fingerprint, etl, ev.ttl_for(etl, ttl_days), run)

    pending = items()
    error = None
    try:
        client = _client("dynamodb", config["endpoints"], config["region"], config["credentials"])
        written = write_items(pending, client=client, table=config["table"], mode=config["mode"],
                              limiter=TokenBucket(config["rate"]), max_retry_seconds=config["max_retry_seconds"],
                              concurrency=config["threads"])
    except Exception as e:  # noqa: BLE001 - the partition's runs fail with this line; nothing is counted twice
        error = _one_line(e)
        for _ in pending:  # settle the keys not reached yet, so every copy is still counted once
            pass
        written = {run: {"write_failures": n} for run, n in winners.items()}
    for run, row in written.items():
        target = outcomes.setdefault(run, {})
        for name in ("written", "already_present", "write_failures", "throttle_retries", "wcu_consumed"):
            if row.get(name):
                target[name] = target.get(name, 0) + row[name]
    yield {"outcomes": outcomes, "error": error}


# --- import: staging the final items for DynamoDB's ImportTable ---------------------------------------------

def _import_pass(sc, parsed, states: List[RunState], spec: BatchSpec, credentials: Optional[dict],
                 now: float) -> None:
    """Collapse the ok runs' events by key across the whole batch and stage each partition's winners as one
    gzip object of DynamoDB JSON lines: the earliest (etlTime, run) of a key is its item, as a write would leave."""
    acting = {i: s for i, s in enumerate(states) if s.ok and s.valid}
    partitions = spec.write_parallelism or sc.defaultParallelism
    config = {"ttl_days": spec.ttl_days, "now": now, "write_expired": spec.write_expired, "staging": spec.staging,
              "endpoints": _endpoints()}
    results = (_copies_by_key(parsed, acting, spec, partitions)
               .mapPartitionsWithIndex(lambda index, keys: _stage_partition(index, keys, config)))
    _collect_outcomes(results, acting, spec, "staging", "write_failures", "staged")


def import_line(event_id: str, fingerprint: str, etl_time: int, ttl: int) -> bytes:
    """One item as ImportTable's DYNAMODB_JSON input format reads it: {"Item": {...}} on a line."""
    item = {"eventId": {"S": event_id}, "fingerprint": {"S": fingerprint}, "etlTime": {"N": str(etl_time)},
            "ttl": {"N": str(ttl)}}
    return json.dumps({"Item": item}, separators=(",", ":")).encode("utf-8") + b"\n"


def _stage_partition(index: int, keys: Iterator, config: dict) -> Iterator[dict]:
    """Settle one partition's keys and write its winners to <staging>/part-<index>.json.gz (none when empty).

    The object's name depends only on the partition, so a retried task replaces its own object.
    """
    import gzip
    import io

    ttl_days = config["ttl_days"]

    def winner_only(copies) -> tuple:
        winner, settled = ev.settle(copies, ttl_days, config["now"], config["write_expired"])
        return ([winner] if winner is not None else []), settled

    def stage(targets: Iterator) -> Dict[str, Dict[str, int]]:
        staged: Dict[str, int] = {}
        buffer = io.BytesIO()
        with gzip.GzipFile(fileobj=buffer, mode="wb", mtime=0) as out:
            for event_id, fingerprint, ((etl, run),) in targets:
                staged[run] = staged.get(run, 0) + 1
                out.write(import_line(event_id, fingerprint, etl, ev.ttl_for(etl, ttl_days)))
        if staged:
            target = parse_location(config["staging"]).child(f"part-{index:05d}.json.gz")
            write_bytes(target, buffer.getvalue(), _client("s3", config["endpoints"]) if target.is_s3 else None)
        return {run: {"written": n} for run, n in staged.items()}

    yield _settle_and_act(keys, winner_only, stage, "write_failures")


# --- reports ------------------------------------------------------------------------------------------------

def _finish_report(s: RunState, read_s: float, write_s: float) -> None:
    report, counts = s.report, s.report["counts"]
    mode = report["mode"]
    outcomes = MODE_OUTCOMES[mode]
    counts.setdefault("rcu_consumed" if mode == "verify" else "wcu_consumed", 0)
    report["valid_events"] = s.valid
    report["timings"] = {"read_s": round(read_s, 3), _ACTION_TIMING[mode]: round(write_s, 3)}
    settled = sum(counts[k] for k in outcomes) - counts["no_fingerprint"]
    if not s.ok and not report["count_only"] and settled != s.valid:
        # A failed run owes all its valid events: whatever part of them was settled is reported as not written
        # (not cleaned, not checked).
        for k in outcomes:
            if k != "no_fingerprint":
                counts[k] = 0
        counts[MODE_FAILURES[mode][1]] = s.valid
    if not counts_add_up(counts, mode):  # a bug, not an input problem: say so rather than mark the run
        s.fail("internal error: the run's counts do not add up")
    summary = ", ".join(f"{k}={counts[k]}" for k in outcomes if counts[k])
    malformed = sum(counts["malformed"].values())
    LOG.info("run %s: %s; lines=%d, malformed=%d%s%s", s.run, report["status"], counts["lines"], malformed,
             f", {summary}" if summary else "", f"; {report['errors'][0]}" if report["errors"] else "")


def _save_report(reports: Location, s: RunState) -> bool:
    """Write one run's report; a failure is logged and leaves the run unmarked, the other reports still go."""
    target = reports.child(f"run={s.run}.json")
    try:
        write_bytes(target, dumps(s.report).encode("utf-8"))
        return True
    except Exception as e:  # noqa: BLE001
        LOG.error("run %s: cannot write its report to %s: %s", s.run, target.uri, _one_line(e))
        return False


_PASSES = {"populate": _write_pass, "clean": _clean_pass, "verify": _verify_pass, "import": _import_pass}
_ACTION_TIMING = {"populate": "write_s", "clean": "delete_s", "verify": "check_s", "import": "stage_s"}
_ACTION_PHASES = {"populate": "writing", "clean": "deleting", "verify": "checking", "import": "staging"}


# --- errors -------------------------------------------------------------------------------------------------

_PY_ERROR = re.compile(r"^([A-Za-z_][\w.]*(?:Error|Exception)): (.+)$")


def _one_line(e: BaseException) -> str:
    return " ".join(f"{type(e).__name__}: {e}".split())[:500]


def _spark_error(e: BaseException) -> str:
    """The Python error inside a Spark failure (the last 'XxxError: message' line), else its first line."""
    text = str(e)
    found = [m.group(0) for m in map(_PY_ERROR.match, text.splitlines()) if m]
    line = found[-1] if found else (text.strip().splitlines() or [type(e).__name__])[0]
    return " ".join(line.split())[:500]


if __name__ == "__main__":
    sys.exit(main())
