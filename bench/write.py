"""Write benchmark: both write modes and the original populator's strategy, side by side, against one stand-in.

A moto server holds the tables; the capacity-enforcing stand-in (bench.dynamo_endpoint, in its own process so its
CPU is not charged to the client) sits in front of it with a WCU/s capacity and a per-request latency. Each
strategy writes the same seeded events into its own fresh table, then writes them all again:
- conditional / fast: spark.writer.write_items, duplicates collapsed first (as the job does), one TokenBucket whose
  rate is the capacity, the job's thread count;
- original: what Snowplow's populator did, one synchronous boto3 put_item per event with the shredder's condition
  and boto3's default client (its default retries), in as many processes as there are cores, duplicates included,
  no rate limit and no batching.
Client CPU is time.process_time of the writing process(es) over the writing alone, each measurement started
after a full garbage collection; WCU and throttling are the stand-in's own counts; lost items come from scanning
the table afterwards. Capacities are chosen so that the budget, not moto (~130 conditional puts/s here), is what
limits: see DEFAULTS (bench.write_config). Here a run is put together; the events and tables are in
bench.write_events, the strategies in bench.write_strategies and the tables and verdicts in bench.write_report.
"""
from __future__ import annotations

import argparse
import itertools
import os
import subprocess
import sys
from dataclasses import replace
from typing import List, Optional, Sequence, Tuple

from bench import servers
from bench.dynamo_endpoint import fetch_stats, reset_stats
from bench.write_config import DEFAULTS, STRATEGIES, Config, Setup
from bench.write_events import collapse, create_table, make_events, missing_and_wrong, session, table_etl_times
from bench.write_report import Report, Result, markdown, verdicts
from bench.write_strategies import cpu_round, fast_cpu_round, write_like_original, write_with_items


def run_strategy(strategy: str, setup: Setup, config: Config, url: str, moto) -> Result:
    """A fresh table; the write with fresh stand-in counts, a scan of the table, then the same write again."""
    events = make_events(setup.items, config.duplicates, config.runs, config.seed)
    unique = collapse(events)
    offered = events if strategy == "original" else unique
    table = f"bench-{strategy}"
    create_table(moto, table)
    stats: List[dict] = []  # the stand-in's counts of each finished pass
    scanned: List[Tuple[int, int]] = []  # missing and wrong items after the fresh write

    finished = itertools.count()  # passes finished at each checkpoint

    def checkpoint() -> None:
        """Before each pass and after the last: record the finished pass, then fresh counts and a full bucket."""
        done = next(finished)
        if done:
            stats.append(fetch_stats(url))
        if done == 1:
            scanned.append(missing_and_wrong(unique, table_etl_times(moto, table)))
        reset_stats(url, wcu=setup.capacity, latency_ms=config.latency_ms)

    if strategy == "original":
        passes = write_like_original(offered, url, table, config.tasks, checkpoint)
    else:
        passes = write_with_items(offered, strategy, url, table, setup.capacity, config.threads, checkpoint)
    (wall, cpu, failed), (rerun_wall, _, _) = passes
    fresh, again = stats
    (missing, wrong), = scanned
    return Result(strategy, setup.capacity, len(offered), len(unique), wall, cpu, fresh["consumed_wcu"],
                  fresh["throttled_requests"], max(fresh["per_second"], default=0), missing, wrong, failed,
                  again["consumed_wcu"], rerun_wall)


# --- the run ------------------------------------------------------------------------------------------------

def start_stand_in(moto_url: str, seed: int) -> Tuple[subprocess.Popen, str]:
    """bench.dynamo_endpoint in a process of its own; (process, url) once it has printed its url."""
    proc = subprocess.Popen([sys.executable, "-m", "bench.dynamo_endpoint", "--upstream", moto_url, "--wcu", "1000",
                             "--seed", str(seed)], stdout=subprocess.PIPE, text=True,
                            cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    line = proc.stdout.readline().strip()
    if not line.startswith("http://"):
        proc.kill()
        raise RuntimeError(f"the DynamoDB stand-in did not start (exit code {proc.poll()})")
    return proc, line


def run(config: Config, strategies: Sequence[str] = STRATEGIES, moto_url: Optional[str] = None) -> Report:
    """Everything on a moto server of its own (or on `moto_url`, whose tables named bench-* must not exist)."""
    own_moto = None
    if moto_url is None:
        own_moto, moto_url = servers.start_moto_server()
    stand_in = None
    try:
        stand_in, url = start_stand_in(moto_url, config.seed)
        moto = session().client("dynamodb", endpoint_url=moto_url)
        create_table(moto, "bench-cpu")
        reset_stats(url, wcu=1e9, latency_ms=config.latency_ms)
        rounds = [cpu_round(url, "bench-cpu", config, 1000 * config.seed + 5 * i) for i in range(config.cpu_rounds)]
        fast_rounds = []
        if "fast" in strategies:
            pair = ("bench-cpu-boto3", "bench-cpu-fast")
            for name in pair:
                create_table(moto, name)
            fast_rounds = [fast_cpu_round(url, pair, config, 1000 * config.seed + 500 + 2 * i, fast_first=i % 2 == 1)
                           for i in range(config.cpu_rounds)]
        results = [run_strategy(s, getattr(config, s), config, url, moto) for s in strategies]
    finally:
        if stand_in is not None:
            servers.stop(stand_in)
        if own_moto is not None:
            servers.stop(own_moto)
    return Report(config, results, rounds, fast_rounds)


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.write", description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="smaller sizes (about a minute)")
    p.add_argument("--only", choices=STRATEGIES, action="append", help="run only this strategy (repeatable)")
    p.add_argument("--seed", type=int, help="seed of the events (default 1)")
    p.add_argument("--latency-ms", type=float, help="stand-in latency per request (default 5)")
    p.add_argument("--check", action="store_true", help="exit 1 when a target is missed")
    a = p.parse_args(argv)
    config = DEFAULTS["quick" if a.quick else "full"]
    if a.seed is not None:
        config = replace(config, seed=a.seed)
    if a.latency_ms is not None:
        config = replace(config, latency_ms=a.latency_ms)
    report = run(config, a.only or STRATEGIES)
    print(markdown(report))
    return 0 if not a.check or all(ok for _, ok in verdicts(report)) else 1


if __name__ == "__main__":
    sys.exit(main())
