"""PopulateManifest --method import through the real `luigi` command, pyspark's spark-submit and moto's ImportTable.

moto 5.2 imports every object under the S3KeyPrefix, gunzips it for InputCompressionType GZIP and reads
DYNAMODB_JSON `{"Item": {...}}` objects, as DynamoDB does. One import (one spark-submit) is shared by the module.
"""
import gzip
import json
import time

import boto3
import pytest

from bench import servers
from bench.archive import generate_archive
from pipeline.configs.params import backfill_id
from pipeline.orchestration.importing import import_id, record_location, staging_location
from pipeline.stores.markers import MarkerStore
from spark import report as reports
from spark.manifest import ATTRIBUTES, KEY_SCHEMA
from spark.storage import parse_location
from tests.cli import (
    ARCHIVE,
    SCHEDULING_ERROR,
    TASK_FAILED,
    create_buckets,
    last_error,
    luigi_env,
    ops_objects,
    populate_command,
    recent_runs,
    run_in_process,
    run_luigi,
    storage_config,
    table_items,
)

MARKERS, TABLE = "s3://ops/markers", "imported"


@pytest.fixture(scope="module")
def imported(moto_endpoint, tmp_path_factory):
    """Four runs (one so old that its items are expired, the others repeating some events of each other),
    imported into a new table in one luigi invocation."""
    servers.reset_moto(moto_endpoint)
    create_buckets()
    runs = recent_runs(1, hours_ago=200 * 24) + recent_runs(3)
    truth = generate_archive(ARCHIVE, runs, 60, malformed_fraction=0.005, no_fingerprint_fraction=0.02,
                             cross_run_duplicates=0.05, seed=31)
    tmp = tmp_path_factory.mktemp("import")
    env = luigi_env(moto_endpoint)

    def luigi(table_name, *args, process: bool = False):
        """The command, in-process unless a job must run (its state machine needs no separate process)."""
        storage = storage_config(tmp / f"{table_name}.json", table_name)
        command = populate_command(ARCHIVE, storage, MARKERS, "--method", "import", *args)
        return run_luigi(command, tmp, env) if process else run_in_process(command)

    first = luigi(TABLE, process=True)
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

    markers = store()
    assert markers.done_runs() == set(runs)
    ident = import_of(TABLE, runs)
    counts = {}
    for run in runs:
        rep = markers.read_marker(run)["report"]
        assert rep["mode"] == "import" and reports.completeness_problem(rep) is None
        assert reports.counts_add_up(rep["counts"], "import")
        counts[run] = rep["counts"]
    assert counts[runs[0]]["written"] == 0 and counts[runs[0]]["expired"] > 0  # the old run: every item expired
    assert sum(c["written"] for c in counts.values()) == len(expected)
    assert sum(c["batch_duplicates"] for c in counts.values()) > 0

    record = import_record(TABLE, runs)
    assert record["status"] == "COMPLETED" and record["staged_items"] == len(expected)
    assert record["imported_items"] == len(expected) and record["client_token"].startswith(f"manifest-{ident}-")
    lines = [json.loads(line) for o in staged_objects(TABLE, runs)
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
                     KeySchema=KEY_SCHEMA, AttributeDefinitions=ATTRIBUTES)
    before = ops_objects()
    proc = luigi("existing", "--create-table")
    assert proc.returncode == SCHEDULING_ERROR, proc.stderr[-2000:]
    assert last_error(proc).startswith("ERROR: ") and (
        "--method import creates the table, but DynamoDB table 'existing' already exists" in last_error(proc))
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
    assert last_error(proc).startswith("ERROR: ") and message in last_error(proc), last_error(proc)
    assert ops_objects() == before


def import_of(table_name: str, runs) -> str:
    return import_id(backfill_id(parse_location(ARCHIVE), table_name, parse_location(MARKERS)), runs)


def import_record(table_name: str, runs) -> dict:
    markers = store(table_name)
    return markers.read_json(record_location(markers, import_of(table_name, runs)))


def staged_objects(table_name: str, runs) -> list:
    staging = staging_location(store(table_name), import_of(table_name, runs))
    listed = boto3.client("s3").list_objects_v2(Bucket=staging.bucket, Prefix=staging.key.rstrip("/") + "/")
    return listed.get("Contents", [])


def record_import(table_name: str, runs, arn, staged: int, status: str = "IN_PROGRESS") -> None:
    """What an interrupted run leaves: the first import's reports and staged items as this one's, and its record."""
    ident, theirs, first, ours = import_of(table_name, runs), import_of(TABLE, runs), store(), store(table_name)
    for run in runs:
        ours.write_json(ours.report(ident, run), first.read_json(first.report(theirs, run)))
    record = {"import_id": ident, "attempt": 1, "client_token": f"manifest-{ident}-1", "status": status,
              "staged_items": staged, "runs": list(runs), "staging": staging_location(first, theirs).uri}
    if arn:
        record["import_arn"] = arn
    ours.write_json(record_location(ours, ident), record)


def test_rerun_after_staging_starts_the_import_without_a_job(imported):
    """Interrupted between staging and recording ImportTable's answer: the next run calls it again, runs no job."""
    runs, truth, luigi, _ = imported
    expected = truth.expected_items(now=time.time())
    record_import("restarted", runs, None, len(expected), status="STARTING")
    proc = luigi("restarted")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "starting ImportTable again with the same ClientToken" in proc.stderr
    assert staged_objects("restarted", runs) == []  # no job ran
    assert table_items("restarted") == expected and store("restarted").done_runs() == set(runs)
    record = import_record("restarted", runs)
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
            "KeySchema": KEY_SCHEMA, "AttributeDefinitions": ATTRIBUTES},
    )["ImportTableDescription"]["ImportArn"]
    record_import("resumed", runs, arn, len(expected))
    proc = luigi("resumed")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "resuming, waiting for " + arn in proc.stderr
    assert staged_objects("resumed", runs) == []  # no job ran
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
    assert proc.returncode == TASK_FAILED, proc.stderr[-3000:]
    assert "ended FAILED: S3NoSuchBucket: The specified bucket does not exist; no run was marked" in proc.stderr
    assert store("failing").done_runs() == set()
    assert import_record("failing", runs)["status"] == "FAILED"


def test_dry_run_of_an_import_writes_nothing(imported, tmp_path):
    runs, _, luigi, _ = imported
    before = ops_objects()
    out = tmp_path / "plan.json"
    proc = luigi("planned", "--dry-run", "--output-json", str(out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    plan = json.loads(out.read_text())
    assert plan["runs_to_do"] == runs and plan["table_exists"] is False
    assert [(b["id"], b["runs"]) for b in plan["batches"]] == [(import_of("planned", runs), runs)]  # one job
    assert ops_objects() == before
    assert "planned" not in boto3.client("dynamodb").list_tables()["TableNames"]
