"""The Spark job end to end: generated archives on a moto S3 server into a moto DynamoDB table, local Spark.

Every expectation is computed here from the generator's ground truth (ArchiveTruth), never from the job's own
reading of the archive.
"""
from __future__ import annotations

import gzip
import json
import logging
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import boto3
import pytest

from bench.archive import FILE_KINDS, generate_archive, run_time
from spark.job import JobError, load_credentials, load_spec, main, run_batch
from spark.reading import pack_objects
from spark.report import completeness_problem, counts_add_up
from spark.spec import BatchSpec

ROOT = Path(__file__).resolve().parent.parent
ARCHIVE = "s3://archive/enriched"
RUNS = ["2026-05-01-00-00-00", "2026-05-01-01-00-00", "2026-05-01-02-00-00"]
NOW = run_time("2026-05-02-00-00-00").timestamp()
TTL = 180 * 86400
SECRET = "do-not-leak-this-secret-7f3a"


@pytest.fixture
def aws(moto_reset, tmp_path):
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket="archive")
    ddb = boto3.client("dynamodb", region_name="us-east-1")
    create_table(ddb, "manifest")
    creds = tmp_path / "credentials.json"
    creds.write_text(json.dumps({"accessKeyId": "testing", "secretAccessKey": SECRET}))
    return s3, ddb, str(creds)


def create_table(ddb, name: str) -> None:
    ddb.create_table(TableName=name, BillingMode="PAY_PER_REQUEST",
                     KeySchema=[{"AttributeName": "eventId", "KeyType": "HASH"},
                                {"AttributeName": "fingerprint", "KeyType": "RANGE"}],
                     AttributeDefinitions=[{"AttributeName": "eventId", "AttributeType": "S"},
                                           {"AttributeName": "fingerprint", "AttributeType": "S"}])


def make_spec(tmp_path, creds: str, runs, name: str = "b1", **options) -> BatchSpec:
    values = dict(batch_id=name, archive=ARCHIVE, runs=list(runs), reports=str(tmp_path / name), table="manifest",
                  region="us-east-1", credentials=creds, now=NOW, max_write_capacity=5000.0, write_parallelism=2)
    values.update(options)
    return BatchSpec(**values)


def table_items(ddb, table: str = "manifest") -> dict:
    items = {}
    for page in ddb.get_paginator("scan").paginate(TableName=table):
        for it in page["Items"]:
            assert set(it) == {"eventId", "fingerprint", "etlTime", "ttl"}
            items[(it["eventId"]["S"], it["fingerprint"]["S"])] = (int(it["etlTime"]["N"]), int(it["ttl"]["N"]))
    return items


def expected(truth, runs, etl_time: str = "run", now: float = NOW):
    """key -> (etlTime, ttl) and key -> winning run, from the ground truth: earliest unexpired copy wins."""
    best = {}
    for r in truth.runs:
        if r.run not in runs or not r.events:
            continue
        run_etl = min(ms for _, _, ms in r.events) // 1000
        for event_id, fingerprint, ms in r.events:
            t = run_etl if etl_time == "run" else ms // 1000
            if t + TTL <= now:
                continue
            key = (event_id, fingerprint)
            if key not in best or (t, r.run) < best[key]:
                best[key] = (t, r.run)
    return {k: (t, t + TTL) for k, (t, _) in best.items()}, {k: run for k, (_, run) in best.items()}


def reports(spec: BatchSpec) -> dict:
    out = {}
    for run in spec.runs:
        out[run] = json.loads((Path(spec.reports) / f"run={run}.json").read_text())
        assert counts_add_up(out[run]["counts"]), out[run]
    return out


def check_run_report(report, rt, winners):
    counts = report["counts"]
    assert counts["lines"] == rt.lines
    assert counts["malformed"] == rt.malformed
    planted = {f"{key.split('/', 1)[1]}:{line}: {reason}" for key, line, reason in rt.malformed_at}
    assert set(counts["malformed_examples"]) <= planted
    assert len(counts["malformed_examples"]) == min(10, len(planted))
    assert counts["no_fingerprint"] == rt.no_fingerprint
    assert counts["in_run_duplicates"] == len(rt.events) - len(rt.unique_keys)
    assert counts["written"] + counts["already_present"] == sum(1 for run in winners.values() if run == rt.run)
    assert sorted(o["key"] for o in report["objects"]) == sorted(f"{ARCHIVE}/{k}" for k in rt.objects)
    assert sum(o["lines"] for o in report["objects"]) == rt.lines


