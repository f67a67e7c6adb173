"""The end-to-end benchmark's pieces, fast: S3 requests recorded from real boto3 calls and classified, the
budget-use arithmetic, memory sampling of a real process tree, and the report's verdicts. One slow test runs the
whole benchmark on its smallest archive (`make test-slow`)."""
from __future__ import annotations

import dataclasses
import subprocess
import sys
import time
from datetime import datetime

import boto3
import pytest

from bench import e2e, procmem, s3_endpoint
from bench.archive import generate_archive, run_ids
from bench.e2e_report import PassResult, Size, SizeResult, budget_use, document, idle_seconds
from bench.s3_requests import classify, count, marking_seconds, planning_seconds

MB = 2**20


def test_budget_use_is_consumption_over_budget_times_first_to_last_write():
    assert budget_use(900, 1000.0, 100.0, 101.0) == pytest.approx(0.9)
    assert budget_use(45_000, 1000.0, 0.0, 60.0) == pytest.approx(0.75)  # a 15 s gap between batches counts
    assert budget_use(10, 1000.0, None, None) is None and budget_use(10, 1000.0, 5.0, 5.0) is None
    assert idle_seconds([0, 5, 0, 0, 3, 0]) == 2 and idle_seconds([0, 0]) == 0 and idle_seconds([4]) == 0


def test_requests_recorded_from_boto3_are_classified_and_timed(moto_reset):
    server, url = s3_endpoint.start_endpoint(moto_reset, record=True)
    try:
        s3 = boto3.client("s3", endpoint_url=url, region_name="us-east-1")
        for bucket in ("archive", "ops"):
            s3.create_bucket(Bucket=bucket)
        s3.put_object(Bucket="archive", Key="enriched/run=2026-05-01-00-00-00/part-00000.gz", Body=b"x")
        s3_endpoint.reset_log(url)
        started = time.time()
        s3.list_objects_v2(Bucket="archive", Prefix="enriched/", Delimiter="/")
        s3.get_object(Bucket="archive", Key="enriched/run=2026-05-01-00-00-00/part-00000.gz")
        folder, run = "m/t", "2026-05-01-00-00-00"
        s3.put_object(Bucket="ops", Key=f"{folder}/_leases/run={run}.json", Body=b"{}")
        s3.put_object(Bucket="ops", Key=f"{folder}/_batches/b1.json", Body=b"{}")
        s3.put_object(Bucket="ops", Key=f"{folder}/_reports/b1/run={run}.json", Body=b"{}")
        s3.get_object(Bucket="ops", Key=f"{folder}/_reports/b1/run={run}.json")
        s3.put_object(Bucket="ops", Key=f"{folder}/run={run}.json", Body=b"{}")
        s3.delete_object(Bucket="ops", Key=f"{folder}/_leases/run={run}.json")
        s3.list_objects_v2(Bucket="ops", Prefix=f"{folder}/", Delimiter="/")
        s3.put_object(Bucket="ops", Key=f"{folder}/_summaries/s.json", Body=b"{}")
        log = s3_endpoint.fetch_log(url)
    finally:
        s3_endpoint.stop(server)
    kinds = [classify(r, "archive", "enriched") for r in log]
    assert kinds == ["listing", "archive reads", "leases", "specs", "reports", "reports", "markers", "leases",
                     "listing", "other"]
    assert count(log, "archive", "enriched") == {"listing": 2, "leases": 2, "reports": 2, "markers": 1, "specs": 1,
                                                 "other": 1, "archive reads": 1}
    assert 0 <= planning_seconds(log, started) < 5
    seconds, batches = marking_seconds(log)
    assert batches == 1 and seconds == pytest.approx(log[6][0] - log[5][0])


