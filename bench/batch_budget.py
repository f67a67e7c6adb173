"""Budget use within one batch: the real job writing one batch of runs through the capacity-enforcing stand-in.

The job is spark.job.run_batch on a local SparkSession (local[*], as the pipeline's local runner starts it), in fast
mode, on a generated archive of every file kind with in-run and cross-run duplicates, bad lines and a stream-enrich
run, into a fresh table behind bench.dynamo_endpoint (its own process) at a low budget with a per-request latency.
The budget is low on purpose: there one write request is a large share of a writing task's budget, so how the tasks
pace and share it shows. Budget use is the stand-in's count: WCU accepted / (budget x seconds from the first
accepted write to the last); the stand-in saves up one second of capacity, so a batch that asks for more than the
budget is throttled, and a pause or a tail on fewer tasks shows as use below 1.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from datetime import datetime, timedelta, timezone
from typing import List, Optional, Tuple

from pyspark.sql import SparkSession

from bench import servers
from bench.archive import generate_archive
from bench.dynamo_endpoint import fetch_stats, reset_stats
from bench.e2e_report import budget_use, idle_seconds
from bench.event_lines import run_ids
from bench.write_events import BENCH_CREDENTIALS, REGION, create_table, missing_and_wrong, session, table_etl_times
from spark.job import run_batch
from spark.spec import BatchSpec

TARGET_USE = 0.95
TABLE = "bench-batch-budget"


@dataclass(frozen=True)
class Config:
    runs: int = 9
    events_per_run: int = 300  # with the fractions below: 2,433 unique items in 9 runs
    budget: float = 40.0  # WCU/s: the spec's max_write_capacity and the stand-in's capacity
    latency_ms: float = 10.0
    duplicate_fraction: float = 0.05
    cross_run_duplicates: float = 0.04
    seed: int = 3


DEFAULTS = {"full": Config(), "quick": Config(events_per_run=120)}


@dataclass
class Result:
    config: Config
    expected: int  # unique items a correct backfill leaves
    exit_code: int  # run_batch's: 0 when every run is ok
    job_s: float
    first_write_s: float  # from the job's start to its first accepted write
    window_s: float  # first to last accepted write
    consumed_wcu: int
    accepted_items: int
    throttled_requests: int
    idle_seconds: int
    peak_second: int
    missing: int
    wrong_etl: int

    @property
    def use(self) -> float:
        return budget_use(self.consumed_wcu, self.config.budget, 0.0, self.window_s) or 0.0

    @property
    def within_budget(self) -> bool:
        """No more than the budget over the window plus the one second of capacity the table saves up."""
        return self.consumed_wcu <= self.config.budget * (self.window_s + 1.0)


def local_spark():
    """A SparkSession as the pipeline's local runner gets one (local[*]), without the web UI."""
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    spark = (SparkSession.builder.master("local[*]").appName("bench-batch-budget")
             .config("spark.ui.enabled", "false").config("spark.ui.showConsoleProgress", "false").getOrCreate())
    spark.sparkContext.setLogLevel("WARN")
    return spark


