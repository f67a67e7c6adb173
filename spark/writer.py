"""Manifest items into DynamoDB at a given WCU/s: the two write modes, with exact per-run counts.

Both modes leave the same table: each (eventId, fingerprint) keeps the EARLIEST etlTime, and an item already there
with an earlier or equal etlTime is never overwritten.
- conditional: one conditional PutItem per item, as the shredders write. ~2 ms of boto3 CPU per item, so a thread
  pool hides network latency but the GIL caps a process at a few hundred items/s.
- fast: BatchGetItem (strongly consistent, so a write a moment ago is seen) to skip keys already present with an
  earlier or equal etlTime, then unconditional BatchWriteItem for the rest. Far less CPU per item, but it assumes
  that no other writer puts an EARLIER etlTime for the same key between our read and our write.

Requests, retries and budgets are spark.dynamo's: an item still failing after `max_retry_seconds` is counted as a
write failure, never raised. A write whose response was lost is sent again: harmless (the item is the same), but it
may then count as already_present instead of written.
WCU are counted by the client (1 per accepted write or failed condition per started KB) rather than read from
ConsumedCapacity, which moto reports as 1.0 per BatchWriteItem request whatever its size.
"""
from __future__ import annotations

import time
from typing import Callable, Dict, Iterable, List

from botocore.exceptions import ClientError

from spark.dynamo import (
    BATCH_GET_SIZE,
    CONDITION_FAILED,
    ITEM_CHUNK,
    TableRequests,
    Tally,
    add_up,
    in_threads,
    item_wcu,
)
from spark.errors import error_code
from spark.manifest import Key, ManifestItem, item_attributes, key_of
from spark.ratelimit import TokenBucket
from spark.spec import WRITE_MODES

CONDITION = "attribute_not_exists(eventId) OR etlTime > :etl"
BATCH_WRITE_SIZE = 25  # DynamoDB's limit per BatchWriteItem
# A BatchWriteItem holds at most this long of its limiter's rate. At a low budget a full request is seconds of a
# task's share, and the tasks' requests, paced alike from the same start, arrive together: two tasks at 20 WCU/s
# each sent 50 items every 1.25 s to a table that saves up 40 (one second), which refused 9 of each 50 and wasted
# a tenth of the budget. A quarter second of every task's share at once always fits a second's savings.
REQUEST_SECONDS = 0.25
COUNT_NAMES = ("written", "already_present", "write_failures", "throttle_retries", "wcu_consumed")


