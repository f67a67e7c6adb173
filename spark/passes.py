"""The action pass: the acting runs' keys, collapsed across the batch, settled and acted on in P partitions.

One driver for the four modes of the job (spec.JOB_MODES), a row of MODES each. Every partition goes through
`settle_and_act`: each key's copies are split into targets and settled outcomes, and the mode's action takes the
targets (populate writes the winner, clean deletes and verify checks every run's copy, import stages the winner).
A budget is shared by the P partitions, each taking 1/P of it; so is Spark's work, which the driver sees only as
per-run outcome counts returned by an action. An error in a partition fails every acting run: which keys it left
undone is unknown.
"""
from __future__ import annotations

import gzip
import io
from dataclasses import dataclass, field
from functools import partial
from typing import Callable, Dict, Iterator, List, Optional

from spark import events as ev
from spark import maintenance as mt
from spark.clients import endpoints, task_client
from spark.errors import spark_error_line
from spark.manifest import ManifestItem, import_line
from spark.ratelimit import TokenBucket
from spark.reading import copies_by_key
from spark.refusals import DEFAULT_CHAIN, told
from spark.report import MODE_FAILURES, merge_examples
from spark.runstate import RunState, acting
from spark.spec import BatchSpec
from spark.storage import parse_location, write_bytes
from spark.writer import write_items

WRITE_THREADS = 8  # DynamoDB requests in flight per acting task (spec.extra["write_threads"] overrides)
Outcomes = Dict[str, Dict[str, int]]  # per run, outcome -> count


@dataclass(frozen=True)
class PassConfig:
    """What every partition of a pass is given (pickled into its tasks): never more than its mode needs."""

    ttl_days: int
    now: float
    write_expired: bool
    endpoints: Dict[str, str]
    table: str = ""
    region: str = ""
    credentials: Optional[dict] = field(default=None, repr=False)  # never in a log line or a task's repr
    write_mode: str = ""
    rate: float = 0.0  # this partition's share of the budget, per second
    max_retry_seconds: float = 0.0
    threads: int = WRITE_THREADS
    staging: str = ""
    identities: Dict[str, str] = field(default_factory=dict)  # spec.identities: who the requests go as, by service

    def identity(self, service: str) -> str:
        return self.identities.get(service) or DEFAULT_CHAIN


def settle_and_act(keys: Iterator, split: Callable, act: Callable[[Iterator], Outcomes], failures: str) -> dict:
    """Split each key's copies into targets and settled outcomes, and act on the targets (write, delete, check...).

    `split(copies)` gives ([(etlTime, run), ...], [(run, outcome, n), ...]); `act` takes the targets as
    (event_id, fingerprint, [(etlTime, run), ...]) and returns per-run counts. When `act` raises, every target of
    the partition counts as one of `failures` and the error is returned: nothing is counted twice and every copy is
    counted once. The result: {"outcomes": per run counts, "error": one line or None, "refused": whether that
    error is an AWS refusal}.
    """
    outcomes: Outcomes = {}
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
    error, refused = None, False
    try:
        done = act(pending)
    except Exception as e:  # noqa: BLE001 - the partition's runs fail with this line
        error, refused = told(e)
        for _ in pending:  # settle the keys not reached yet
            pass
        done = {run: {failures: n} for run, n in owed.items()}
    for run, row in done.items():
        for name, n in row.items():
            if n:
                add(run, name, n)
    return {"outcomes": outcomes, "error": error, "refused": refused}


def winner_only(config: PassConfig, copies) -> tuple:
    """Populate's and import's split: the key's one item to write (ev.settle), if any."""
    winner, settled = ev.settle(copies, config.ttl_days, config.now, config.write_expired)
    return ([winner] if winner is not None else []), settled


def _table_client(config: PassConfig):
    return task_client("dynamodb", config.endpoints, config.region, config.credentials, config.identity("dynamodb"))


# --- the modes' partitions: (partition index, keys, config) -> one result ------------------------------------

