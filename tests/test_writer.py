"""The DynamoDB write path: item shape, both write modes against a real moto server, throttling and faults through
the capacity-enforcing stand-in, and the token bucket on a fake clock."""
from __future__ import annotations

import os
import threading
import time
import uuid

import boto3
import pytest
from botocore.exceptions import ParamValidationError

from bench.dynamo_endpoint import fetch_stats
from spark.dynamo import WriteError, dynamodb_client
from spark.manifest import ATTRIBUTES, KEY_SCHEMA, ManifestItem, item_attributes
from spark.ratelimit import TokenBucket
from spark.writer import COUNT_NAMES, write_items, write_size

TABLE = "manifest"
DAY = 86400
FAST_SLEEP = 0.02  # backoff sleeps are real but scaled down, so storms finish in a second or two


class FakeClock:
    """A clock that only moves when someone sleeps on it."""

    def __init__(self):
        self.now = 1000.0
        self.lock = threading.Lock()

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        with self.lock:
            self.now += max(0.0, seconds)


def quick_sleep(seconds: float) -> None:
    time.sleep(seconds * FAST_SLEEP)


def create_table(name: str = TABLE):
    client = boto3.client("dynamodb", region_name="us-east-1")
    client.create_table(TableName=name, KeySchema=KEY_SCHEMA, AttributeDefinitions=ATTRIBUTES,
                        BillingMode="PAY_PER_REQUEST")
    return client


def table_state(client, name: str = TABLE) -> dict:
    state = {}
    for page in client.get_paginator("scan").paginate(TableName=name, ConsistentRead=True):
        for it in page["Items"]:
            state[(it["eventId"]["S"], it["fingerprint"]["S"])] = (int(it["etlTime"]["N"]), int(it["ttl"]["N"]))
    return state


def make_items(n: int, run: str = "2020-01-01-00-00-00", etl: int = 1_600_000_000) -> list:
    return [ManifestItem(str(uuid.uuid4()), uuid.uuid4().hex, etl, etl + 180 * DAY, run) for _ in range(n)]


def write(items, mode, **kwargs):
    kwargs.setdefault("client", dynamodb_client("us-east-1", None))
    kwargs.setdefault("limiter", TokenBucket(100_000))
    return write_items(items, table=TABLE, mode=mode, **kwargs)


def assert_counted_once(counts: dict, items: list) -> None:
    per_run = {}
    for it in items:
        per_run[it.run] = per_run.get(it.run, 0) + 1
    assert set(counts) == set(per_run)
    for run, n in per_run.items():
        assert set(counts[run]) == set(COUNT_NAMES)
        assert counts[run]["written"] + counts[run]["already_present"] + counts[run]["write_failures"] == n


def test_item_attributes_match_the_shredders():
    item = ManifestItem("c6ef3124-b53a-4b13-a233-0088f79dcbcb", "e3dbfa9ca0412e2a1a7b4ff4d3d1d1d1", 1500000000,
                        1515552000, "2017-07-14-03-00-00")
    assert item_attributes(item) == {
        "eventId": {"S": "c6ef3124-b53a-4b13-a233-0088f79dcbcb"},
        "fingerprint": {"S": "e3dbfa9ca0412e2a1a7b4ff4d3d1d1d1"},
        "etlTime": {"N": "1500000000"},
        "ttl": {"N": "1515552000"},
    }


def test_token_bucket_never_exceeds_its_rate_on_a_fake_clock():
    clock = FakeClock()
    start = clock()
    bucket = TokenBucket(100, burst=10, clock=clock, sleep=clock.sleep)
    for _ in range(1000):
        bucket.take(1)
    # 10 saved up, 990 at 100/s: exactly 9.9 s, never less
    assert clock() - start == pytest.approx(9.9)
    clock.sleep(100)  # idle time saves up no more than the burst
    before = clock()
    bucket.take(50)
    assert clock() - before == pytest.approx(0.4)
    for _ in range(40):
        bucket.take(25)  # takes larger than the burst wait off their debt
    assert clock() - before == pytest.approx(0.4 + 10.0)


