"""Whole backfills through the real `luigi` command, pyspark's spark-submit and the moto server."""
import gzip
import json
import os
import signal
import subprocess
import time

import boto3
import pytest

from pipeline.stores.markers import MarkerStore
from spark.manifest import ATTRIBUTES, KEY_SCHEMA
from spark.storage import parse_location
from tests.cli import (
    ARCHIVE,
    TASK_FAILED,
    luigi_env,
    make_archive,
    populate_command,
    run_in_process,
    run_luigi,
    storage_config,
    table_items,
)


@pytest.fixture
def archive(moto_reset):
    runs, truth = make_archive(4, 60, malformed_fraction=0.005, no_fingerprint_fraction=0.02, stream_enrich_runs=1,
                               seed=11)
    return runs, truth, moto_reset


def marked(markers: str, table: str):
    return MarkerStore(parse_location(markers), table).done_runs()


def test_backfill_then_rerun_writes_nothing(archive, tmp_path):
    runs, truth, endpoint = archive
    storage = storage_config(tmp_path / "dynamodb.json", "manifest")
    command = populate_command(ARCHIVE, storage, "s3://ops/markers", "--create-table", "--max-write-capacity", "500")
    first = run_luigi(command, tmp_path, luigi_env(endpoint))
    assert first.returncode == 0, first.stderr[-3000:]
    assert table_items("manifest") == truth.expected_items(now=time.time())
    assert marked("s3://ops/markers", "manifest") == set(runs)
    marker = MarkerStore(parse_location("s3://ops/markers"), "manifest").read_marker(runs[0])
    assert marker["report"]["counts"]["written"] > 0 and marker["report"]["status"] == "ok"
    assert "Populated manifest: 4 runs done now" in first.stdout

    second = run_in_process(command)  # no job runs: the command's exit and lines, in this process
    assert second.returncode == 0, second.stderr[-3000:]
    assert "Nothing to do for manifest: every run is already done (4 runs already done" in second.stdout
    assert "spark:" not in second.stderr  # no job was started
    assert table_items("manifest") == truth.expected_items(now=time.time())


def test_failed_run_stays_unmarked_others_marked(archive, tmp_path):
    runs, truth, endpoint = archive
    s3 = boto3.client("s3")
    bad_key = f"enriched/run={runs[1]}/part-00099.gz"
    s3.put_object(Bucket="archive", Key=bad_key, Body=gzip.compress(b"x\t" * 500)[:-20])  # truncated gzip
    storage = storage_config(tmp_path / "dynamodb.json", "manifest")
    command = populate_command(ARCHIVE, storage, "s3://ops/markers", "--create-table", "--batch-size", "4")
    proc = run_luigi(command, tmp_path, luigi_env(endpoint))
    assert proc.returncode == TASK_FAILED
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("ERROR: ") and f"run {runs[1]}" in last and "part-00099.gz" in last, last
    assert marked("s3://ops/markers", "manifest") == set(runs) - {runs[1]}
    good = [r for r in runs if r != runs[1]]
    assert table_items("manifest") == truth.expected_items(now=time.time(), runs=good)
    # The failed backfill still ends with its summary, on the console and in _summaries/.
    assert "Populated manifest: 3 runs done now, 0 already done, 1 left" in proc.stdout, proc.stdout[-2000:]
    assert f"  {runs[1]}: " in proc.stdout and "part-00099.gz" in proc.stdout
    listed = s3.list_objects_v2(Bucket="ops", Prefix="markers/manifest/_summaries/")["Contents"]
    assert len(listed) == 1
    saved = json.loads(s3.get_object(Bucket="ops", Key=listed[0]["Key"])["Body"].read())
    assert saved["runs_left"] == [runs[1]] and sorted(saved["runs_done_now"]) == good
    assert "part-00099.gz" in saved["runs_failed"][0]["reason"]


@pytest.mark.slow  # the default suite's seeded kill trials are in test_cli_kill_and_rivals.py
def test_kill_9_then_resume_ends_as_uninterrupted(archive, tmp_path):
    runs, truth, endpoint = archive
    env = luigi_env(endpoint)
    reference = storage_config(tmp_path / "reference.json", "reference")
    args = ("--create-table", "--max-write-capacity", "300")
    proc = run_luigi(populate_command(ARCHIVE, reference, "s3://ops/reference", *args, "--batch-size", "4"),
                     tmp_path, env)
    assert proc.returncode == 0, proc.stderr[-3000:]

    storage = storage_config(tmp_path / "dynamodb.json", "manifest")
    command = populate_command(ARCHIVE, storage, "s3://ops/markers", *args, "--batch-size", "2")
    victim = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              start_new_session=True)
    deadline = time.time() + 240
    while time.time() < deadline and not marked("s3://ops/markers", "manifest"):
        time.sleep(0.5)
    os.killpg(victim.pid, signal.SIGKILL)
    victim.wait()
    done = marked("s3://ops/markers", "manifest")
    assert 0 < len(done) < len(runs), "the kill must land mid-backfill"
    items = table_items("manifest")
    for run in done:  # a marker never exists for a run with missing items
        for key, value in truth.expected_items(now=time.time(), runs=[run]).items():
            assert key in items and items[key][0] <= value[0]

    resumed = run_luigi(command, tmp_path, env)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert table_items("manifest") == table_items("reference")
    assert marked("s3://ops/markers", "manifest") == marked("s3://ops/reference", "reference") == set(runs)


def test_since_boundaries_in_the_dry_run(archive, tmp_path):
    runs, _, endpoint = archive
    storage = storage_config(tmp_path / "dynamodb.json", "manifest")
    boto3.client("dynamodb").create_table(TableName="manifest", BillingMode="PAY_PER_REQUEST",
                                          KeySchema=KEY_SCHEMA, AttributeDefinitions=ATTRIBUTES)
    for since, expected in [(runs[2], runs[2:]), (runs[0][:10], [r for r in runs if r[:10] >= runs[0][:10]]),
                            ("", runs)]:
        out = tmp_path / "plan.json"
        command = populate_command(ARCHIVE, storage, "s3://ops/markers", "--dry-run", "--output-json", str(out),
                                   *(["--since", since] if since else []))
        proc = run_in_process(command)
        assert proc.returncode == 0, proc.stderr[-3000:]
        plan = json.loads(out.read_text())
        assert plan["runs_to_do"] == expected
        assert [s["run"] for s in plan["runs_skipped"] if "since" in s["reason"]] == sorted(set(runs) - set(expected))
    assert table_items("manifest") == {}
    assert marked("s3://ops/markers", "manifest") == set()


def test_dry_run_counts_events_with_a_spark_pass_and_writes_nothing(archive, tmp_path):
    runs, truth, endpoint = archive
    storage = storage_config(tmp_path / "dynamodb.json", "manifest")
    out = tmp_path / "plan.json"
    command = populate_command(ARCHIVE, storage, "s3://ops/markers", "--create-table", "--dry-run",
                               "--count-events", "--output-json", str(out))
    proc = run_luigi(command, tmp_path, luigi_env(endpoint))
    assert proc.returncode == 0, proc.stderr[-3000:]
    plan = json.loads(out.read_text())
    assert plan["events_source"] == "counted"
    assert plan["events"] == sum(len(truth.run(r).events) for r in runs)
    assert marked("s3://ops/markers", "manifest") == set()
    assert boto3.client("s3").list_objects_v2(Bucket="ops").get("KeyCount", 0) == 0
    assert boto3.client("dynamodb").list_tables()["TableNames"] == []  # --create-table, yet nothing created