def write_partition(index: int, keys: Iterator, config: PassConfig) -> Iterator[dict]:
    """Populate: write each key's winner, at the partition's share of the WCU budget."""
    def write(targets: Iterator) -> Outcomes:
        items = (ManifestItem(event_id, fingerprint, etl, ev.ttl_for(etl, config.ttl_days), run)
                 for event_id, fingerprint, ((etl, run),) in targets)
        return write_items(items, client=_table_client(config), table=config.table, mode=config.write_mode,
                           limiter=TokenBucket(config.rate), max_retry_seconds=config.max_retry_seconds,
                           concurrency=config.threads)

    yield settle_and_act(keys, partial(winner_only, config), write, "write_failures")


def clean_partition(index: int, keys: Iterator, config: PassConfig) -> Iterator[dict]:
    """Clean: delete what every run of a key wrote, at the partition's share of the WCU budget."""
    def delete(targets: Iterator) -> Outcomes:
        return mt.delete_items(targets, client=_table_client(config), table=config.table,
                               limiter=TokenBucket(config.rate), max_retry_seconds=config.max_retry_seconds,
                               concurrency=config.threads)

    yield settle_and_act(keys, ev.split_copies, delete, "delete_failures")


def verify_partition(index: int, keys: Iterator, config: PassConfig) -> Iterator[dict]:
    """Verify: check every unexpired copy's item, at the partition's share of the RCU budget; examples kept."""
    examples: Dict[str, List[str]] = {}

    def check(targets: Iterator) -> Outcomes:
        result = mt.check_items(targets, client=_table_client(config), table=config.table,
                                read_limiter=TokenBucket(config.rate), max_retry_seconds=config.max_retry_seconds,
                                concurrency=config.threads)
        examples.update(result.examples)
        return result.counts

    split = partial(ev.split_copies, ttl_days=config.ttl_days, now=config.now)
    result = settle_and_act(keys, split, check, "read_failures")
    result["examples"] = examples
    yield result


def stage_partition(index: int, keys: Iterator, config: PassConfig) -> Iterator[dict]:
    """Import: each key's winner as a DynamoDB JSON line, all in <staging>/part-<index>.json.gz (none when empty).

    The object's name depends only on the partition, so a retried task replaces its own object; the earliest
    (etlTime, run) of a key is its item, as a write would leave.
    """
    def stage(targets: Iterator) -> Outcomes:
        staged: Dict[str, int] = {}
        buffer = io.BytesIO()
        with gzip.GzipFile(fileobj=buffer, mode="wb", mtime=0) as out:
            for event_id, fingerprint, ((etl, run),) in targets:
                staged[run] = staged.get(run, 0) + 1
                out.write(import_line(ManifestItem(event_id, fingerprint, etl, ev.ttl_for(etl, config.ttl_days), run)))
        if staged:
            target = parse_location(config.staging).child(f"part-{index:05d}.json.gz")
            client = task_client("s3", config.endpoints, identity=config.identity("s3")) if target.is_s3 else None
            write_bytes(target, buffer.getvalue(), client)
        return {run: {"written": n} for run, n in staged.items()}

    yield settle_and_act(keys, partial(winner_only, config), stage, "write_failures")


@dataclass(frozen=True)
class Mode:
    """One action pass: how it shows, what it spends, what it is called in a run's error, and its partitions."""

    phase: str  # progress: "<phase> ~n of ~m items at <rate> <unit>"
    unit: str
    capacity: str  # the spec's budget for it, per second ('' for none)
    timing: str  # its seconds in a report's timings
    verb: str  # "<verb> failed: <error>"
    past: str  # "n items were not <past> within ..."
    partition: Callable[[int, Iterator, PassConfig], Iterator[dict]]

    @property
    def acts_on_table(self) -> bool:
        return bool(self.capacity)


MODES = {
    "populate": Mode("writing", "WCU/s", "max_write_capacity", "write_s", "writing", "written", write_partition),
    "clean": Mode("deleting", "WCU/s", "max_write_capacity", "delete_s", "deleting", "deleted", clean_partition),
    "verify": Mode("checking", "RCU/s", "max_read_capacity", "check_s", "reading", "read", verify_partition),
    "import": Mode("staging", "", "", "stage_s", "staging", "staged", stage_partition),
}


# --- the driver ---------------------------------------------------------------------------------------------

