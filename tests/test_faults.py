"""Faults end to end: the real `luigi` command and spark-submit, with moto behind fault-injecting endpoints.

DynamoDB is reached through the capacity-enforcing stand-in (bench.dynamo_endpoint: half of all writes throttled,
500s, connections dropped after the write), S3 through bench.s3_endpoint (500s, connection resets, object
downloads cut short), and a Python worker is killed while it writes. Whatever happens, nothing may be lost, counted
twice or marked unproven. A spark-submit costs ~25 s here, so the default test combines the faults in one backfill
and its re-run; the slow variants (`make test-slow`) take them one at a time.
"""
from __future__ import annotations

import os
import signal
import subprocess
import time
from contextlib import nullcontext
from typing import Callable, Dict, List, Optional

import boto3
import pytest

from bench import dynamo_endpoint, s3_endpoint
from bench.archive import ArchiveTruth
from pipeline.stores.markers import MarkerStore
from spark.archive import iter_chunks
from spark.report import counts_add_up
from spark.storage import list_objects, parse_location, read_bytes, s3_client
from tests import procs
from tests.cli import (
    ARCHIVE,
    TASK_FAILED,
    create_buckets,
    last_error,
    luigi_env,
    make_archive,
    populate_command,
    storage_config,
    table_items,
)

ARCHIVE_OPTIONS = {"malformed_fraction": 0.005, "no_fingerprint_fraction": 0.02, "stream_enrich_runs": 1}
MARKERS = "s3://ops/markers"
TABLE = "manifest"
RETRYING_MASTER = "local[2,4]"  # 2 threads; a task may fail 3 times and is retried


@pytest.fixture
def started(moto_reset):
    """Servers a test starts, stopped at its end; moto_reset makes moto clean first."""
    servers: List[tuple] = []
    yield servers
    for stop, server in reversed(servers):
        stop(server)


def dynamodb_stand_in(started: list, moto: str, **settings) -> str:
    """The stand-in with capacity to spare: any throttling is the storm's (`throttle_fraction`)."""
    server, url = dynamo_endpoint.start_endpoint(moto, wcu=100_000, seed=7, **settings)
    started.append((dynamo_endpoint.stop, server))
    return url


def s3_stand_in(started: list, moto: str, **settings) -> s3_endpoint.FaultyS3Server:
    server, _ = s3_endpoint.start_endpoint(moto, seed=7, **settings)
    started.append((s3_endpoint.stop, server))
    return server


def backfill_command(tmp_path, *extra: str, master: str = "local[2]") -> List[str]:
    storage = storage_config(tmp_path / "dynamodb.json", TABLE)
    command = populate_command(ARCHIVE, storage, MARKERS, "--create-table", "--batch-size", "10", *extra)
    command[command.index("--spark-master") + 1] = master
    return command


def run_backfill(command: List[str], cwd, env: Dict[str, str], watch: Optional[Callable[[int], None]] = None,
                 timeout: float = 400) -> subprocess.CompletedProcess:
    """The luigi command to its end, with `watch(pid)` called every 0.1 s meanwhile."""
    proc = subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        with procs.polling(lambda: watch(proc.pid), 0.1) if watch else nullcontext():
            out, err = proc.communicate(timeout=timeout)
    except BaseException:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        raise
    return subprocess.CompletedProcess(command, proc.returncode, out, err)


def worker_killer(standin_url: str, killed: List[int], min_writes: int) -> Callable[[int], None]:
    """After `min_writes` write requests reach the stand-in, SIGKILL one Python worker running writer threads.

    Python workers are single-threaded except while spark.writer's threads write (reading is over by then).
    """

    def watch(root: int) -> None:
        if killed:
            return
        requests = dynamo_endpoint.fetch_stats(standin_url)["requests"]
        if requests.get("PutItem", 0) + requests.get("BatchWriteItem", 0) < min_writes:
            return
        writers = [pid for pid in procs.python_workers(root) if procs.thread_count(pid) > 1]
        if writers:
            os.kill(writers[0], signal.SIGKILL)
            killed.append(writers[0])

    return watch


def marked_reports() -> Dict[str, dict]:
    store = MarkerStore(parse_location(MARKERS), TABLE)
    return {run: store.read_marker(run)["report"] for run in store.done_runs()}


def latest_report(run: str) -> dict:
    """The run's report of its most recent batch (the report of a run that is not marked)."""
    store = MarkerStore(parse_location(MARKERS), TABLE)
    found = [o.name for o in list_objects(store.folder.child("_reports"), store.client)
             if o.name.endswith(f"/run={run}.json")]
    assert found, f"no report of run {run}"
    return store.read_json(store.folder.child("_reports", sorted(found)[-1]))


def count_problems(report: dict, truth: ArchiveTruth) -> List[str]:
    """What is wrong with a finished run's counts: they must add up and match what the archive holds."""
    counts, expected = report["counts"], truth.run(report["run"])
    problems = [] if counts_add_up(counts) else ["counts do not add up"]
    for name, got, want in (("lines", counts["lines"], expected.lines),
                            ("malformed", counts["malformed"], expected.malformed),
                            ("no_fingerprint", counts["no_fingerprint"], expected.no_fingerprint)):
        if got != want:
            problems.append(f"{name} {got}, the archive holds {want}")
    return [f"run {report['run']}: {p}" for p in problems]