def test_batch_is_written_item_by_item_and_idempotently(aws, spark_session, tmp_path, caplog):
    s3, ddb, creds = aws
    truth = generate_archive(ARCHIVE, RUNS, 60, malformed_fraction=0.05, no_fingerprint_fraction=0.02,
                             cross_run_duplicates=0.05, stream_enrich_runs=1, seed=7, client=s3)
    kinds = {o.kind for o in truth.objects if o.is_data}
    assert kinds == set(FILE_KINDS)
    want, winners = expected(truth, RUNS)
    spec = make_spec(tmp_path, creds, RUNS, max_malformed_fraction=0.1)
    caplog.set_level(logging.INFO, logger="manifest.job")

    assert run_batch(spark_session, spec) == 0
    assert table_items(ddb) == want
    first = reports(spec)
    for rt in truth.runs:
        report = first[rt.run]
        assert report["status"] == "ok" and completeness_problem(report) is None, report["errors"]
        check_run_report(report, rt, winners)
        assert report["counts"]["already_present"] == 0
        assert report["etl_time"] == min(ms for _, _, ms in rt.events) // 1000
    assert sum(r["counts"]["batch_duplicates"] for r in first.values()) == sum(
        len(rt.unique_keys) for rt in truth.runs) - len(want)
    assert sum(r["counts"]["written"] for r in first.values()) == len(want)
    assert SECRET not in caplog.text and SECRET not in json.dumps(first)
    some_ids = [event_id for rt in truth.runs for event_id, _, _ in rt.events[:5]]
    assert not any(i in caplog.text or i in json.dumps(first) for i in some_ids)  # no line content anywhere
    assert "run 2026-05-01-00-00-00: 7 objects" in caplog.text

    # The same batch again changes nothing: every item is already there (checked here by fast mode's reads).
    again = make_spec(tmp_path, creds, RUNS, name="b2", max_malformed_fraction=0.1, write_mode="fast")
    assert run_batch(spark_session, again) == 0
    assert table_items(ddb) == want
    for run, report in reports(again).items():
        assert report["counts"]["written"] == 0
        assert report["counts"]["already_present"] == first[run]["counts"]["written"]


