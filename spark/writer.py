"""Manifest items into DynamoDB at a given WCU/s: two write modes, backoff on throttling, exact per-run counts.

Both modes leave the same table: each (eventId, fingerprint) keeps the EARLIEST etlTime, and an item already there
with an earlier or equal etlTime is never overwritten.
- conditional: one conditional PutItem per item, as the shredders write. ~2 ms of boto3 CPU per item, so a thread
  pool hides network latency but the GIL caps a process at a few hundred items/s.
- fast: BatchGetItem (strongly consistent, so a write a moment ago is seen) to skip keys already present with an
  earlier or equal etlTime, then unconditional BatchWriteItem for the rest. Far less CPU per item, but it assumes
  that no other writer puts an EARLIER etlTime for the same key between our read and our write.

Retries are ours, not botocore's: throttling (the codes below, UnprocessedItems, UnprocessedKeys) and transient
faults (5xx, dropped connections) back off exponentially with full jitter, capped; an item still failing after
`max_retry_seconds` is counted as a write failure, never raised. A write whose response was lost is sent again:
harmless (the item is the same), but it may then count as already_present instead of written.
WCU are counted by the client (1 per accepted write or failed condition per started KB) rather than read from
ConsumedCapacity, which moto reports as 1.0 per BatchWriteItem request whatever its size.
"""
from __future__ import annotations

import itertools
import platform
import random
import re
import threading
import time
from typing import Callable, Dict, Iterable, List, NamedTuple, Optional

from botocore.exceptions import ClientError, HTTPClientError
from botocore.exceptions import ConnectionError as BotoConnectionError

from spark.ratelimit import TokenBucket
from spark.spec import WRITE_MODES

CONDITION = "attribute_not_exists(eventId) OR etlTime > :etl"
THROTTLE_CODES = frozenset({"ProvisionedThroughputExceededException", "ThrottlingException", "RequestLimitExceeded"})
TRANSIENT_CODES = frozenset({"InternalServerError", "InternalFailure", "ServiceUnavailable",
                             "TransactionConflictException"})
BATCH_WRITE_SIZE = 25  # DynamoDB's limit per BatchWriteItem
BATCH_GET_SIZE = 100  # DynamoDB's limit per BatchGetItem
CONDITIONAL_CHUNK = 32  # items a conditional-mode thread takes from the shared input at once
BASE_DELAY = 0.05
MAX_DELAY = 5.0
COUNT_NAMES = ("written", "already_present", "write_failures", "throttle_retries", "wcu_consumed")
_WRITTEN, _PRESENT, _FAILED, _RETRIES, _WCU = range(5)
THROTTLE, TRANSIENT = "throttle", "transient"  # what TableRequests.retry_kind says of an error
USER_AGENT = f"snowplow-manifest-populator Python/{platform.python_version()}"  # botocore appends its own
_KEY_LIKE = re.compile(r"\b(?:AKIA|ASIA)[A-Z0-9]{16}\b")


class ManifestItem(NamedTuple):
    event_id: str
    fingerprint: str
    etl_time: int  # epoch seconds
    ttl: int  # epoch seconds
    run: str  # the run the item is counted for


class WriteError(RuntimeError):
    """A non-retryable DynamoDB error (missing table, no permission, invalid request); str() is one line."""


def item_attributes(item: ManifestItem) -> dict:
    """The item exactly as the shredders write it."""
    return {
        "eventId": {"S": item.event_id},
        "fingerprint": {"S": item.fingerprint},
        "etlTime": {"N": str(item.etl_time)},
        "ttl": {"N": str(item.ttl)},
    }


