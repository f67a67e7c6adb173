"""The clean and verify logic of spark.maintenance against a real moto server (and the throttling stand-in):
conditional deletes tell deleted / not present / kept apart, reads tell found / missing / late, and both keep to
their budgets. The Spark job and the Luigi tasks around them are tested end to end in test_cli_maintenance."""
from __future__ import annotations

import random
import threading

import boto3
import pytest

from bench.dynamo_endpoint import fetch_stats
from pipeline.orchestration.maintenance_plan import read_budget
from pipeline.rules.errors import PipelineError
from pipeline.rules.runs import check_selection, parse_runs, parse_until, select_runs
from pipeline.stores.table import describe_table
from spark import events as ev
from spark import maintenance as mt
from spark.dynamo import WriteError, dynamodb_client
from spark.manifest import ATTRIBUTES, KEY_SCHEMA
from spark.ratelimit import TokenBucket
from tests.test_writer import FakeClock

TABLE = "manifest"
R1, R2 = "2026-05-01-00-00-00", "2026-05-01-01-00-00"


class CountingBucket(TokenBucket):
    """A token bucket that remembers every take: what a budget is charged."""

    def __init__(self, rate: float = 100_000):
        super().__init__(rate)
        self.taken = []
        self.lock = threading.Lock()

    def take(self, n: float = 1.0) -> None:
        with self.lock:
            self.taken.append(n)
        super().take(n)


def create_table():
    """The manifest table, through whatever endpoint the environment names (moto, or a stand-in before it)."""
    client = boto3.client("dynamodb", region_name="us-east-1")
    client.create_table(TableName=TABLE, KeySchema=KEY_SCHEMA, AttributeDefinitions=ATTRIBUTES,
                        BillingMode="PAY_PER_REQUEST")
    return client


@pytest.fixture
def table(moto_reset):
    return create_table()


def put(client, key: str, etl: int, fingerprint: str = "f") -> None:
    client.put_item(TableName=TABLE, Item={"eventId": {"S": key}, "fingerprint": {"S": fingerprint},
                                           "etlTime": {"N": str(etl)}, "ttl": {"N": str(etl + 15_552_000)}})


def state(client) -> dict:
    items = {}
    for page in client.get_paginator("scan").paginate(TableName=TABLE, ConsistentRead=True):
        for it in page["Items"]:
            items[(it["eventId"]["S"], it["fingerprint"]["S"])] = int(it["etlTime"]["N"])
    return items


def delete(keys, **kwargs):
    kwargs.setdefault("limiter", CountingBucket())
    return mt.delete_items(keys, client=dynamodb_client("us-east-1", None), table=TABLE, **kwargs)


def check(keys, **kwargs):
    kwargs.setdefault("read_limiter", CountingBucket())
    return mt.check_items(keys, client=dynamodb_client("us-east-1", None), table=TABLE, **kwargs)


# --- pure rules ---------------------------------------------------------------------------------------------

def test_split_copies_counts_duplicates_and_expiry():
    copies = ((100, R2, 3), (50, R1, 1))
    assert ev.split_copies(copies) == ([(50, R1), (100, R2)], [(R2, "in_run_duplicates", 2)])
    # ttl of etl 50 + 1 day is past at 50 + 86400: expired, no target; etl 100 is not (yet)
    targets, settled = ev.split_copies(copies, ttl_days=1, now=50 + 86400)
    assert targets == [(100, R2)]
    assert sorted(settled) == [(R1, "expired", 1), (R2, "in_run_duplicates", 2)]


def test_sample_is_the_k_smallest_hashes_whatever_the_order_and_split():
    keys = [(f"e{i}", f"f{i}") for i in range(200)]
    copies = {k: ((10, R1, 1), (20, R2, 2)) for k in keys}
    entries = [e for k in keys for e in mt.sample_entries(k[0], k[1], copies[k], 180, 0.0, seed=3)]
    random.Random(1).shuffle(entries)

    def fold(part):
        acc = {R1: mt.empty_sample(), R2: mt.empty_sample()}
        for run, entry in part:
            mt.sample_add(7, acc[run], entry)
        return acc

    halves = fold(entries[:150]), fold(entries[150:])
    merged = {run: mt.sample_merge(7, halves[0][run], halves[1][run]) for run in (R1, R2)}
    for run in (R1, R2):
        want = sorted(keys, key=lambda k: mt.sample_hash(3, run, *k))[:7]
        got = sorted((-h, e, f) for h, e, f, _ in merged[run]["heap"])
        assert [(e, f) for _, e, f in got] == want
        assert merged[run]["eligible"] == 200
    assert merged[R2]["in_run_duplicates"] == 200 and merged[R1]["in_run_duplicates"] == 0
    drawn = mt.sampled_keys(merged)
    assert all(len(c) in (1, 2) for c in drawn.values()) and sum(len(c) for c in drawn.values()) == 14
    # another seed draws another sample; the hash does not depend on the process (no salted str hash)
    assert mt.sample_hash(3, R1, "e1", "f1") != mt.sample_hash(4, R1, "e1", "f1")
    assert mt.sample_hash(0, R1, "e", "f") == 16288963676479534912