def test_marking_spans_each_batch_from_its_first_report_read_to_its_last_marker():
    def at(t: float, method: str, folder: str, hour: int) -> tuple:
        return (t, method, f"/ops/m/t/{folder}run=2026-05-01-0{hour}-00-00.json")

    log = [at(10.0, "GET", "_reports/b1/", 0), at(10.5, "PUT", "", 0), at(11.0, "GET", "_reports/b1/", 1),
           at(12.0, "PUT", "", 1), at(30.0, "GET", "_reports/b2/", 2), at(30.25, "PUT", "", 2),
           at(40.0, "PUT", "_reports/b3/", 3)]  # a report written by a job: no marking yet
    assert marking_seconds(log) == (pytest.approx(2.25), 2)
    assert planning_seconds(log, 5.0) is None  # no lease: no batch began


def test_roles_of_a_spark_tree_and_peaks_by_sample():
    table = {
        10: (1, ["/venv/bin/python", "/venv/bin/luigi", "--module", "pipeline"]),
        11: (10, ["/jdk/bin/java", "-cp", "jars/*", "org.apache.spark.launcher.Main",
                  "org.apache.spark.deploy.SparkSubmit"]),
        12: (10, ["/jdk/bin/java", "-cp", "jars/*", "-Xmx1g", "org.apache.spark.deploy.SparkSubmit", "job.py"]),
        13: (12, ["/venv/bin/python3", "/tmp/job/populate.py", "spec.json"]),
        14: (12, ["/venv/bin/python3", "-m", "pyspark.daemon"]),
        15: (14, ["/venv/bin/python3", "-m", "pyspark.daemon"]),
        16: (1, ["/venv/bin/python3", "-m", "pyspark.daemon"]),  # not ours
    }
    table[17] = (12, table[12][1])  # the JVM forking a worker, seen before its exec: not a second JVM
    by_role, jvms = procmem.sample(10, table, rss_of=lambda pid: pid * MB)
    assert by_role == {"luigi": 10 * MB, "spark JVM": 12 * MB, "python driver": 13 * MB,
                       "python workers": 29 * MB, "other": 11 * MB}
    assert jvms == {12}
    peaks = procmem.Peaks()
    peaks.add({"luigi": 5, "spark JVM": 0, "python driver": 0, "python workers": 0, "other": 0}, set(), 1.0)
    peaks.add({"luigi": 3, "spark JVM": 7, "python driver": 0, "python workers": 0, "other": 0}, {12}, 2.0)
    assert peaks.by_role["luigi"] == 5 and peaks.total == 10 and peaks.first_jvm_at == 2.0 and peaks.jvms == {12}


def test_sampler_reads_the_rss_of_a_real_process_tree():
    child = "import time; b = b'x' * (60 * 2**20); time.sleep(0.8)"  # written, so resident
    parent = f"import subprocess, sys; subprocess.run([sys.executable, '-c', {child!r}])"
    proc = subprocess.Popen([sys.executable, "-c", parent])
    sampler = procmem.Sampler(proc.pid, interval=0.05).start()
    proc.wait(30)
    peaks = sampler.stop()
    assert peaks.samples >= 5
    assert peaks.by_role["luigi"] > 5 * MB  # the root is the command's own role
    assert peaks.by_role["other"] >= 60 * MB and peaks.total >= peaks.by_role["other"] + peaks.by_role["luigi"] // 2


def test_cross_run_copies_are_counted_by_the_batch_they_land_in(tmp_path):
    runs = run_ids(datetime(2026, 5, 1), 6)
    truth = generate_archive(str(tmp_path), runs, 200, seed=3, extras=False, kinds=("plain",))
    copies, other = e2e.cross_batch_copies(truth, {r: ("b1" if i < 3 else "b2") for i, r in enumerate(runs)})
    expected = sum(r.cross_run_duplicates for r in truth.runs)
    assert copies == expected > 0 and 0 < other <= copies
    assert e2e.cross_batch_copies(truth, {r: "b1" for r in runs}) == (expected, 0)
    assert e2e.cross_batch_copies(truth, {}) == (expected, None)


