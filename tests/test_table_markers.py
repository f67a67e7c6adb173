"""The manifest table's checks and creation, the write budget, and the marker store's single listing."""
import boto3
import pytest
from moto import mock_aws

from pipeline.rules.errors import PipelineError
from pipeline.stores import table
from pipeline.stores.markers import MarkerStore
from spark.manifest import ATTRIBUTES, KEY_SCHEMA
from spark.storage import parse_location


@pytest.fixture
def dynamodb(monkeypatch):
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)  # in-process moto, not the session's server
    with mock_aws():
        yield boto3.client("dynamodb", region_name="eu-west-1")


def test_missing_table_names_table_and_region(dynamodb):
    with pytest.raises(PipelineError, match="'manifest' does not exist in eu-west-1 .*--create-table"):
        table.ensure_table(dynamodb, "manifest", "eu-west-1", create=False)


def test_create_table_on_demand_with_ttl(dynamodb):
    info = table.ensure_table(dynamodb, "manifest", "eu-west-1", create=True)
    assert (info.billing_mode, info.ttl_enabled) == ("PAY_PER_REQUEST", True)
    desc = dynamodb.describe_table(TableName="manifest")["Table"]
    assert desc["KeySchema"] == KEY_SCHEMA and desc["TableStatus"] == "ACTIVE"
    assert dynamodb.describe_time_to_live(TableName="manifest")["TimeToLiveDescription"]["AttributeName"] == "ttl"


def test_wrong_key_schema_is_refused(dynamodb):
    dynamodb.create_table(TableName="manifest", KeySchema=[{"AttributeName": "eventId", "KeyType": "HASH"}],
                          AttributeDefinitions=[{"AttributeName": "eventId", "AttributeType": "S"}],
                          BillingMode="PAY_PER_REQUEST")
    with pytest.raises(PipelineError, match=r"key schema \[eventId S HASH\], expected .*nothing was written"):
        table.ensure_table(dynamodb, "manifest", "eu-west-1", create=True)


def test_ttl_off_is_a_warning(dynamodb, caplog):
    dynamodb.create_table(TableName="manifest", KeySchema=KEY_SCHEMA, AttributeDefinitions=ATTRIBUTES,
                          ProvisionedThroughput={"ReadCapacityUnits": 5, "WriteCapacityUnits": 1000})
    info = table.ensure_table(dynamodb, "manifest", "eu-west-1", create=False)
    assert (info.billing_mode, info.write_capacity, info.ttl_enabled) == ("PROVISIONED", 1000, False)
    assert "TTL is not enabled" in caplog.text


def test_write_budget():
    provisioned = table.TableInfo("t", "r", "PROVISIONED", 1000, True)
    on_demand = table.TableInfo("t", "r", "PAY_PER_REQUEST", 0, True)
    assert table.write_budget(provisioned, 0, 0.5, 4000) == 500
    assert table.write_budget(provisioned, 300, 0.5, 4000) == 300
    assert table.write_budget(on_demand, 0, 0.5, 4000) == 4000


def test_marker_store_one_listing_and_cache(tmp_path):
    store = MarkerStore(parse_location(str(tmp_path)), "manifest")
    assert store.done_runs() == set()
    store.mark("2026-05-01-00-00-00", {"run": "2026-05-01-00-00-00"})
    store.write_json(store.report("b1", "2026-05-02-00-00-00"), {"x": 1})  # reports are not markers
    store.write_json(store.summary("2026"), {"x": 1})
    assert store.done_runs(cached=True) == {"2026-05-01-00-00-00"}
    assert store.read_marker("2026-05-01-00-00-00")["report"] == {"run": "2026-05-01-00-00-00"}
    assert (tmp_path / "manifest" / "run=2026-05-01-00-00-00.json").exists()
    store.unmark("2026-05-01-00-00-00")
    assert store.done_runs(cached=True) == set()
    assert store.read_json(store.report("nope", "x")) is None


def test_marker_store_s3_counts_requests(moto_reset):
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket="ops")
    store = MarkerStore(parse_location("s3://ops/markers"), "manifest", s3)
    for day in range(1, 30):
        store.mark(f"2026-05-{day:02d}-00-00-00", {})
    calls = []
    s3.meta.events.register("before-call.s3.*", lambda model, **kw: calls.append(model.name))
    assert len(store.done_runs()) == 29
    assert calls == ["ListObjectsV2"]
    assert store.read_json(store.report("b", "2026-05-01-00-00-00")) is None


def test_create_table_tolerates_a_concurrent_creator(dynamodb):
    """Two backfills started at once with --create-table: the second waits for the first one's table."""
    table.create_table(dynamodb, "manifest", "eu-west-1")
    info = table.create_table(dynamodb, "manifest", "eu-west-1")
    assert (info.billing_mode, info.ttl_enabled) == ("PAY_PER_REQUEST", True)