def dynamodb_client(region: str, credentials: Optional[dict], max_connections: int = 32,
                    endpoint_url: Optional[str] = None):
    """A DynamoDB client without botocore retries (write_items retries itself, within its budget).

    `credentials` is {"accessKeyId", "secretAccessKey"[, "sessionToken"]} or None for the default chain; the endpoint
    is `endpoint_url` or else AWS_ENDPOINT_URL(_DYNAMODB) as boto3 reads it. Parameter validation is off: the
    requests are ours and validating them costs CPU per item. (A client built from this one's `meta.config` would
    validate again: botocore leaves that setting out of it.) Clients cannot be pickled: create one per partition.
    A fixed User-Agent names this tool in the table's CloudTrail records, and spares botocore from assembling its
    default one on every request (about a tenth of a PutItem's client CPU).
    """
    import boto3
    from botocore.config import Config

    config = Config(
        retries={"total_max_attempts": 1, "mode": "standard"},
        parameter_validation=False,
        user_agent=USER_AGENT,
        max_pool_connections=max_connections,
        connect_timeout=10,
        read_timeout=30,
    )
    if credentials is None:
        session = boto3.session.Session(region_name=region)
    else:
        if not credentials.get("accessKeyId") or not credentials.get("secretAccessKey"):
            raise ValueError("DynamoDB credentials must hold accessKeyId and secretAccessKey")
        session = boto3.session.Session(
            aws_access_key_id=credentials["accessKeyId"],
            aws_secret_access_key=credentials["secretAccessKey"],
            aws_session_token=credentials.get("sessionToken"),
            region_name=region,
        )
    return session.client("dynamodb", config=config, endpoint_url=endpoint_url)


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
    read_limiter: Optional[TokenBucket] = None,
) -> Dict[str, Dict[str, int]]:
    """Write `items` (duplicates already collapsed by the caller); counts per run id, each item counted once.

    `limiter` is taken for every write request before it is sent (1 per PutItem, the batch size per BatchWriteItem,
    retries included). Fast mode's strongly consistent reads cost 1 RCU per key and are not WCU: they are paced by
    `read_limiter` when one is given, otherwise only by the table's own throttling.
    `throttle_retries` counts item writes (and key reads) sent again after throttling. Raises WriteError for a
    non-retryable error; an error raised by `items` itself propagates as it is.
    """
    if mode not in WRITE_MODES:
        raise ValueError(f"write mode must be one of {', '.join(WRITE_MODES)}, not {mode!r}")
    writer = TableRequests(client, table, limiter, read_limiter, max_retry_seconds, clock, sleep)
    handle = writer.put_conditional_chunk if mode == "conditional" else writer.write_chunk
    chunk_size = CONDITIONAL_CHUNK if mode == "conditional" else BATCH_GET_SIZE
    totals: Dict[str, Dict[str, int]] = {}
    for tally in in_threads(items, handle, chunk_size, concurrency):
        for run, row in tally.items():
            counts = totals.setdefault(run, dict.fromkeys(COUNT_NAMES, 0))
            for name, value in zip(COUNT_NAMES, row):
                counts[name] += value
    return totals


