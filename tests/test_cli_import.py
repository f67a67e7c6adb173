"""PopulateManifest --method import through the real `luigi` command, pyspark's spark-submit and moto's ImportTable.

moto 5.2 imports every object under the S3KeyPrefix, gunzips it for InputCompressionType GZIP and reads
DYNAMODB_JSON `{"Item": {...}}` objects, as DynamoDB does. One import (one spark-submit) is shared by the module.
"""
import gzip
import json
import time
from datetime import datetime, timedelta, timezone

import boto3
import pytest

from bench import servers
from bench.archive import generate_archive, run_ids
from pipeline.importer import import_id
from pipeline.markers import MarkerStore
from pipeline.plan import backfill_id
from spark import report as reports
from spark.storage import parse_location
from tests.cli import luigi_env, populate_command, run_luigi, storage_config, table_items
from tests.test_cli_backfill import recent_runs

SCHEDULING_ERROR = 35
ARCHIVE, MARKERS, TABLE = "s3://archive/enriched", "s3://ops/markers", "imported"


def ops_objects() -> list:
    pages = boto3.client("s3").get_paginator("list_objects_v2").paginate(Bucket="ops")
    return sorted((o["Key"], o["ETag"]) for page in pages for o in page.get("Contents", []))


def last_line(proc) -> str:
    return proc.stderr.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def imported(moto_endpoint, tmp_path_factory):
    """Four runs (one so old that its items are expired, the others repeating some events of each other),
    imported into a new table in one luigi invocation."""
    servers.reset_moto(moto_endpoint)
    s3 = boto3.client("s3")
    for bucket in ("archive", "ops"):
        s3.create_bucket(Bucket=bucket)
    old = run_ids(datetime.now(timezone.utc).replace(tzinfo=None, minute=0, second=0, microsecond=0)
                  - timedelta(days=200), 1)
    runs = list(old) + recent_runs(3)
    truth = generate_archive(ARCHIVE, runs, 60, malformed_fraction=0.005, no_fingerprint_fraction=0.02,
                             cross_run_duplicates=0.05, seed=31)
    tmp = tmp_path_factory.mktemp("import")
    env = luigi_env(moto_endpoint)

    def luigi(table_name, *args):
        storage = storage_config(tmp / f"{table_name}.json", table_name)
        return run_luigi(populate_command(ARCHIVE, storage, MARKERS, "--method", "import", *args), tmp, env)

    first = luigi(TABLE)
    assert first.returncode == 0, first.stderr[-3000:]
    return runs, truth, luigi, first


def store(table_name: str = TABLE) -> MarkerStore:
    return MarkerStore(parse_location(MARKERS), table_name)


def test_import_creates_the_table_the_write_method_would(imported):
    runs, truth, _, first = imported
    expected = truth.expected_items(now=time.time())
    assert expected and table_items(TABLE) == expected
    ddb = boto3.client("dynamodb")
    desc = ddb.describe_table(TableName=TABLE)["Table"]
    assert desc["BillingModeSummary"]["BillingMode"] == "PAY_PER_REQUEST"
    assert [(k["AttributeName"], k["KeyType"]) for k in desc["KeySchema"]] == [("eventId", "HASH"),
                                                                               ("fingerprint", "RANGE")]
    ttl = ddb.describe_time_to_live(TableName=TABLE)["TimeToLiveDescription"]
    assert (ttl["TimeToLiveStatus"], ttl["AttributeName"]) == ("ENABLED", "ttl")

    assert store().done_runs() == set(runs)
    bid = backfill_id(parse_location(ARCHIVE), TABLE, parse_location(MARKERS))
    ident = import_id(bid, runs)
    written = 0
    for run in runs:
        rep = store().read_marker(run)["report"]
        assert rep["mode"] == "import" and reports.completeness_problem(rep) is None
        assert reports.counts_add_up(rep["counts"], "import")
        written += rep["counts"]["written"]
    assert store().read_marker(runs[0])["report"]["counts"]["written"] == 0  # the old run: every item expired
    assert store().read_marker(runs[0])["report"]["counts"]["expired"] > 0
    assert written == len(expected)
    assert sum(store().read_marker(r)["report"]["counts"]["batch_duplicates"] for r in runs) > 0

    record = store().read_json(store().folder.child("_import", ident, "import.json"))
    assert record["status"] == "COMPLETED" and record["staged_items"] == len(expected)
    assert record["imported_items"] == len(expected) and record["client_token"].startswith(f"manifest-{ident}-")
    staged = boto3.client("s3").list_objects_v2(Bucket="ops", Prefix=f"markers/{TABLE}/_import/{ident}/data/")
    lines = [json.loads(line) for o in staged["Contents"]
             for line in gzip.decompress(boto3.client("s3").get_object(Bucket="ops", Key=o["Key"])["Body"].read())
             .decode().splitlines()]
    assert {(i["Item"]["eventId"]["S"], i["Item"]["fingerprint"]["S"]): (int(i["Item"]["etlTime"]["N"]),
                                                                          int(i["Item"]["ttl"]["N"]))
            for i in lines} == expected and len(lines) == len(expected)
    assert "Traceback" not in first.stderr