# --- clean --------------------------------------------------------------------------------------------------

def test_conditional_deletes_tell_deleted_not_present_and_kept(table):
    put(table, "ours", 100)
    put(table, "older", 50)
    put(table, "newer", 200)
    put(table, "first-of-two", 100)
    put(table, "second-of-two", 150)
    put(table, "between-two", 120)
    put(table, "untouched", 100, fingerprint="other")  # same etlTime, another key: never named, never deleted
    limiter = CountingBucket()
    keys = [
        ("ours", "f", [(100, R1)]),
        ("absent", "f", [(100, R1)]),
        ("older", "f", [(100, R1)]),
        ("newer", "f", [(100, R1)]),
        ("first-of-two", "f", [(100, R1), (150, R2)]),
        ("second-of-two", "f", [(100, R1), (150, R2)]),  # R1's condition fails naming R2's etlTime: R2's turn
        ("between-two", "f", [(100, R1), (150, R2)]),
    ]
    counts = delete(keys, limiter=limiter, concurrency=3)
    assert state(table) == {("older", "f"): 50, ("newer", "f"): 200, ("between-two", "f"): 120,
                            ("untouched", "other"): 100}
    assert counts[R1] == {"deleted": 2, "not_present": 1, "kept_older": 1, "kept_newer": 3, "delete_failures": 0,
                          "throttle_retries": 0, "wcu_consumed": 7}
    assert counts[R2] == {"deleted": 1, "not_present": 1, "kept_older": 1, "kept_newer": 0, "delete_failures": 0,
                          "throttle_retries": 0, "wcu_consumed": 1}
    assert limiter.taken == [1] * 8  # one WCU per DeleteItem, and no more requests than that

    again = delete(keys)  # a clean repeated finds nothing more to delete and touches nothing else
    assert again[R1]["deleted"] == again[R2]["deleted"] == 0
    assert again[R1]["not_present"] == 4 and again[R1]["kept_older"] == 1 and again[R1]["kept_newer"] == 2
    assert len(state(table)) == 4


def test_deletes_survive_a_throttling_storm(standin):
    client = create_table()  # straight to moto: only the deletes go through the stand-in
    for i in range(60):
        put(client, f"e{i}", 100 if i % 3 else 90)
    url = standin(200, throttle_fraction=0.5, seed=5)
    keys = [(f"e{i}", "f", [(100, R1)]) for i in range(60)]
    counts = delete(keys, sleep=lambda s: None)[R1]
    assert counts["deleted"] == 40 and counts["kept_older"] == 20 and counts["delete_failures"] == 0
    assert counts["throttle_retries"] > 0 and fetch_stats(url)["throttled_requests"] > 0
    assert set(state(client)) == {(f"e{i}", "f") for i in range(60) if i % 3 == 0}


def test_a_delete_throttled_past_the_deadline_is_a_failure_not_an_error(standin):
    client = create_table()
    put(client, "e", 100)
    standin(1000, throttle_fraction=1.0, seed=1)
    clock = FakeClock()
    counts = delete([("e", "f", [(100, R1), (150, R2)])], clock=clock, sleep=clock.sleep, max_retry_seconds=2.0)
    assert counts[R1]["delete_failures"] == counts[R2]["delete_failures"] == 1
    assert counts[R1]["throttle_retries"] > 0 and counts[R1]["deleted"] == 0
    assert state(client) == {("e", "f"): 100}


def test_a_missing_table_is_one_line(moto_reset):
    with pytest.raises(WriteError) as raised:
        delete([("e", "f", [(100, R1)])])
    assert "ResourceNotFoundException" in str(raised.value) and "\n" not in str(raised.value)


# --- verify -------------------------------------------------------------------------------------------------