def in_threads(items: Iterable, handle: Callable[[list, dict], None], chunk_size: int, concurrency: int) -> List[dict]:
    """Hand `items` in chunks to `concurrency` threads calling handle(chunk, tally), each with a tally of its own.

    Threads hide DynamoDB's latency (boto3 waits outside the GIL). The first error stops every thread and is raised
    here; otherwise the tallies are returned for the caller to add up.
    """
    source = iter(items)
    source_lock = threading.Lock()
    stop = threading.Event()
    errors: List[BaseException] = []
    tallies: List[dict] = []

    def work() -> None:
        tally: dict = {}
        tallies.append(tally)
        try:
            while not stop.is_set():
                with source_lock:
                    chunk = list(itertools.islice(source, chunk_size))
                if not chunk:
                    return
                handle(chunk, tally)
        except BaseException as e:  # noqa: BLE001 - handed to the calling thread below
            errors.append(e)
            stop.set()

    if concurrency <= 1:
        work()
    else:
        threads = [threading.Thread(target=work, name=f"dynamodb-writer-{i}", daemon=True)
                   for i in range(concurrency)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    if errors:
        raise errors[0]
    return tallies


def _wcu(item: ManifestItem) -> int:
    """Write units of one item: 1 per started KB (attribute names and two numbers take ~40 bytes)."""
    return 1 + (len(item.event_id) + len(item.fingerprint) + 40) // 1024


def _row(tally: Dict[str, list], run: str) -> list:
    row = tally.get(run)
    if row is None:
        row = tally[run] = [0, 0, 0, 0, 0]
    return row


def _one_line(text: str) -> str:
    return _KEY_LIKE.sub("<redacted>", " ".join(str(text).split()))


class TableRequests:
    """What every request of one call shares: client, table, budgets, clock and jitter (spark.maintenance too)."""

    def __init__(self, client, table, limiter, read_limiter, max_retry_seconds, clock, sleep):
        self.client = client
        self.table = table
        self.limiter = limiter
        self.read_limiter = read_limiter
        self.max_retry_seconds = max_retry_seconds
        self.clock = clock
        self.sleep = sleep
        self.rng = random.Random()
        names = {"#e": "eventId", "#f": "fingerprint", "#t": "etlTime"}
        self.read_spec = {"ProjectionExpression": "#e, #f, #t", "ExpressionAttributeNames": names,
                          "ConsistentRead": True}

    def backoff(self, attempt: int) -> None:
        self.sleep(self.rng.uniform(0.0, min(MAX_DELAY, BASE_DELAY * (2 ** min(attempt, 16)))))

    def retry_kind(self, exc: BaseException, operation: str) -> str:
        """THROTTLE or TRANSIENT for errors worth retrying; raises WriteError (or `exc`) for the rest."""
        if isinstance(exc, ClientError):
            error = exc.response.get("Error", {})
            code = error.get("Code", "")
            if code in THROTTLE_CODES:
                return THROTTLE
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0
            if code in TRANSIENT_CODES or status >= 500:
                return TRANSIENT
            message = f"DynamoDB {operation} on table {self.table} failed: {code}: {error.get('Message', '')}"
            raise WriteError(_one_line(message)) from None
        if isinstance(exc, (BotoConnectionError, HTTPClientError)):
            return TRANSIENT
        raise exc

    # conditional mode

    def put_conditional_chunk(self, chunk: List[ManifestItem], tally: Dict[str, list]) -> None:
        for item in chunk:
            self.put_conditional(item, _row(tally, item.run))

    def put_conditional(self, item: ManifestItem, row: list) -> None:
        request = {
            "TableName": self.table,
            "Item": item_attributes(item),
            "ConditionExpression": CONDITION,
            "ExpressionAttributeValues": {":etl": {"N": str(item.etl_time)}},
        }
        wcu = _wcu(item)
        started = None
        attempt = 0
        while True:
            self.limiter.take(wcu)
            if started is None:
                started = self.clock()
            try:
                self.client.put_item(**request)
                row[_WRITTEN] += 1
                row[_WCU] += wcu
                return
            except Exception as e:  # noqa: BLE001 - sorted by retry_kind
                if isinstance(e, ClientError) and e.response.get("Error", {}).get("Code") == \
                        "ConditionalCheckFailedException":
                    row[_PRESENT] += 1
                    row[_WCU] += wcu  # a failed condition costs the write all the same
                    return
                kind = self.retry_kind(e, "PutItem")
            if self.clock() - started >= self.max_retry_seconds:
                row[_FAILED] += 1
                return
            if kind == THROTTLE:
                row[_RETRIES] += 1
            self.backoff(attempt)
            attempt += 1

    # fast mode

    def write_chunk(self, chunk: List[ManifestItem], tally: Dict[str, list]) -> None:
        """Up to BATCH_GET_SIZE items: one read for all of them, then writes for those the table does not hold."""
        unique: Dict[tuple, ManifestItem] = {}
        for item in chunk:
            key = (item.event_id, item.fingerprint)
            kept = unique.get(key)
            if kept is None:
                unique[key] = item
                continue
            if item.etl_time < kept.etl_time:  # the earliest wins; the other counts as present
                unique[key], item = item, kept
            _row(tally, item.run)[_PRESENT] += 1
        existing, unread = self.read_existing(unique, tally)
        to_write = []
        for key, item in unique.items():
            if key in unread:
                _row(tally, item.run)[_FAILED] += 1
                continue
            etl = existing.get(key)
            if etl is None or etl > item.etl_time:
                to_write.append(item)
            else:
                _row(tally, item.run)[_PRESENT] += 1
        for i in range(0, len(to_write), BATCH_WRITE_SIZE):
            self.write_batch(to_write[i:i + BATCH_WRITE_SIZE], tally)

    def read_existing(self, unique: Dict[tuple, ManifestItem], tally: Dict[str, list]):
        """etlTime of the keys the table holds (-1 when it lacks one: never overwritten), and the keys left unread."""
        keys = [{"eventId": {"S": k[0]}, "fingerprint": {"S": k[1]}} for k in unique]
        existing: Dict[tuple, int] = {}
        started = None
        attempt = 0
        while keys:
            before = len(keys)
            if self.read_limiter is not None:
                self.read_limiter.take(len(keys))
            if started is None:
                started = self.clock()
            request = dict(self.read_spec, Keys=keys)
            try:
                response = self.client.batch_get_item(RequestItems={self.table: request})
                for found in response.get("Responses", {}).get(self.table, ()):
                    etl = found.get("etlTime")
                    existing[(found["eventId"]["S"], found["fingerprint"]["S"])] = int(etl["N"]) if etl else -1
                keys = response.get("UnprocessedKeys", {}).get(self.table, {}).get("Keys", [])
                kind = THROTTLE
            except Exception as e:  # noqa: BLE001 - sorted by retry_kind
                kind = self.retry_kind(e, "BatchGetItem")
            if not keys:
                break
            if self.clock() - started >= self.max_retry_seconds:
                return existing, {(k["eventId"]["S"], k["fingerprint"]["S"]) for k in keys}
            if kind == THROTTLE:
                for k in keys:
                    _row(tally, unique[(k["eventId"]["S"], k["fingerprint"]["S"])].run)[_RETRIES] += 1
            attempt = 0 if len(keys) < before else attempt + 1  # progress resets the backoff
            self.backoff(attempt)
        return existing, frozenset()

    def write_batch(self, batch: List[ManifestItem], tally: Dict[str, list]) -> None:
        """At most BATCH_WRITE_SIZE items of distinct keys; unprocessed ones are sent again until accepted or late."""
        pending = batch
        started = None
        attempt = 0
        while pending:
            wcu = sum(_wcu(item) for item in pending)
            self.limiter.take(wcu)
            if started is None:
                started = self.clock()
            requests = [{"PutRequest": {"Item": item_attributes(item)}} for item in pending]
            try:
                response = self.client.batch_write_item(RequestItems={self.table: requests})
                left = response.get("UnprocessedItems", {}).get(self.table)
                kind = THROTTLE
            except Exception as e:  # noqa: BLE001 - sorted by retry_kind
                left = requests
                kind = self.retry_kind(e, "BatchWriteItem")
            if not left:
                accepted, pending = pending, []
            elif left is requests:
                accepted = []
            else:
                left_keys = {(r["PutRequest"]["Item"]["eventId"]["S"], r["PutRequest"]["Item"]["fingerprint"]["S"])
                             for r in left}
                accepted = [it for it in pending if (it.event_id, it.fingerprint) not in left_keys]
                pending = [it for it in pending if (it.event_id, it.fingerprint) in left_keys]
            for item in accepted:
                row = _row(tally, item.run)
                row[_WRITTEN] += 1
                row[_WCU] += _wcu(item)
            if not pending:
                return
            if self.clock() - started >= self.max_retry_seconds:
                for item in pending:
                    _row(tally, item.run)[_FAILED] += 1
                return
            if kind == THROTTLE:
                for item in pending:
                    _row(tally, item.run)[_RETRIES] += 1
            attempt = 0 if accepted else attempt + 1  # a round that got items through is not backed off further
            self.backoff(attempt)
