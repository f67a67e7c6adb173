"""The capacity-enforcing DynamoDB stand-in, in front of a real moto server, seen through boto3 and raw HTTP."""
from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import boto3
import pytest
from botocore.exceptions import ClientError, ConnectionClosedError

from bench.dynamo_endpoint import fetch_stats, reset_stats, start_endpoint, stop, write_units
from spark.dynamo import dynamodb_client
from spark.manifest import ATTRIBUTES, KEY_SCHEMA

TABLE = "manifest"


def item(i: int, size: int = 0) -> dict:
    out = {"eventId": {"S": f"event-{i:04d}"}, "fingerprint": {"S": "f" * 32}, "etlTime": {"N": "1600000000"}}
    if size:
        out["pad"] = {"S": "x" * size}
    return out


class FakeClock:
    """The stand-in's clock: time passes only when a test advances it, however busy the machine is."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def standin(moto_reset):
    """start(wcu, **options) -> (client without retries, stand-in url); a table exists upstream."""
    boto3.client("dynamodb", region_name="us-east-1").create_table(
        TableName=TABLE, KeySchema=KEY_SCHEMA, AttributeDefinitions=ATTRIBUTES, BillingMode="PAY_PER_REQUEST")
    servers = []

    def start(wcu, **options):
        server, url = start_endpoint(moto_reset, wcu, **options)
        servers.append(server)
        client = dynamodb_client("us-east-1", None, endpoint_url=url)
        return client, url

    yield start
    for server in servers:
        stop(server)


def upstream_keys() -> set:
    items = boto3.client("dynamodb", region_name="us-east-1").scan(TableName=TABLE, ConsistentRead=True)["Items"]
    return {it["eventId"]["S"] for it in items}


def error_of(call, **kwargs):
    with pytest.raises(ClientError) as raised:
        call(**kwargs)
    return raised.value.response["Error"]["Code"], raised.value.response["ResponseMetadata"]["HTTPStatusCode"]


def test_write_units_count_started_kilobytes():
    assert write_units(item(1)) == 1
    assert write_units(item(1, size=1100)) == 2
    assert write_units(None) == 1


def test_single_writes_over_capacity_get_400_provisioned_throughput_exceeded(standin):
    client, url = standin(3, burst_seconds=1.0, clock=FakeClock())
    outcomes = []
    for i in range(8):
        try:
            client.put_item(TableName=TABLE, Item=item(i))
            outcomes.append("ok")
        except ClientError as e:
            outcomes.append((e.response["Error"]["Code"], e.response["ResponseMetadata"]["HTTPStatusCode"]))
    # the saved-up second of capacity, then nothing until the clock moves
    assert outcomes == ["ok"] * 3 + [("ProvisionedThroughputExceededException", 400)] * 5
    stats = fetch_stats(url)
    assert stats["consumed_wcu"] == 3 == len(upstream_keys())
    assert stats["throttled_requests"] == 5


def test_raw_throttle_answer_is_dynamodb_json(standin):
    _, url = standin(1, throttle_fraction=1.0)
    request = urllib.request.Request(url + "/", method="POST", data=json.dumps({"TableName": TABLE, "Item": item(1)})
                                     .encode(), headers={"X-Amz-Target": "DynamoDB_20120810.PutItem",
                                                         "Content-Type": "application/x-amz-json-1.0"})
    with pytest.raises(urllib.error.HTTPError) as raised:
        urllib.request.urlopen(request, timeout=10)
    assert raised.value.code == 400
    body = json.loads(raised.value.read())
    assert body["__type"] == "com.amazonaws.dynamodb.v20120810#ProvisionedThroughputExceededException"
    assert body["message"]


def test_batch_write_returns_what_does_not_fit_as_unprocessed_items(standin):
    client, url = standin(10, burst_seconds=1.0, clock=FakeClock())
    requests = [{"PutRequest": {"Item": item(i)}} for i in range(25)]
    response = client.batch_write_item(RequestItems={TABLE: requests}, ReturnConsumedCapacity="TOTAL")
    left = response["UnprocessedItems"][TABLE]
    assert len(left) == 15
    assert response["ConsumedCapacity"] == [{"TableName": TABLE, "CapacityUnits": 10.0}]
    written = upstream_keys()
    assert len(written) == 10
    assert written.isdisjoint(r["PutRequest"]["Item"]["eventId"]["S"] for r in left)
    # none of the next batch fits: DynamoDB answers the exception, not an all-unprocessed response
    assert error_of(client.batch_write_item, RequestItems={TABLE: left}) == \
        ("ProvisionedThroughputExceededException", 400)
    stats = fetch_stats(url)
    assert stats["consumed_wcu"] == 10 and stats["accepted_items"] == 10
    assert stats["throttled_requests"] == 2 and stats["throttled_items"] == 30
    assert sum(stats["per_second"]) == 10


def test_capacity_refills_at_the_wcu_rate_up_to_the_burst(standin):
    clock = FakeClock()
    client, url = standin(20, burst_seconds=0.5, clock=clock)
    requests = [{"PutRequest": {"Item": item(i)}} for i in range(25)]
    clock.advance(0.25)  # a full bucket saves no more (quarter seconds: exact in binary floating point)
    first = client.batch_write_item(RequestItems={TABLE: requests})["UnprocessedItems"][TABLE]
    assert len(first) == 15  # 0.5 s of 20 WCU/s
    clock.advance(0.25)
    second = client.batch_write_item(RequestItems={TABLE: first})["UnprocessedItems"][TABLE]
    assert len(second) == 10  # 5 units refilled in 0.25 s
    assert len(upstream_keys()) == 25 - 10
    clock.advance(60)  # a minute idle saves no more than the burst
    more = [{"PutRequest": {"Item": item(i)}} for i in range(100, 115)]
    third = client.batch_write_item(RequestItems={TABLE: more})["UnprocessedItems"][TABLE]
    assert len(third) == 5


def test_conditional_failures_cost_a_write_unit(standin):
    client, url = standin(100)
    client.put_item(TableName=TABLE, Item=item(1))
    code = error_of(client.put_item, TableName=TABLE, Item=item(1), ConditionExpression="attribute_not_exists(eventId)")
    assert code == ("ConditionalCheckFailedException", 400)
    stats = fetch_stats(url)
    assert stats["consumed_wcu"] == 2 and stats["conditional_failures"] == 1


def test_batch_get_keys_come_back_unprocessed_in_a_read_storm(standin):
    client, url = standin(100, read_throttle_fraction=0.5, seed=4)
    client.batch_write_item(RequestItems={TABLE: [{"PutRequest": {"Item": item(i)}} for i in range(20)]})
    spec = {"Keys": [{"eventId": item(i)["eventId"], "fingerprint": item(i)["fingerprint"]} for i in range(20)],
            "ProjectionExpression": "eventId, etlTime", "ConsistentRead": True}
    response = client.batch_get_item(RequestItems={TABLE: spec})
    found = {it["eventId"]["S"] for it in response["Responses"][TABLE]}
    left = response["UnprocessedKeys"][TABLE]
    assert 0 < len(found) < 20 and len(found) + len(left["Keys"]) == 20
    assert left["ProjectionExpression"] == "eventId, etlTime" and left["ConsistentRead"] is True
    assert found.isdisjoint(k["eventId"]["S"] for k in left["Keys"])
    assert fetch_stats(url)["throttled_keys"] == len(left["Keys"])


def test_faults_are_500s_or_dropped_connections(standin):
    client, url = standin(100_000, fault_fraction=1.0, seed=2)
    seen = set()
    for i in range(12):
        try:
            client.put_item(TableName=TABLE, Item=item(i))
            seen.add("ok")
        except ClientError as e:
            seen.add((e.response["Error"]["Code"], e.response["ResponseMetadata"]["HTTPStatusCode"]))
        except ConnectionClosedError:
            seen.add("dropped")
    assert seen == {("InternalServerError", 500), "dropped"}
    faults = fetch_stats(url)["faults"]
    assert faults["500"] + faults["drop"] == 12
    assert len(upstream_keys()) == faults["drop"]  # a dropped answer hides a write that happened


def test_other_targets_are_forwarded_with_latency(standin):
    client, url = standin(1, latency_ms=60, throttle_fraction=1.0, fault_fraction=1.0)
    started = time.perf_counter()
    table = client.describe_table(TableName=TABLE)["Table"]
    assert time.perf_counter() - started >= 0.06
    assert table["TableName"] == TABLE
    assert client.scan(TableName=TABLE)["Count"] == 0
    assert fetch_stats(url)["requests"] == {"DescribeTable": 1, "Scan": 1}


def test_reset_zeroes_counts_and_changes_settings(standin):
    client, url = standin(2)
    client.batch_write_item(RequestItems={TABLE: [{"PutRequest": {"Item": item(i)}} for i in range(5)]})
    assert fetch_stats(url)["consumed_wcu"] == 2
    reset_stats(url, wcu=1000, throttle_fraction=0.0)
    stats = fetch_stats(url)
    assert stats["consumed_wcu"] == 0 and stats["throttled_requests"] == 0 and stats["settings"]["wcu"] == 1000
    response = client.batch_write_item(RequestItems={TABLE: [{"PutRequest": {"Item": item(i)}} for i in range(5)]})
    assert not response["UnprocessedItems"]
    with pytest.raises(urllib.error.HTTPError):
        reset_stats(url, wcus=3)


def test_stats_give_the_wall_clock_moments_of_the_first_and_last_accepted_write(standin):
    client, url = standin(1000)
    assert fetch_stats(url)["first_write_at"] is None
    before = time.time()
    client.batch_write_item(RequestItems={TABLE: [{"PutRequest": {"Item": item(i)}} for i in range(3)]})
    time.sleep(0.05)
    client.put_item(TableName=TABLE, Item=item(9))
    after = time.time()
    stats = fetch_stats(url)
    assert before <= stats["first_write_at"] < stats["last_write_at"] <= after
    assert stats["last_write_at"] - stats["first_write_at"] == pytest.approx(stats["active_seconds"], abs=1e-4)


def test_command_line_serves_the_stand_in(moto_reset):
    proc = subprocess.Popen([sys.executable, "-m", "bench.dynamo_endpoint", "--upstream", moto_reset, "--wcu", "7",
                             "--latency-ms", "1"], stdout=subprocess.PIPE, text=True,
                            cwd=Path(__file__).resolve().parent.parent)
    try:
        url = proc.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:")
        assert fetch_stats(url)["settings"]["wcu"] == 7
    finally:
        proc.terminate()
        proc.wait(10)