def test_token_bucket_shared_by_threads_keeps_the_total_rate():
    clock = FakeClock()
    bucket = TokenBucket(1000, burst=0, clock=clock, sleep=clock.sleep)
    threads = [threading.Thread(target=lambda: [bucket.take(5) for _ in range(100)]) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert clock() - 1000.0 >= 2000 / 1000 - 1e-9


def test_token_bucket_refuses_a_nonpositive_rate():
    with pytest.raises(ValueError, match="rate must be positive"):
        TokenBucket(0)


@pytest.mark.parametrize("mode", ["conditional", "fast"])
def test_earliest_etl_time_wins_in_both_modes(moto_reset, mode):
    client = create_table()
    ours = make_items(5, etl=2000)
    later, earlier, equal, absent, dup_run = ours
    client.put_item(TableName=TABLE, Item=item_attributes(later._replace(etl_time=3000, ttl=3)))
    client.put_item(TableName=TABLE, Item=item_attributes(earlier._replace(etl_time=1000, ttl=1)))
    client.put_item(TableName=TABLE, Item=item_attributes(equal._replace(ttl=2)))
    # the same key again in another run with a later etlTime: must not replace ours
    items = ours + [dup_run._replace(etl_time=2500, run="later-run")]

    counts = write(items, mode)

    state = table_state(client)
    assert state[(later.event_id, later.fingerprint)] == (2000, later.ttl)  # replaced by the earlier one
    assert state[(earlier.event_id, earlier.fingerprint)] == (1000, 1)  # never overwritten by a later one
    assert state[(equal.event_id, equal.fingerprint)] == (2000, 2)  # nor by an equal one
    assert state[(absent.event_id, absent.fingerprint)] == (2000, absent.ttl)
    assert state[(dup_run.event_id, dup_run.fingerprint)] == (2000, dup_run.ttl)
    assert_counted_once(counts, items)
    run = ours[0].run
    assert counts[run]["written"] == 3 and counts[run]["already_present"] == 2
    assert counts["later-run"]["already_present"] == 1


def test_both_modes_leave_the_same_table(moto_reset):
    client = create_table("manifest")
    create_table("conditional")
    base = make_items(60, run="a", etl=5000)
    existing = [it._replace(etl_time=it.etl_time + (i % 3 - 1) * 100, ttl=i) for i, it in enumerate(base[:30])]
    for name in ("manifest", "conditional"):
        for it in existing:
            client.put_item(TableName=name, Item=item_attributes(it))
    items = base + make_items(10, run="b", etl=4000)
    ddb = dynamodb_client("us-east-1", None)
    fast = write_items(items, client=ddb, table="manifest", mode="fast", limiter=TokenBucket(100_000))
    cond = write_items(items, client=ddb, table="conditional", mode="conditional", limiter=TokenBucket(100_000))
    assert table_state(client, "manifest") == table_state(client, "conditional")
    assert len(table_state(client, "manifest")) == 70
    assert_counted_once(fast, items)
    assert_counted_once(cond, items)
    for run in ("a", "b"):
        fast_wcu, cond_wcu = fast[run].pop("wcu_consumed"), cond[run].pop("wcu_consumed")
        assert fast_wcu == fast[run]["written"]  # fast mode pays only for what it writes
        assert cond_wcu == cond[run]["written"] + cond[run]["already_present"]  # a failed condition costs 1 WCU
    assert fast == cond
    assert fast["a"]["already_present"] == 20 and fast["b"]["written"] == 10


def test_fast_rerun_writes_nothing_and_costs_no_wcu(standin):
    url = standin(100_000)
    client = create_table()
    items = make_items(130)
    first = write(items, "fast")["2020-01-01-00-00-00"]
    assert first["written"] == 130 and first["wcu_consumed"] == 130
    assert fetch_stats(url)["consumed_wcu"] == 130
    again = write(items, "fast")["2020-01-01-00-00-00"]
    assert again == {"written": 0, "already_present": 130, "write_failures": 0, "throttle_retries": 0,
                     "wcu_consumed": 0}
    assert fetch_stats(url)["consumed_wcu"] == 130  # the stand-in saw no write at all
    assert len(table_state(client)) == 130


def test_fast_mode_collapses_a_key_repeated_in_one_batch(moto_reset):
    client = create_table()
    items = make_items(30)
    dup = items[3]._replace(etl_time=items[3].etl_time - 10)
    counts = write(items + [dup, items[7]], "fast")  # DynamoDB would refuse a batch holding a key twice
    assert counts[dup.run]["written"] == 30 and counts[dup.run]["already_present"] == 2
    assert table_state(client)[(dup.event_id, dup.fingerprint)][0] == dup.etl_time


def test_a_write_request_holds_at_most_a_quarter_second_of_the_budget():
    assert [write_size(rate) for rate in (0.5, 1, 4, 20, 40, 99, 100, 100_000)] == [1, 1, 1, 5, 10, 24, 25, 25]


@pytest.mark.parametrize("rate,requests", [(40, 10), (100_000, 4)])
def test_fast_mode_sizes_its_write_requests_by_the_budget(standin, rate, requests):
    """Four tasks at 10 WCU/s sending 25 items at once would ask a 40 WCU/s table for 100 items together."""
    url = standin(100_000)
    create_table()
    clock = FakeClock()
    counts = write(make_items(100), "fast", limiter=TokenBucket(rate, clock=clock, sleep=clock.sleep), clock=clock,
                   sleep=clock.sleep, concurrency=1)
    assert counts["2020-01-01-00-00-00"]["written"] == 100
    assert fetch_stats(url)["requests"]["BatchWriteItem"] == requests


@pytest.mark.parametrize("mode", ["conditional", "fast"])
def test_throttling_storm_loses_nothing(standin, mode):
    url = standin(100, throttle_fraction=0.5, read_throttle_fraction=0.5, seed=7)
    client = create_table()
    items = make_items(150, run="r1") + make_items(50, run="r2")
    # the writer's budget is far above the table's: capacity throttling on top of the random storm
    counts = write(items, mode, limiter=TokenBucket(3000), sleep=quick_sleep)
    assert_counted_once(counts, items)
    assert sum(c["written"] for c in counts.values()) == 200
    assert sum(c["write_failures"] for c in counts.values()) == 0
    assert sum(c["throttle_retries"] for c in counts.values()) > 0
    assert sum(c["wcu_consumed"] for c in counts.values()) == 200
    stats = fetch_stats(url)
    assert stats["throttled_requests"] > 0 and stats["accepted_items"] == 200
    state = table_state(client)
    assert state == {(it.event_id, it.fingerprint): (it.etl_time, it.ttl) for it in items}


@pytest.mark.parametrize("mode", ["conditional", "fast"])
def test_an_item_throttled_past_the_deadline_is_a_write_failure(standin, mode):
    standin(1000, throttle_fraction=1.0, seed=1)
    client = create_table()
    items = make_items(30)
    clock = FakeClock()
    counts = write(items, mode, clock=clock, sleep=clock.sleep, max_retry_seconds=3.0, concurrency=2)
    run = items[0].run
    assert counts[run]["write_failures"] == 30
    assert counts[run]["written"] == 0 and counts[run]["throttle_retries"] > 0
    assert table_state(client) == {}


@pytest.mark.parametrize("mode", ["conditional", "fast"])
def test_transient_faults_are_retried(standin, mode):
    url = standin(100_000, fault_fraction=0.3, seed=3)
    client = create_table()
    items = make_items(100 if mode == "conditional" else 400)
    counts = write(items, mode, sleep=quick_sleep)[items[0].run]
    faults = fetch_stats(url)["faults"]
    assert faults["500"] > 0 and faults["drop"] > 0
    assert counts["write_failures"] == 0 and counts["throttle_retries"] == 0
    # a write whose answer was dropped went through: sent again it may count as already present
    assert counts["written"] + counts["already_present"] == len(items) and counts["written"] > 0
    assert table_state(client) == {(it.event_id, it.fingerprint): (it.etl_time, it.ttl) for it in items}


@pytest.mark.parametrize("mode", ["conditional", "fast"])
def test_a_missing_table_raises_one_line(moto_reset, mode):
    with pytest.raises(WriteError) as raised:
        write(make_items(3), mode)
    message = str(raised.value)
    assert "ResourceNotFoundException" in message and TABLE in message and "\n" not in message


def test_credentials_from_the_config_are_used_and_never_shown(moto_reset):
    create_table()
    secret = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
    client = dynamodb_client("us-east-1", {"accessKeyId": "AKIAIOSFODNN7EXAMPLE", "secretAccessKey": secret})
    assert client.meta.region_name == "us-east-1"
    counts = write(make_items(2), "fast", client=client)
    assert counts["2020-01-01-00-00-00"]["written"] == 2
    with pytest.raises(ValueError) as raised:
        dynamodb_client("us-east-1", {"accessKeyId": "AKIAIOSFODNN7EXAMPLE"})
    assert "AKIA" not in str(raised.value)


def test_the_job_client_skips_parameter_validation_and_takes_an_endpoint(moto_reset):
    """Validation costs CPU on every request; the endpoint argument is how the benchmark builds this same client."""
    create_table()
    client = dynamodb_client("us-east-1", None, endpoint_url=os.environ["AWS_ENDPOINT_URL"])
    assert client.meta.endpoint_url == os.environ["AWS_ENDPOINT_URL"]
    # A validating client refuses a Limit below the model's minimum of 1 before sending; this one sends the request.
    assert TABLE in client.list_tables(Limit=0)["TableNames"]
    with pytest.raises(ParamValidationError):
        boto3.client("dynamodb", region_name="us-east-1").list_tables(Limit=0)


def test_the_job_client_names_itself_in_the_user_agent(moto_reset):
    client = dynamodb_client("us-east-1", None)
    sent = []
    client.meta.events.register("before-send", lambda request, **_: sent.append(request.headers["User-Agent"]))
    client.list_tables()
    assert sent and sent[0].decode().startswith("snowplow-manifest-populator Python/")


def test_unknown_mode_is_refused():
    with pytest.raises(ValueError, match="write mode must be one of"):
        write_items([], client=None, table=TABLE, mode="turbo", limiter=TokenBucket(1))