def test_rerun_after_success_does_nothing(imported):
    runs, truth, luigi, _ = imported
    before, items = ops_objects(), table_items(TABLE)
    again = luigi(TABLE)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "every run is already done" in again.stdout
    assert table_items(TABLE) == items
    assert [o for o in ops_objects() if "/_summaries/" not in o[0]] == \
        [o for o in before if "/_summaries/" not in o[0]]


def test_refused_when_the_table_exists(imported):
    luigi = imported[2]
    ddb = boto3.client("dynamodb")
    ddb.create_table(TableName="existing", BillingMode="PAY_PER_REQUEST",
                     KeySchema=[{"AttributeName": "eventId", "KeyType": "HASH"},
                                {"AttributeName": "fingerprint", "KeyType": "RANGE"}],
                     AttributeDefinitions=[{"AttributeName": "eventId", "AttributeType": "S"},
                                           {"AttributeName": "fingerprint", "AttributeType": "S"}])
    before = ops_objects()
    proc = luigi("existing", "--create-table")
    assert proc.returncode == SCHEDULING_ERROR, proc.stderr[-2000:]
    assert last_line(proc).startswith("ERROR: ") and (
        "--method import creates the table, but DynamoDB table 'existing' already exists" in last_line(proc))
    assert "Traceback" not in proc.stderr
    assert ops_objects() == before and ddb.scan(TableName="existing")["Count"] == 0


@pytest.mark.parametrize("args,message", [
    (["--markers", "local-markers"], "--method import stages its files under --markers, which must be in S3"),
    (["--method", "copy"], "--method 'copy' is not one of: write, import"),
])
def test_bad_import_parameters_are_one_line(imported, args, message):
    luigi = imported[2]
    before = ops_objects()
    proc = luigi("another", *args)
    assert proc.returncode == SCHEDULING_ERROR, proc.stderr[-2000:]
    assert last_line(proc).startswith("ERROR: ") and message in last_line(proc), last_line(proc)
    assert ops_objects() == before


def import_of(table_name: str, runs) -> str:
    return import_id(backfill_id(parse_location(ARCHIVE), table_name, parse_location(MARKERS)), runs)


def record_import(table_name: str, runs, arn, staged: int, status: str = "IN_PROGRESS") -> None:
    """What an interrupted run leaves: the first import's reports and staged items as this one's, and its record."""
    ident, first = import_of(table_name, runs), store()
    ours = store(table_name)
    for run in runs:
        ours.write_json(ours.report(ident, run), first.read_json(first.report(import_of(TABLE, runs), run)))
    record = {"import_id": ident, "attempt": 1, "client_token": f"manifest-{ident}-1", "status": status,
              "staged_items": staged, "runs": list(runs),
              "staging": f"{MARKERS}/{TABLE}/_import/{import_of(TABLE, runs)}/data"}
    if arn:
        record["import_arn"] = arn
    ours.write_json(ours.folder.child("_import", ident, "import.json"), record)