def run(config: Config, spark: Optional[SparkSession] = None) -> Result:
    """Generate the archive, start moto and the stand-in, run the batch, and read back what the table holds; on
    `spark` when given (left running), else on a local session of its own."""
    with tempfile.TemporaryDirectory(prefix="bench-batch-budget-") as work:
        start = datetime.now(timezone.utc).replace(minute=0, second=0, microsecond=0) - timedelta(hours=24)
        runs = run_ids(start, config.runs)
        archive = os.path.join(work, "archive")
        truth = generate_archive(archive, runs, config.events_per_run, duplicate_fraction=config.duplicate_fraction,
                                 cross_run_duplicates=config.cross_run_duplicates, malformed_fraction=0.005,
                                 no_fingerprint_fraction=0.005, stream_enrich_runs=1, seed=config.seed)
        expected = truth.expected_manifest()
        credentials = os.path.join(work, "credentials.json")
        with open(credentials, "w", encoding="utf-8") as f:
            json.dump(BENCH_CREDENTIALS, f)
        spec = BatchSpec(batch_id="bench-batch-budget", archive=archive, runs=runs,
                         reports=os.path.join(work, "reports"), table=TABLE, region=REGION, credentials=credentials,
                         write_mode="fast", max_write_capacity=config.budget)
        moto, moto_url = servers.start_moto_server()
        procs = [moto]
        old = os.environ.get("AWS_ENDPOINT_URL_DYNAMODB")
        try:
            stand_in, url = servers.start_url_printer([sys.executable, "-m", "bench.dynamo_endpoint", "--upstream",
                                                       moto_url, "--wcu", str(config.budget)])
            procs.append(stand_in)
            moto_client = session().client("dynamodb", endpoint_url=moto_url)
            create_table(moto_client, TABLE)
            os.environ["AWS_ENDPOINT_URL_DYNAMODB"] = url
            session_used = spark or local_spark()
            try:
                reset_stats(url, wcu=config.budget, latency_ms=config.latency_ms)
                started = time.time()
                code = run_batch(session_used, spec)
                job_s = time.time() - started
            finally:
                if spark is None:
                    session_used.stop()
            stats = fetch_stats(url)
            present = table_etl_times(moto_client, TABLE)
        finally:
            if old is None:
                os.environ.pop("AWS_ENDPOINT_URL_DYNAMODB", None)
            else:
                os.environ["AWS_ENDPOINT_URL_DYNAMODB"] = old
            for proc in reversed(procs):
                servers.stop(proc)
    first, last = stats["first_write_at"], stats["last_write_at"]
    missing, wrong = missing_and_wrong([(e, f, etl) for (e, f), etl in expected.items()], present)
    return Result(config, len(expected), code, job_s, (first or started) - started,
                  (last - first) if first is not None else 0.0, stats["consumed_wcu"], stats["accepted_items"],
                  stats["throttled_requests"], idle_seconds(stats["per_second"]), max(stats["per_second"], default=0),
                  missing, wrong)


def table(r: Result) -> str:
    c = r.config
    return "\n".join([
        "| runs | unique items | budget WCU/s | job s | first write after s | first → last write s | WCU consumed | "
        "budget use | idle s between | peak second WCU | throttled requests | lost (missing + later etlTime) |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        f"| {c.runs} | {r.expected:,} | {c.budget:g} | {r.job_s:.1f} | {r.first_write_s:.1f} | {r.window_s:.1f} | "
        f"{r.consumed_wcu:,} | {r.use:.3f} | {r.idle_seconds} | {r.peak_second} | {r.throttled_requests} | "
        f"{r.missing + r.wrong_etl} ({r.missing} + {r.wrong_etl}) |",
    ])


def describe(r: Result) -> str:
    c = r.config
    return (f"spark.job.run_batch on local[*], fast mode, one batch of {c.runs} runs x {c.events_per_run} lines "
            f"(bench.archive: every file kind, {c.duplicate_fraction:.0%} in-run and {c.cross_run_duplicates:.0%} "
            "cross-run duplicates, bad lines, one stream-enrich run, seed "
            f"{c.seed}) into a fresh table behind the stand-in at {c.budget:g} WCU/s and {c.latency_ms:g} ms per "
            "request. Budget use: WCU accepted / (budget x seconds from the first accepted write to the last), as "
            "the stand-in counts them; idle seconds are whole seconds without an accepted write in between.")


def verdicts(r: Result) -> List[Tuple[str, bool]]:
    return [
        (f"one batch: budget use >= {TARGET_USE} (accepted WCU over first-to-last write): {r.use:.3f}",
         r.use >= TARGET_USE),
        (f"one batch: never above the budget (at most one second's saved-up capacity over the window) and "
         f"0 throttled: {r.consumed_wcu:,} WCU in {r.window_s:.1f} s, {r.throttled_requests} throttled",
         r.within_budget and r.throttled_requests == 0),
        (f"one batch: 0 lost, every run ok: {r.missing + r.wrong_etl} lost, exit code {r.exit_code}",
         r.missing + r.wrong_etl == 0 and r.exit_code == 0 and r.accepted_items == r.expected),
    ]


def markdown(r: Result) -> str:
    return "\n\n".join([table(r), describe(r)])


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.batch_budget", description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="fewer events per run (about 40 s)")
    p.add_argument("--budget", type=float, help="WCU/s of the batch and the stand-in (default 40)")
    p.add_argument("--check", action="store_true", help="exit 1 when a target is missed")
    a = p.parse_args(argv)
    config = DEFAULTS["quick" if a.quick else "full"]
    if a.budget is not None:
        config = replace(config, budget=a.budget)
    result = run(config)
    print(markdown(result))
    print()
    checks = verdicts(result)
    for text, ok in checks:
        print(f"- {'PASS' if ok else 'MISS'}: {text}")
    return 0 if not a.check or all(ok for _, ok in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