def fake_pass(name: str, wall: float, wcu: int, span: float, batches: list, tree_mb: int) -> PassResult:
    peaks = procmem.Peaks(total=tree_mb * MB)
    return PassResult(name=name, code=0, wall=wall, wcu=wcu, items=1000, first_write_at=100.0 if span else None,
                      last_write_at=100.0 + span if span else None, idle_seconds=0, throttled_requests=0,
                      budget=1000.0, peaks=peaks, s3={"listing": 2, "leases": 10, "reports": 10, "markers": 10,
                                                      "specs": 1, "other": 1, "archive reads": 70},
                      planning_s=2.0, marking_s=1.0, marked_batches=len(batches), started=90.0, batches=batches)


def test_report_judges_each_target_from_the_measured_figures():
    def size_result(runs: int, default_wall: float, default_wcu: int, rerun_wcu: int,
                    many_wcu: int = 1000) -> SizeResult:
        r = SizeResult(Size(runs, 2000), unique=1000, cross_copies=10, archive_mb=1.0, generate_s=1.0,
                       cross_other={"default": 0, "many batches": 9})
        r.passes = {"default": fake_pass("default", default_wall, default_wcu, 1.25, [10], 700),
                    "re-run": fake_pass("re-run", 2.0, rerun_wcu, 0, [], 100),
                    "many batches": fake_pass("many batches", 80.0, many_wcu, 1.0, [5, 5], 700),
                    "one batch": fake_pass("one batch", 50.0, 1000, 1.0, [10], 800),
                    "one batch, markers lost": fake_pass("one batch, markers lost", 20.0, 0, 0, [], 800)}
        return r

    text, verdicts = document([size_result(10, 55.0, 1000, 0, many_wcu=1030), size_result(100, 100.0, 1020, 3)],
                              1000.0,
                              ["--batch-size", "100000"], "python -m bench.e2e --quick", 60.0)
    judged = {target.split(" (")[0]: (measured, ok) for target, measured, ok in verdicts}
    assert judged["default settings ≥ 0.8 of one batch's speed on 100 × 2,000"] == ("0.50", False)
    assert judged["≥ 0.9 of the budget used over the whole backfill"][1] is False  # 1,000 WCU over 1.25 s
    assert judged["WCU per unique item ≤ 1.01 fresh, with cross-batch duplicates"] == (
        "1.030 (worst, 10 × 2,000, many batches)", False)
    assert judged["0 WCU on a re-run"] == ("3", False)
    assert judged["S3 requests per run flat"] == ("0.10×", True)  # the same requests over 10x the runs
    assert judged["peak memory bounded by the batch, not the archive"] == (
        "1.00× (700 → 700 MiB); a batch of 10× the events, not judged", None)
    assert not any(t.startswith("peak memory not growing with the runs") for t in judged)  # no equal-events pair
    equal = document([size_result(10, 55.0, 1000, 0), size_result(100, 100.0, 1000, 0)] + [
        dataclasses.replace(size_result(1000, 100.0, 1000, 0), size=Size(1000, 200))], 1000.0, [], "c", 1.0)[1]
    assert ("peak memory not growing with the runs at equal events (100 × 2,000 → 1,000 × 200, default settings, "
            "whole tree: at most 1.25×)", "1.00× (700 → 700 MiB)", True) in equal
    assert "| 100 × 2,000 | 100.0 | 1 (≤ 10 runs) |" in text and "`--batch-size 100000`" in text
    assert "| 10 × 2,000 | 1,000 | 10 | 0 (0%) | 9 (90%) | – | 1.000 | 1.030 | 1.000 |" in text
    assert "| 80.0 | 2 (≤ 5 runs) | 0.62 |" in text  # many batches: 50 s as one batch over 80 s
    assert Size.parse("1,000x200") == Size(1000, 200)


@pytest.mark.slow
def test_the_benchmark_runs_end_to_end_on_a_tiny_archive(tmp_path, monkeypatch):
    monkeypatch.setattr(e2e, "WORK", tmp_path / "work")
    out = tmp_path / "E2E.md"
    assert e2e.main(["--sizes", "2x200", "--output", str(out)]) == 0
    text = out.read_text()
    assert "| 2 × 200 | default |" in text
    assert "| 0 WCU on a re-run (markers kept, and markers lost) | 0 | PASS |" in text