def test_reads_tell_found_missing_and_late_and_never_write(table):
    for i in range(130):  # more than one BatchGetItem
        put(table, f"e{i}", 100)
    put(table, "late", 200)
    table.put_item(TableName=TABLE, Item={"eventId": {"S": "no-etl"}, "fingerprint": {"S": "f"}})
    before = state_with_attributes(table)
    keys = [(f"e{i}", "f", [(100, R1)]) for i in range(130)]
    keys += [(f"gone{i}", "f", [(100, R1), (150, R2)] if i < 8 else [(150, R2)]) for i in range(12)]
    keys += [("late", "f", [(100, R1), (250, R2)]), ("no-etl", "f", [(100, R2)])]
    limiter = CountingBucket()
    result = check(keys, read_limiter=limiter, concurrency=2)
    assert result.counts[R1] == {"found": 130, "missing": 8, "later_etl_time": 1, "read_failures": 0,
                                 "throttle_retries": 0, "rcu_consumed": 139}
    assert result.counts[R2] == {"found": 2, "missing": 12, "later_etl_time": 0, "read_failures": 0,
                                 "throttle_retries": 0, "rcu_consumed": 5}
    assert sorted(result.examples[R1]) == sorted([f"gone{i} f: absent" for i in range(8)]
                                                 + ["late f: etlTime 200 after the run's 100"])
    assert len(result.examples[R2]) == 10  # at most 10 examples per run
    assert sum(limiter.taken) == len(keys)  # 1 RCU per key read, nothing else
    assert state_with_attributes(table) == before


def state_with_attributes(client) -> list:
    return sorted(str(sorted(it.items())) for page in client.get_paginator("scan").paginate(TableName=TABLE)
                  for it in page["Items"])


def test_throttled_reads_are_retried(standin):
    client = create_table()
    for i in range(150):
        put(client, f"e{i}", 100)
    url = standin(1000, read_throttle_fraction=0.5, seed=2)
    keys = [(f"e{i}", "f", [(100, R1)]) for i in range(150)]
    counts = check(keys, sleep=lambda s: None).counts[R1]
    assert counts["found"] == 150 and counts["read_failures"] == 0 and counts["throttle_retries"] > 0
    assert fetch_stats(url)["throttled_keys"] > 0


def test_a_read_throttled_past_the_deadline_is_a_read_failure(standin):
    client = create_table()
    put(client, "e", 100)
    standin(1000, read_throttle_fraction=1.0, seed=2)
    clock = FakeClock()
    counts = check([("e", "f", [(100, R1), (90, R2)])], clock=clock, sleep=clock.sleep, max_retry_seconds=2.0).counts
    assert counts[R1]["read_failures"] == counts[R2]["read_failures"] == 1
    assert counts[R1]["found"] == counts[R2]["later_etl_time"] == 0 and counts[R1]["throttle_retries"] > 0


# --- selecting runs and the read budget (pipeline side) -----------------------------------------------------

def test_run_selection_bounds_are_inclusive_and_a_bare_until_date_is_its_whole_day():
    archive = ["2026-05-01-00-00-00", "2026-05-01-23-00-00", "2026-05-02-00-00-00", "2026-05-03-12-00-00"]
    assert parse_until("2026-05-01") == "2026-05-01-23-59-59"
    assert parse_runs(" run=2026-05-02-00-00-00, 2026-05-01-00-00-00 2026-05-02-00-00-00") == [
        "2026-05-01-00-00-00", "2026-05-02-00-00-00"]
    given, until = check_selection("", "2026-05-01-23-00-00", "2026-05-02")
    assert select_runs(archive, "s3://a/b", given, "2026-05-01-23-00-00", until) == archive[1:3]
    assert select_runs(archive, "s3://a/b", [], None, parse_until("2026-05-01")) == archive[:2]
    # without --runs a verify chooses among the marked runs
    assert select_runs(archive, "s3://a/b", [], None, None, default={"2026-05-03-12-00-00"}) == archive[3:]
    with pytest.raises(PipelineError, match="marked runs not in the enriched archive s3://a/b.*2020-01-01-00-00-00"):
        select_runs(archive, "s3://a/b", [], None, None, default={"2020-01-01-00-00-00"})
    with pytest.raises(PipelineError, match=r"^--until 2026-05-01-23-59-59 is before --since 2026-05-02-00-00-00$"):
        check_selection("", "2026-05-02-00-00-00", "2026-05-01")
    with pytest.raises(PipelineError, match="--runs names no run"):
        check_selection(" , ", None, "")


def test_read_budget_is_asked_or_a_share_of_provisioned_rcu(moto_reset):
    client = boto3.client("dynamodb", region_name="us-east-1")
    client.create_table(TableName=TABLE, KeySchema=KEY_SCHEMA, AttributeDefinitions=ATTRIBUTES,
                        ProvisionedThroughput={"ReadCapacityUnits": 400, "WriteCapacityUnits": 50})
    info = describe_table(client, TABLE, "us-east-1")
    assert read_budget(client, info, 0.0, 0.5, 1000.0) == 200.0
    assert read_budget(client, info, 75.0, 0.5, 1000.0) == 75.0
    with pytest.raises(PipelineError, match="--max-read-capacity must be positive"):
        read_budget(client, info, -1.0, 0.5, 1000.0)