def expected_table(truth: ArchiveTruth, runs: List[str]):
    return truth.expected_items(now=time.time(), runs=runs)


def written(reports: Dict[str, dict]) -> int:
    """Items the reports count as written: never more than the table holds, or a write was counted twice."""
    return sum(rep["counts"]["written"] for rep in reports.values())


def test_s3_endpoint_faults_are_survived_by_the_readers(started, moto_reset, monkeypatch):
    """The S3 fault endpoint itself, and both readers through it: the archive's (resuming) and read_bytes."""
    create_buckets()
    s3 = boto3.client("s3")
    data = os.urandom(3 << 20)  # several reads of READ_CHUNK: a cut lands mid-stream
    for key in ("enriched/a", "enriched/b"):
        s3.put_object(Bucket="archive", Key=key, Body=data)
    s3.put_object(Bucket="ops", Key="report.json", Body=data[:5000])
    faults = s3_stand_in(started, moto_reset, fault_fraction=0.3, cut_fraction=1.0, prefix="/archive")
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", faults.url)
    client = s3_client()
    for key in ("enriched/a", "enriched/b"):
        assert client.head_object(Bucket="archive", Key=key)["ContentLength"] == len(data)
        assert b"".join(iter_chunks(parse_location(f"s3://archive/{key}"), client)) == data
    assert faults.counts["cut"] == 2 and faults.counts["500"] + faults.counts["reset"] > 0, faults.counts
    injected = {k: v for k, v in faults.counts.items() if k != "requests"}
    for _ in range(10):  # outside the prefix nothing is injected
        assert read_bytes(parse_location("s3://ops/report.json"), client) == data[:5000]
    assert {k: v for k, v in faults.counts.items() if k != "requests"} == injected

    everywhere = s3_stand_in(started, moto_reset, fault_fraction=0.3, cut_fraction=1.0)
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", everywhere.url)
    assert read_bytes(parse_location("s3://ops/report.json"), s3_client()) == data[:5000]
    assert everywhere.counts["cut"] == 1, everywhere.counts