@pytest.mark.parametrize("mode", ["conditional", "fast"])
def test_earliest_run_wins_when_a_later_run_is_processed_first(aws, spark_session, tmp_path, mode):
    """Both write modes leave the same table: the one computed from the ground truth."""
    s3, ddb, creds = aws
    truth = generate_archive(ARCHIVE, RUNS[:2], 50, cross_run_duplicates=0.2, kinds=("gz", "plain"),
                             extras=False, seed=3, client=s3)
    assert truth.runs[1].cross_run_duplicates > 0
    later = make_spec(tmp_path, creds, [RUNS[1]], name="later", write_mode=mode)
    assert run_batch(spark_session, later) == 0
    assert table_items(ddb) == expected(truth, [RUNS[1]])[0]
    earlier = make_spec(tmp_path, creds, [RUNS[0]], name="earlier", write_mode=mode)
    assert run_batch(spark_session, earlier) == 0
    want = expected(truth, RUNS[:2])[0]
    assert table_items(ddb) == want
    shared = truth.runs[0].unique_keys & truth.runs[1].unique_keys
    assert shared and all(want[k][0] == min(ms for _, _, ms in truth.runs[0].events) // 1000 for k in shared)
    assert reports(earlier)[RUNS[0]]["counts"]["written"] == len(truth.runs[0].unique_keys)  # overwrites too
    # And the later run again cannot put its later etlTime back.
    again = make_spec(tmp_path, creds, [RUNS[1]], name="later-again", write_mode=mode)
    assert run_batch(spark_session, again) == 0
    assert table_items(ddb) == want
    assert reports(again)[RUNS[1]]["counts"]["written"] == 0


def test_bad_runs_fail_alone_and_write_nothing(aws, spark_session, tmp_path):
    s3, ddb, creds = aws
    runs = RUNS + ["2026-05-01-03-00-00"]
    truth = generate_archive(ARCHIVE, runs[:3], 80, kinds=("gz", "plain"), extras=False, seed=5, client=s3)
    generate_archive(ARCHIVE, runs[3:], 100, malformed_fraction=0.05, kinds=("gz",), extras=False, seed=6,
                     client=s3)
    glacier = f"enriched/run={runs[0]}/part-00009.gz"
    s3.put_object(Bucket="archive", Key=glacier, Body=gzip.compress(b"x\n"), StorageClass="GLACIER")
    corrupt = f"enriched/run={runs[1]}/part-00009.gz"
    s3.put_object(Bucket="archive", Key=corrupt, Body=gzip.compress(b"y\n" * 1000)[:-30])
    spec = make_spec(tmp_path, creds, runs)

    assert run_batch(spark_session, spec) == 1
    got = reports(spec)
    assert [got[r]["status"] for r in runs] == ["failed", "failed", "ok", "failed"]
    assert f"s3://archive/{glacier}" in got[runs[0]]["errors"][0] and "GLACIER" in got[runs[0]]["errors"][0]
    assert f"s3://archive/{corrupt}" in got[runs[1]]["errors"][0] and "truncated" in got[runs[1]]["errors"][0]
    assert "malformed" in got[runs[3]]["errors"][0] and got[runs[3]]["counts"]["malformed"]["field_count"] > 0
    for r in (runs[0], runs[1], runs[3]):
        assert completeness_problem(got[r]) is not None
        assert got[r]["counts"]["written"] == 0
        assert all(len(e.splitlines()) == 1 for e in got[r]["errors"])
    assert got[runs[0]]["counts"]["lines"] == 0  # an archived object stops the run before any reading
    assert got[runs[1]]["counts"]["not_written"] == got[runs[1]]["valid_events"] > 0
    assert completeness_problem(got[runs[2]]) is None
    assert table_items(ddb) == expected(truth, [runs[2]])[0]


def test_main_count_only_writes_nothing_and_reads_a_local_archive(aws, spark_session, tmp_path, monkeypatch):
    s3, ddb, creds = aws
    local = str(tmp_path / "archive")
    truth = generate_archive(local, RUNS[:2], 60, no_fingerprint_fraction=0.05, kinds=("csv.gz", "gzip"), seed=9)
    spec = make_spec(tmp_path, None, RUNS[:2], archive=local, count_only=True, table="", max_write_capacity=0)
    s3.put_object(Bucket="archive", Key="specs/count.json", Body=spec.to_json().encode())
    with monkeypatch.context() as m:  # main() stops its session when done: keep the shared one alive
        m.setattr(spark_session, "stop", lambda: None)
        assert main(["--spec", "s3://archive/specs/count.json"]) == 0
    assert table_items(ddb) == {}
    for rt in truth.runs:
        report = reports(spec)[rt.run]
        assert report["count_only"] and completeness_problem(report) == "count-only pass: nothing was written"
        assert report["valid_events"] == report["counts"]["not_written"] == len(rt.events)
        assert report["counts"]["no_fingerprint"] == rt.no_fingerprint > 0
        assert sorted(o["key"] for o in report["objects"]) == sorted(f"{local}/{k}" for k in rt.objects)


def test_write_errors_fail_the_runs_and_an_empty_run_is_ok_with_a_warning(aws, spark_session, tmp_path):
    s3, ddb, creds = aws
    truth = generate_archive(ARCHIVE, RUNS[1:2], 30, kinds=("gz",), extras=False, seed=4, client=s3)
    s3.put_object(Bucket="archive", Key=f"enriched/run={RUNS[0]}/_SUCCESS", Body=b"")
    spec = make_spec(tmp_path, creds, RUNS[:2], table="no-such-table")
    assert run_batch(spark_session, spec) == 1
    empty, failed = reports(spec)[RUNS[0]], reports(spec)[RUNS[1]]
    assert empty["status"] == "ok" and empty["counts"]["lines"] == 0 and empty["objects"] == []
    assert empty["warnings"] == [f"{ARCHIVE}/run={RUNS[0]} holds no data objects"]
    assert failed["status"] == "failed" and completeness_problem(failed)
    # a missing table is a refusal: the run's error is its one line, naming the table, the action and the identity
    assert failed["refused"] == failed["errors"][0] and failed["errors"][0].startswith("DynamoDB table 'no-such-table'")
    assert "dynamodb:PutItem by the default AWS credential chain" in failed["refused"]
    assert failed["counts"]["write_failures"] + failed["counts"]["in_run_duplicates"] == len(truth.runs[0].events)
    assert SECRET not in json.dumps(failed)


@pytest.mark.parametrize("runs, message", [
    ([], "names no runs"), (["2026-05-01"], "must look like"), (["../x"], "must look like"),
    ([RUNS[0], RUNS[0]], "names a run twice"),
])
def test_bad_batch_specs_are_refused_before_anything_runs(tmp_path, runs, message):
    with pytest.raises(JobError, match=message):
        run_batch(None, make_spec(tmp_path, None, runs))
    assert not (tmp_path / "b1").exists()


def test_objects_are_packed_into_reading_tasks():
    mb = 1 << 20
    objects = [(300 * mb, "big"), (5 * mb, "a"), (1, "b"), (2, "c"), (3 * mb, "d"), (0, "e")]
    groups = pack_objects(objects, parallelism=4)
    assert sorted(o for g in groups for o in g) == sorted(objects)
    assert [(300 * mb, "big")] in groups  # larger than a task's share: alone
    assert len(groups) == 2
    many = [(10 * mb, str(i)) for i in range(40)]
    groups = pack_objects(many, parallelism=4)
    assert len(groups) == 4 and {len(g) for g in groups} == {10}
    assert pack_objects([], 4) == []


def test_per_event_etl_time_and_expiry(aws, spark_session, tmp_path):
    s3, ddb, creds = aws
    truth = generate_archive(ARCHIVE, RUNS[:2], 100, cross_run_duplicates=0.1, stream_enrich_runs=1,
                             kinds=("plain", "s3loader"), extras=False, seed=11, client=s3)
    first_etl = min(ms for _, _, ms in truth.runs[0].events) // 1000
    now = first_etl + TTL + 1  # the batch run's items are past their ttl, the stream run's are not
    want, _ = expected(truth, RUNS[:2], etl_time="event", now=now)
    assert want and len(want) < len(truth.runs[0].unique_keys | truth.runs[1].unique_keys)
    spec = make_spec(tmp_path, creds, RUNS[:2], etl_time="event", now=now)
    assert run_batch(spark_session, spec) == 0
    assert table_items(ddb) == want
    got = reports(spec)
    assert got[RUNS[0]]["counts"]["expired"] == len(truth.runs[0].unique_keys)
    assert got[RUNS[0]]["counts"]["written"] == 0


def test_spec_and_credentials_errors_are_one_line_without_the_secret(tmp_path):
    with pytest.raises(JobError, match="cannot read the batch spec at .*missing.json"):
        load_spec(str(tmp_path / "missing.json"))
    (tmp_path / "spec.json").write_text(json.dumps({"batch_id": "x", "unknown": 1}))
    with pytest.raises(JobError, match="invalid batch spec"):
        load_spec(str(tmp_path / "spec.json"))
    (tmp_path / "creds.json").write_text(json.dumps({"accessKeyId": "AKIA", "secret": SECRET}))
    with pytest.raises(JobError, match="must be a JSON object with accessKeyId and secretAccessKey") as e:
        load_credentials(str(tmp_path / "creds.json"))
    assert SECRET not in str(e.value)
    (tmp_path / "creds.json").write_text('{"accessKeyId": "AKIA", "secretAccessKey": "' + SECRET)
    with pytest.raises(JobError) as e:
        load_credentials(str(tmp_path / "creds.json"))
    assert SECRET not in str(e.value) and "\n" not in str(e.value)
    spec = make_spec(tmp_path, None, RUNS)
    (tmp_path / "good.json").write_text(spec.to_json())
    assert load_spec(str(tmp_path / "good.json")) == spec


@pytest.mark.parametrize("shipped", ["package", "zip"])
def test_entry_script_imports_the_job_from_the_package_or_a_py_files_zip(tmp_path, shipped):
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    script = ROOT / "spark" / "populate.py"
    if shipped == "zip":
        with zipfile.ZipFile(tmp_path / "spark.zip", "w") as zf:
            for f in (ROOT / "spark").glob("*.py"):
                zf.write(f, f"spark/{f.name}")
        (tmp_path / "entry").mkdir()
        script = tmp_path / "entry" / "populate.py"
        script.write_bytes((ROOT / "spark" / "populate.py").read_bytes())
        env["PYTHONPATH"] = str(tmp_path / "spark.zip")
    proc = subprocess.run([sys.executable, str(script), "--spec", str(tmp_path / "nope.json")], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert "cannot read the batch spec" in proc.stderr and "Traceback" not in proc.stderr



def test_many_runs_are_listed_and_reported_through_one_s3_client(aws, spark_session, tmp_path, monkeypatch):
    """A batch of many small runs: the driver makes one S3 client (each costs ~0.5 s of CPU; one per report made a
    1,000-run batch spend 140 s writing its reports) and every run gets its own report, in S3."""
    s3, ddb, creds = aws
    runs = [f"2026-05-01-{h:02d}-00-00" for h in range(12)]
    truth = generate_archive(ARCHIVE, runs, 20, seed=11, client=s3, extras=False, kinds=("plain",))
    made = []
    monkeypatch.setattr("spark.job.s3_client", lambda **kw: made.append(1) or boto3.client("s3"))
    monkeypatch.setattr("spark.storage.s3_client", lambda **kw: pytest.fail("a client made for one request"))
    spec = make_spec(tmp_path, creds, runs, reports="s3://archive/reports/b1")
    assert run_batch(spark_session, spec) == 0
    assert made == [1]
    want, winners = expected(truth, runs)
    assert table_items(ddb) == want
    for rt in truth.runs:
        body = s3.get_object(Bucket="archive", Key=f"reports/b1/run={rt.run}.json")["Body"].read()
        report = json.loads(body)
        assert report["run"] == rt.run and report["status"] == "ok"
        check_run_report(report, rt, winners)