def pass_config(spec: BatchSpec, credentials: Optional[dict], now: float, partitions: int) -> PassConfig:
    mode = MODES[spec.mode]
    common = dict(ttl_days=spec.ttl_days, now=now, write_expired=spec.write_expired, endpoints=endpoints(),
                  identities=dict(spec.identities))
    if not mode.acts_on_table:
        return PassConfig(staging=spec.staging, **common)
    return PassConfig(table=spec.table, region=spec.region, credentials=credentials, write_mode=spec.write_mode,
                      rate=getattr(spec, mode.capacity) / partitions, max_retry_seconds=spec.max_retry_seconds,
                      threads=int(spec.extra.get("write_threads", WRITE_THREADS)), **common)


def run_pass(sc, parsed, states: List[RunState], spec: BatchSpec, credentials: Optional[dict], now: float) -> None:
    """The spec's mode over the ok runs' events (`parsed`, the read pass's stream), outcomes into their reports."""
    mode = MODES[spec.mode]
    runs = acting(states)
    partitions = spec.write_parallelism or sc.defaultParallelism
    config = pass_config(spec, credentials, now, partitions)
    keys = copies_by_key(parsed, runs, spec.etl_time == "event", partitions)
    if spec.mode == "verify" and spec.sample:
        keys = draw_sample(sc, keys, runs, spec, now, partitions)
        if keys is None:
            return
    results = keys.mapPartitionsWithIndex(partial(mode.partition, config=config))
    collect_outcomes(results, runs, spec, mode)


def draw_sample(sc, keys, runs: Dict[int, RunState], spec: BatchSpec, now: float, partitions: int):
    """Each run's sample as keys of the same shape, its other keys counted (duplicates, expired, not sampled)."""
    k, seed, ttl_days = spec.sample, spec.sample_seed, spec.ttl_days
    try:
        samples = dict(keys.flatMap(lambda kv: mt.sample_entries(kv[0][0], kv[0][1], kv[1], ttl_days, now, seed))
                       .aggregateByKey(mt.empty_sample(), partial(mt.sample_add, k), partial(mt.sample_merge, k),
                                       max(1, min(partitions, len(runs))))
                       .collect())
    except Exception as e:  # noqa: BLE001 - Spark itself failed: no run can be checked
        for s in runs.values():
            s.fail(f"sampling failed: {spark_error_line(e)}")
        return None
    by_run = {s.run: s for s in runs.values()}
    for run, drawn in samples.items():
        counts = by_run[run].report["counts"]
        counts["in_run_duplicates"] += drawn["in_run_duplicates"]
        counts["expired"] += drawn["expired"]
        counts["not_sampled"] += drawn["eligible"] - len(drawn["heap"])
    chosen = sorted(mt.sampled_keys(samples).items())
    return sc.parallelize(chosen, max(1, min(partitions, len(chosen))))


def collect_outcomes(results, runs: Dict[int, RunState], spec: BatchSpec, mode: Mode) -> None:
    """Run the partitions' actions and fold their per-run outcome counts (and examples) into the reports."""
    try:
        collected = results.collect()
    except Exception as e:  # noqa: BLE001 - Spark itself failed: nothing is known of the requests
        for s in runs.values():
            s.fail(f"{mode.verb} failed: {spark_error_line(e)}")
        collected = []
    by_run = {s.run: s for s in runs.values()}
    errors = []
    for result in collected:
        if result["error"]:
            errors.append((result["error"], result.get("refused", False)))
        for run, outcomes in result["outcomes"].items():
            counts = by_run[run].report["counts"]
            for name, n in outcomes.items():
                counts[name] = counts.get(name, 0) + n
        for run, examples in result.get("examples", {}).items():
            report = by_run[run].report
            report["missing_examples"] = merge_examples(report.get("missing_examples", []), examples)
    failures = MODE_FAILURES[spec.mode][0]
    for s in runs.values():
        if not s.ok:
            continue
        counts = s.report["counts"]
        if errors:
            line, refused = min(errors, key=lambda e: not e[1])  # a refusal first: it says what to fix
            s.fail(line if refused else f"{mode.verb} failed: {line}", refused)
        elif counts[failures]:
            s.fail(f"{counts[failures]} items were not {mode.past} within {spec.max_retry_seconds:g} s "
                   "of throttling or errors")