def test_throttling_faults_glacier_and_a_killed_worker_then_rerun_after_restore(started, moto_reset, tmp_path):
    """One backfill under every fault at once; the GLACIER run is restored and a re-run finishes it."""
    runs, truth = make_archive(4, 50, seed=29, **ARCHIVE_OPTIONS)
    blocked = runs[1]
    glacier_key = f"enriched/{truth.run(blocked).objects[0]}"
    s3 = boto3.client("s3")
    s3.copy_object(Bucket="archive", Key=glacier_key, CopySource={"Bucket": "archive", "Key": glacier_key},
                   StorageClass="GLACIER")
    dynamodb_url = dynamodb_stand_in(started, moto_reset, throttle_fraction=0.5, fault_fraction=0.1)
    s3_faults = s3_stand_in(started, moto_reset, fault_fraction=0.15, cut_fraction=0.5)
    env = luigi_env(moto_reset, {"AWS_ENDPOINT_URL_DYNAMODB": dynamodb_url, "AWS_ENDPOINT_URL_S3": s3_faults.url})
    # Conditional mode: per-item retries get through a storm quickly (fast mode's is a slow variant below).
    command = backfill_command(tmp_path, "--write-mode", "conditional", "--max-write-capacity", "1000",
                               master=RETRYING_MASTER)
    killed: List[int] = []

    first = run_backfill(command, tmp_path, env, worker_killer(dynamodb_url, killed, min_writes=40))

    log = first.stderr
    assert first.returncode == TASK_FAILED, f"exit {first.returncode}, expected {TASK_FAILED}:\n{log[-3000:]}"
    last = last_error(first)
    assert last.startswith("ERROR: ") and f"run {blocked}" in last and f"s3://archive/{glacier_key}" in last, \
        f"the last line must name the GLACIER object: {last}"
    assert killed, "no Python worker was found writing, so none was killed"
    assert "Lost task" in log, "Spark never reported the killed task, so it was not retried"
    reports = marked_reports()
    assert set(reports) == set(runs) - {blocked}, "every run but the GLACIER one must be marked"
    good = [r for r in runs if r != blocked]
    items = table_items(TABLE)
    assert items == expected_table(truth, good), "the table differs from the archive's finished runs"
    # Dropped answers and the killed task's writes come back as already present, never as written twice.
    assert written(reports) <= len(items), f"{written(reports)} items counted as written, the table holds {len(items)}"
    problems = [p for r in good for p in count_problems(reports[r], truth)]
    assert not problems, problems
    assert sum(rep["counts"]["throttle_retries"] for rep in reports.values()) > 0, "no report counts a throttle retry"
    failed = latest_report(blocked)
    assert failed["status"] == "failed" and "GLACIER" in failed["errors"][0] and glacier_key in failed["errors"][0]
    assert counts_add_up(failed["counts"]), "the blocked run's counts do not add up"
    stats = dynamo_endpoint.fetch_stats(dynamodb_url)
    assert stats["throttled_items"] > 0 and stats["faults"]["500"] > 0 and stats["faults"]["drop"] > 0, stats
    assert s3_faults.counts["500"] + s3_faults.counts["reset"] > 0 and s3_faults.counts["cut"] > 0, s3_faults.counts

    s3.restore_object(Bucket="archive", Key=glacier_key, RestoreRequest={"Days": 1})
    second = run_backfill(command, tmp_path, env)

    assert second.returncode == 0, second.stderr[-3000:]
    reports = marked_reports()
    assert set(reports) == set(runs), "the restored run must be marked by the re-run"
    assert table_items(TABLE) == expected_table(truth, runs), "the table differs from the whole archive"
    assert not count_problems(reports[blocked], truth), count_problems(reports[blocked], truth)
    assert reports[blocked]["counts"]["throttle_retries"] > 0, "the re-run met no throttling"


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["conditional", "fast"])
def test_throttling_storm_loses_nothing(started, moto_reset, tmp_path, mode):
    """Half of all writes (and in fast mode half of all key reads) throttled; S3 straight to moto."""
    runs, truth = make_archive(4, 200, seed=31, **ARCHIVE_OPTIONS)
    reads = {"read_throttle_fraction": 0.5} if mode == "fast" else {}
    dynamodb_url = dynamodb_stand_in(started, moto_reset, throttle_fraction=0.5, **reads)
    env = luigi_env(moto_reset, {"AWS_ENDPOINT_URL_DYNAMODB": dynamodb_url})
    proc = run_backfill(backfill_command(tmp_path, "--write-mode", mode, "--max-write-capacity", "400"), tmp_path, env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    reports = marked_reports()
    assert set(reports) == set(runs)
    items = table_items(TABLE)
    assert items == expected_table(truth, runs)
    assert written(reports) == len(items), "without faults every item is counted written exactly once"
    problems = [p for rep in reports.values() for p in count_problems(rep, truth)]
    assert not problems, problems
    assert sum(rep["counts"]["throttle_retries"] for rep in reports.values()) > 0
    assert dynamo_endpoint.fetch_stats(dynamodb_url)["throttled_items"] > 0


@pytest.mark.slow
def test_transient_s3_and_dynamodb_errors_are_retried(started, moto_reset, tmp_path):
    """A fifth of all DynamoDB and S3 requests fail (500, reset, dropped); every object's first download is cut short,
    the pipeline's markers and reports included."""
    runs, truth = make_archive(4, 200, seed=37, **ARCHIVE_OPTIONS)
    dynamodb_url = dynamodb_stand_in(started, moto_reset, fault_fraction=0.2)
    s3_faults = s3_stand_in(started, moto_reset, fault_fraction=0.2, cut_fraction=1.0)
    env = luigi_env(moto_reset, {"AWS_ENDPOINT_URL_DYNAMODB": dynamodb_url, "AWS_ENDPOINT_URL_S3": s3_faults.url})
    proc = run_backfill(backfill_command(tmp_path, "--max-write-capacity", "400"), tmp_path, env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    reports = marked_reports()
    assert set(reports) == set(runs)
    assert table_items(TABLE) == expected_table(truth, runs)
    problems = [p for rep in reports.values() for p in count_problems(rep, truth)]
    assert not problems, problems  # a resumed download read twice would count its lines twice
    faults = dynamo_endpoint.fetch_stats(dynamodb_url)["faults"]
    assert faults["500"] > 0 and faults["drop"] > 0, faults
    assert min(s3_faults.counts[k] for k in ("500", "reset", "cut")) > 0, s3_faults.counts


@pytest.mark.slow
def test_worker_killed_mid_write_in_fast_mode(started, moto_reset, tmp_path):
    """Fast mode writes without conditions: the retried task must read back what the killed one wrote."""
    runs, truth = make_archive(4, 200, seed=41, **ARCHIVE_OPTIONS)
    dynamodb_url = dynamodb_stand_in(started, moto_reset, latency_ms=20)
    env = luigi_env(moto_reset, {"AWS_ENDPOINT_URL_DYNAMODB": dynamodb_url})
    command = backfill_command(tmp_path, "--write-mode", "fast", "--max-write-capacity", "150",
                               master=RETRYING_MASTER)
    killed: List[int] = []
    proc = run_backfill(command, tmp_path, env, worker_killer(dynamodb_url, killed, min_writes=3))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert killed and "Lost task" in proc.stderr, "no writing worker was killed, or Spark did not retry its task"
    reports = marked_reports()
    assert set(reports) == set(runs)
    items = table_items(TABLE)
    assert items == expected_table(truth, runs)
    assert written(reports) <= len(items), "an item written by the killed task was counted again"
    problems = [p for rep in reports.values() for p in count_problems(rep, truth)]
    assert not problems, problems
    assert sum(rep["counts"]["already_present"] for rep in reports.values()) > 0, "the retry found nothing written"
