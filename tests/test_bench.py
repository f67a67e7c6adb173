"""The write benchmark at toy sizes: its events, its bookkeeping, and one real run of every strategy through the
stand-in (correctness of the figures, not their speed: speed targets live in bench/RESULTS.md)."""
from __future__ import annotations

import re

import pytest

from bench import batch_budget
from bench.archive_objects import big_object
from bench.write import run
from bench.write_config import Config, Setup
from bench.write_events import collapse, make_events, missing_and_wrong
from bench.write_report import markdown, verdicts
from spark.events import LineTally, scan_lines


def test_events_are_seeded_with_the_requested_share_of_later_or_equal_copies():
    events = make_events(1000, 0.05, 4, seed=7)
    assert events == make_events(1000, 0.05, 4, seed=7)
    assert events != make_events(1000, 0.05, 4, seed=8)
    unique = collapse(events)
    assert len(events) == 1050 and len(unique) == 1000
    first = {}
    for event_id, fingerprint, etl, _run in events:
        first.setdefault((event_id, fingerprint), etl)
        assert etl >= first[(event_id, fingerprint)]  # copies come in the same or a later run
    assert all(len(e[0]) == 36 and e[0][14] == "4" and len(e[1]) == 32 for e in unique)


def test_collapse_keeps_the_earliest_copy_and_lost_items_count_absent_and_later_ones():
    early, late, other = ("a", "f", 10, "r1"), ("a", "f", 20, "r2"), ("b", "f", 10, "r1")
    assert collapse([late, other, early]) == [early, other]
    assert missing_and_wrong([early, other], {("a", "f"): 20}) == (1, 1)
    assert missing_and_wrong([early, other], {("a", "f"): 10, ("b", "f"): 10}) == (0, 0)


def test_every_strategy_reports_its_figures_from_one_real_run(moto_reset):
    config = Config(conditional=Setup(400, 30), fast=Setup(4000, 200), original=Setup(20, 30), duplicates=0.1,
                    latency_ms=1.0, threads=4, tasks=2, cpu_rounds=1, cpu_calls=10, fast_cpu_items=60, seed=3)
    report = run(config, moto_url=moto_reset)
    by = {r.strategy: r for r in report.results}
    assert set(by) == {"conditional", "fast", "original"}
    for mode, n in (("conditional", 30), ("fast", 200)):
        r = by[mode]
        assert (r.events, r.unique, r.lost, r.failed) == (n, n, 0, 0)
        assert r.consumed_wcu == n and r.wcu_per_item == 1.0  # ~110-byte items: one unit each
        assert r.cpu_ms_per_item > 0 and r.wall > 0
    assert by["conditional"].rerun_wcu == 30  # a failed condition costs its unit all the same
    assert by["fast"].rerun_wcu == 0
    original = by["original"]
    assert (original.events, original.unique) == (33, 30)  # duplicates written as they come
    assert original.consumed_wcu == 33 and original.wcu_per_item == 1.1
    assert original.throttled_requests > 0  # two unlimited tasks against 20 WCU/s
    assert original.rerun_wcu == 33
    assert len(report.cpu_rounds) == 1 and len(report.cpu_rounds[0]) == 5 and all(ms > 0 for ms in report.cpu_rounds[0])
    judged = [text for text, _ in verdicts(report) if "boto3's own per call" in text]
    assert len(judged) == 2 and "back to back (medians)" in judged[0] and "paced (medians)" in judged[1]
    assert len(report.fast_cpu_rounds) == 1 and len(report.fast_cpu_rounds[0]) == 4
    assert all(ms > 0 for ms in report.fast_cpu_rounds[0])
    batch = [text for text, _ in verdicts(report) if "boto3 batch_write_item" in text]
    assert len(batch) == 2 and re.fullmatch(r"fast: client CPU per item vs boto3 batch_write_item per item "
                                            r"\(medians\): \d+\.\d{3} vs \d+\.\d{3} ms", batch[0])
    rows = [line.split(" | ")[0] for line in markdown(report).splitlines() if line.startswith("| ")]
    assert rows == ["| strategy", "| conditional", "| fast", "| original", "| round", "| 1", "| **median**",
                    "| round", "| 1", "| **median**"]
    assert ("fast: re-run consumes no WCU: 0", True) in verdicts(report)


def test_extraction_runs_every_method_each_round_and_pairs_their_ratios(tmp_path):
    from bench.extract import Measurement, in_rounds, job_parse

    gz = big_object(str(tmp_path / "part.gz"), 300, gzip=True, seed=1)
    order = []
    cases = [("a", "gzip", gz, lambda: order.append("a") or gz.events, "events"),
             ("job", "gzip", gz, lambda: order.append("job") or job_parse(gz.path), "events")]
    a, job = in_rounds(3, cases)
    assert order == ["a", "job"] * 3 and len(a.rounds) == len(job.rounds) == 3 and job.cpu == min(job.rounds)
    base = Measurement("zlib", "gzip", 10, 10, 1.0, 1.0, [1.0, 2.0, 1.0])
    slower = Measurement("job", "gzip", 10, 10, 2.0, 2.0, [2.0, 3.0, 4.0])
    assert slower.ratio_to(base) == 0.5  # median of 1/2, 2/3, 1/4
    wrong = [("short", "gzip", gz, lambda: gz.events - 1, "events")]
    with pytest.raises(RuntimeError, match="got 299 events"):
        in_rounds(1, wrong)


def test_one_batch_budget_use_is_measured_on_the_real_job(spark_session):
    config = batch_budget.Config(runs=2, events_per_run=30, budget=400.0, latency_ms=1.0)
    r = batch_budget.run(config, spark_session)
    assert r.exit_code == 0 and r.expected > 40 and r.accepted_items == r.consumed_wcu == r.expected
    assert (r.missing, r.wrong_etl, r.throttled_requests) == (0, 0, 0) and r.window_s > 0 and r.first_write_s > 0
    assert r.use == r.consumed_wcu / (400.0 * r.window_s)
    checks = batch_budget.verdicts(r)
    assert [text.split(":")[0] for text, _ in checks] == ["one batch", "one batch", "one batch"]
    assert checks[1][1] and checks[2][1]
    assert batch_budget.markdown(r).splitlines()[2].startswith("| 2 | ")
    assert spark_session.sparkContext.parallelize([1, 2]).count() == 2  # the shared session was left running


def test_scan_costs_times_every_step_on_lines_the_parser_accepts():
    from bench.scan_costs import make_lines, measure, steps, table

    lines = make_lines(50, 1300)
    assert sum(1 for _ in scan_lines([lines], "x", LineTally())) == 50  # every generated line is a valid event
    named = [name for name, _ in steps(lines)]
    per_line = measure(lines, 2)
    assert list(per_line) == named and named[0].startswith("bare zlib") and all(v > 0 for v in per_line.values())
    rows = table(per_line).splitlines()
    assert len(rows) == 2 + len(named) and rows[2].endswith("| 1.00 |")