def test_rerun_after_staging_starts_the_import_without_a_job(imported):
    """Interrupted between staging and recording ImportTable's answer: the next run calls it again, runs no job."""
    runs, truth, luigi, _ = imported
    expected = truth.expected_items(now=time.time())
    record_import("restarted", runs, None, len(expected), status="STARTING")
    proc = luigi("restarted")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "starting ImportTable again with the same ClientToken" in proc.stderr
    own_staging = f"markers/restarted/_import/{import_of('restarted', runs)}/data/"
    assert "Contents" not in boto3.client("s3").list_objects_v2(Bucket="ops", Prefix=own_staging)  # no job ran
    assert table_items("restarted") == expected and store("restarted").done_runs() == set(runs)
    record = store("restarted").read_json(store("restarted").folder.child("_import", import_of("restarted", runs),
                                                                          "import.json"))
    assert record["status"] == "COMPLETED" and record["import_arn"]


def test_rerun_waits_for_the_import_it_started(imported):
    """A run interrupted after ImportTable started: the next one runs no job, waits for that import and marks."""
    runs, truth, luigi, _ = imported
    expected = truth.expected_items(now=time.time())
    staging = f"markers/{TABLE}/_import/{import_of(TABLE, runs)}/data/"
    arn = boto3.client("dynamodb").import_table(
        S3BucketSource={"S3Bucket": "ops", "S3KeyPrefix": staging}, InputFormat="DYNAMODB_JSON",
        InputCompressionType="GZIP", TableCreationParameters={
            "TableName": "resumed", "BillingMode": "PAY_PER_REQUEST",
            "KeySchema": [{"AttributeName": "eventId", "KeyType": "HASH"},
                          {"AttributeName": "fingerprint", "KeyType": "RANGE"}],
            "AttributeDefinitions": [{"AttributeName": "eventId", "AttributeType": "S"},
                                     {"AttributeName": "fingerprint", "AttributeType": "S"}]},
    )["ImportTableDescription"]["ImportArn"]
    record_import("resumed", runs, arn, len(expected))
    proc = luigi("resumed")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "resuming, waiting for " + arn in proc.stderr
    own_staging = f"markers/resumed/_import/{import_of('resumed', runs)}/data/"
    assert "Contents" not in boto3.client("s3").list_objects_v2(Bucket="ops", Prefix=own_staging)  # no job ran
    assert table_items("resumed") == expected and store("resumed").done_runs() == set(runs)
    ttl = boto3.client("dynamodb").describe_time_to_live(TableName="resumed")["TimeToLiveDescription"]
    assert (ttl["TimeToLiveStatus"], ttl["AttributeName"]) == ("ENABLED", "ttl")


def test_failed_import_fails_the_task_and_marks_nothing(imported):
    runs, _, luigi, _ = imported
    arn = boto3.client("dynamodb").import_table(
        S3BucketSource={"S3Bucket": "no-such-bucket", "S3KeyPrefix": "x/"}, InputFormat="DYNAMODB_JSON",
        InputCompressionType="GZIP", TableCreationParameters={
            "TableName": "failing", "BillingMode": "PAY_PER_REQUEST",
            "KeySchema": [{"AttributeName": "eventId", "KeyType": "HASH"}],
            "AttributeDefinitions": [{"AttributeName": "eventId", "AttributeType": "S"}]},
    )["ImportTableDescription"]["ImportArn"]
    record_import("failing", runs, arn, 1)
    proc = luigi("failing")
    assert proc.returncode == 30, proc.stderr[-3000:]
    assert "ended FAILED: S3NoSuchBucket: The specified bucket does not exist; no run was marked" in proc.stderr
    assert store("failing").done_runs() == set()
    record = store("failing").read_json(store("failing").folder.child("_import", import_of("failing", runs),
                                                                      "import.json"))
    assert record["status"] == "FAILED"


def test_dry_run_of_an_import_writes_nothing(imported, tmp_path):
    runs, _, luigi, _ = imported
    before = ops_objects()
    out = tmp_path / "plan.json"
    proc = luigi("planned", "--dry-run", "--output-json", str(out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    plan = json.loads(out.read_text())
    assert plan["runs_to_do"] == runs and plan["table_exists"] is False
    assert plan["batches"] == [{"id": import_of("planned", runs), "runs": runs}]  # one job over every run
    assert ops_objects() == before
    assert "planned" not in boto3.client("dynamodb").list_tables()["TableNames"]