def write_items(
    items: Iterable[ManifestItem],
    *,
    client,
    table: str,
    mode: str,
    limiter: TokenBucket,
    max_retry_seconds: float = 600.0,
    concurrency: int = 8,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> Dict[str, Dict[str, int]]:
    """Write `items` (duplicates already collapsed by the caller); COUNT_NAMES per run id, each item counted once.

    `limiter` is taken for every write request before it is sent (1 per PutItem, the batch size per BatchWriteItem,
    retries included). Fast mode's strongly consistent reads cost 1 RCU per key and are not WCU: they are paced by
    the table's own throttling. `throttle_retries` counts item writes (and key reads) sent again after throttling.
    Raises WriteError for a non-retryable error; an error raised by `items` itself propagates as it is.
    """
    if mode not in WRITE_MODES:
        raise ValueError(f"write mode must be one of {', '.join(WRITE_MODES)}, not {mode!r}")
    requests = TableRequests(client, table, limiter, None, max_retry_seconds, clock, sleep)
    if mode == "conditional":
        def handle(chunk: List[ManifestItem], tally: Tally) -> None:
            for item in chunk:
                put_conditional(requests, item, tally)

        chunk_size = ITEM_CHUNK
    else:
        def handle(chunk: List[ManifestItem], tally: Tally) -> None:
            write_chunk(requests, chunk, tally)

        chunk_size = BATCH_GET_SIZE
    return add_up(in_threads(items, handle, chunk_size, concurrency), COUNT_NAMES)


# --- conditional mode ---------------------------------------------------------------------------------------

def put_conditional(requests: TableRequests, item: ManifestItem, tally: Tally) -> None:
    """One PutItem that only replaces a later etlTime: written, already present, or a write failure."""
    request = {
        "TableName": requests.table,
        "Item": item_attributes(item),
        "ConditionExpression": CONDITION,
        "ExpressionAttributeValues": {":etl": {"N": str(item.etl_time)}},
    }
    wcu = item_wcu(item)
    run = item.run

    def attempt() -> int:
        try:
            requests.calls.call("PutItem", request)
            outcome = "written"
        except ClientError as e:
            if error_code(e) != CONDITION_FAILED:
                raise
            outcome = "already_present"
        tally.add(run, outcome)
        tally.add(run, "wcu_consumed", wcu)  # a failed condition costs the write all the same
        return 0

    if not requests.send("PutItem", requests.limiter, lambda: wcu, 1, attempt,
                         lambda: tally.add(run, "throttle_retries")):
        tally.add(run, "write_failures")


# --- fast mode ----------------------------------------------------------------------------------------------

def write_chunk(requests: TableRequests, chunk: List[ManifestItem], tally: Tally) -> None:
    """Up to BATCH_GET_SIZE items: one read for all of them, then writes for those the table does not hold."""
    unique: Dict[Key, ManifestItem] = {}
    for item in chunk:
        key = (item.event_id, item.fingerprint)
        kept = unique.get(key)
        if kept is None:
            unique[key] = item
            continue
        if item.etl_time < kept.etl_time:  # the earliest wins; the other counts as present
            unique[key], item = item, kept
        tally.add(item.run, "already_present")
    existing, unread = requests.read_keys({key: item.run for key, item in unique.items()}, tally)
    to_write = []
    for key, item in unique.items():
        if key in unread:
            tally.add(item.run, "write_failures")
            continue
        etl = existing.get(key)
        if etl is None or etl > item.etl_time:
            to_write.append(item)
        else:
            tally.add(item.run, "already_present")
    size = write_size(requests.limiter.rate)
    for i in range(0, len(to_write), size):
        write_batch(requests, to_write[i:i + size], tally)


def write_size(rate: float) -> int:
    """Items per BatchWriteItem at a limiter's `rate`: REQUEST_SECONDS of it, at least 1, at most BATCH_WRITE_SIZE."""
    return max(1, min(BATCH_WRITE_SIZE, int(rate * REQUEST_SECONDS)))


def write_batch(requests: TableRequests, batch: List[ManifestItem], tally: Tally) -> None:
    """At most BATCH_WRITE_SIZE items of distinct keys; unprocessed ones are sent again until accepted or late."""
    pending = batch

    def attempt() -> int:
        nonlocal pending
        sent = [{"PutRequest": {"Item": item_attributes(item)}} for item in pending]
        response = requests.calls.call("BatchWriteItem", {"RequestItems": {requests.table: sent}})
        left = response.get("UnprocessedItems", {}).get(requests.table)
        if left:
            left_keys = {key_of(r["PutRequest"]["Item"]) for r in left}
            accepted = [it for it in pending if (it.event_id, it.fingerprint) not in left_keys]
            pending = [it for it in pending if (it.event_id, it.fingerprint) in left_keys]
        else:
            accepted, pending = pending, []
        for item in accepted:
            tally.add(item.run, "written")
            tally.add(item.run, "wcu_consumed", item_wcu(item))
        return len(pending)

    def throttled() -> None:
        for item in pending:
            tally.add(item.run, "throttle_retries")

    if not requests.send("BatchWriteItem", requests.limiter, lambda: sum(item_wcu(it) for it in pending),
                         len(pending), attempt, throttled):
        for item in pending:
            tally.add(item.run, "write_failures")
