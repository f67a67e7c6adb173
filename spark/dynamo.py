"""DynamoDB requests as the job sends them: the client, the threads, the retry loop, the budgets and the tallies.

The write modes (spark.writer) and the maintenance modes (spark.maintenance) are built on this layer alone, so
throttling, faults and budgets are handled alike whatever a request does.

Retries are ours, not botocore's: throttling (the codes below, UnprocessedItems, UnprocessedKeys) and transient
faults (5xx, dropped connections) back off exponentially with full jitter, capped; what is still left after
`max_retry_seconds` is the caller's failure to count, never raised. Any other error is a WriteError, one line.
Counts are kept per thread and per run (a Tally) and added up once the threads are done.
"""
from __future__ import annotations

import itertools
import platform
import random
import threading
import time
from typing import Callable, Dict, FrozenSet, Iterable, List, Optional, Tuple

from botocore.exceptions import ClientError, HTTPClientError
from botocore.exceptions import ConnectionError as BotoConnectionError

from spark.errors import error_code
from spark.manifest import ETL_TIME, EVENT_ID, FINGERPRINT, Key, ManifestItem, key_attributes, key_of
from spark.ratelimit import TokenBucket
from spark.refusals import DEFAULT_CHAIN, Told, explained, iam_action, identity_of, refusal, table_resource, watch
from spark.report import MAX_EXAMPLES

THROTTLE_CODES = frozenset({"ProvisionedThroughputExceededException", "ThrottlingException", "RequestLimitExceeded"})
TRANSIENT_CODES = frozenset({"InternalServerError", "InternalFailure", "ServiceUnavailable",
                             "TransactionConflictException"})
CONDITION_FAILED = "ConditionalCheckFailedException"
BATCH_GET_SIZE = 100  # DynamoDB's limit per BatchGetItem
ITEM_CHUNK = 32  # items (keys) a thread takes from the shared input at once where each has a request of its own
BASE_DELAY = 0.05
MAX_DELAY = 5.0
MAX_CONNECTIONS = 32  # connections a client pools: more than the threads of any task
THROTTLE, TRANSIENT = "throttle", "transient"  # what TableRequests.retry_kind says of an error
USER_AGENT = f"snowplow-manifest-populator Python/{platform.python_version()}"  # botocore appends its own


class WriteError(Told):
    """A non-retryable DynamoDB error of any request (missing table, no permission, invalid request); one line
    naming the identity, the IAM action and the table (a refusal, except for an invalid request)."""


def dynamodb_client(region: str, credentials: Optional[dict], endpoint_url: Optional[str] = None,
                    identity: str = DEFAULT_CHAIN):
    """A DynamoDB client without botocore retries (TableRequests retries itself, within its budget).

    `credentials` is {"accessKeyId", "secretAccessKey"[, "sessionToken"]} or None for the default chain; the endpoint
    is `endpoint_url` or else AWS_ENDPOINT_URL(_DYNAMODB) as boto3 reads it. Parameter validation is off: the
    requests are ours and validating them costs CPU per item. (A client built from this one's `meta.config` would
    validate again: botocore leaves that setting out of it.) Clients cannot be pickled: create one per partition.
    `identity` is the label of who `credentials` are, for the one line a refusal is told in (spark.refusals).
    A fixed User-Agent names this tool in the table's CloudTrail records, and spares botocore from assembling its
    default one on every request (about a tenth of a PutItem's client CPU).
    """
    # boto3 is imported where a client is made: a task that reads local files only never pays its ~0.15 s import.
    import boto3
    from botocore.config import Config

    config = Config(
        retries={"total_max_attempts": 1, "mode": "standard"},
        parameter_validation=False,
        user_agent=USER_AGENT,
        max_pool_connections=MAX_CONNECTIONS,
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
    return watch(session.client("dynamodb", config=config, endpoint_url=endpoint_url), identity, fail_fast=False)


# --- tallies ------------------------------------------------------------------------------------------------

class Tally:
    """One thread's counts per run ({run: {name: n}}) and up to MAX_EXAMPLES example lines per run."""

    __slots__ = ("counts", "examples")

    def __init__(self) -> None:
        self.counts: Dict[str, Dict[str, int]] = {}
        self.examples: Dict[str, List[str]] = {}

    def add(self, run: str, name: str, n: int = 1) -> None:
        if n:
            row = self.counts.get(run)
            if row is None:
                row = self.counts[run] = {}
            row[name] = row.get(name, 0) + n

    def example(self, run: str, text: str) -> None:
        kept = self.examples.setdefault(run, [])
        if len(kept) < MAX_EXAMPLES:
            kept.append(text)


def add_up(tallies: Iterable[Tally], names: Tuple[str, ...]) -> Dict[str, Dict[str, int]]:
    """The threads' counts per run, every one of `names` present."""
    totals: Dict[str, Dict[str, int]] = {}
    for tally in tallies:
        for run, row in tally.counts.items():
            counts = totals.setdefault(run, dict.fromkeys(names, 0))
            for name, value in row.items():
                counts[name] += value
    return totals


def examples_of(tallies: Iterable[Tally]) -> Dict[str, List[str]]:
    """The threads' examples per run, at most MAX_EXAMPLES each."""
    examples: Dict[str, List[str]] = {}
    for tally in tallies:
        for run, kept in tally.examples.items():
            examples[run] = (examples.get(run, []) + kept)[:MAX_EXAMPLES]
    return examples


def in_threads(items: Iterable, handle: Callable[[list, Tally], None], chunk_size: int,
               concurrency: int) -> List[Tally]:
    """Hand `items` in chunks to `concurrency` threads calling handle(chunk, tally), each with a Tally of its own.

    Threads hide DynamoDB's latency (boto3 waits outside the GIL). The first error stops every thread and is raised
    here; otherwise the tallies are returned for the caller to add up.
    """
    source = iter(items)
    source_lock = threading.Lock()
    stop = threading.Event()
    errors: List[BaseException] = []
    tallies: List[Tally] = []

    def work() -> None:
        tally = Tally()
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


def item_wcu(item: ManifestItem) -> int:
    """Write units of one item: 1 per started KB (attribute names and two numbers take ~40 bytes)."""
    return 1 + (len(item.event_id) + len(item.fingerprint) + 40) // 1024


# --- requests -----------------------------------------------------------------------------------------------

class TableRequests:
    """What every request of one call shares: client, table, budgets, clock and jitter, and the one retry loop."""

    def __init__(self, client, table: str, limiter: Optional[TokenBucket], read_limiter: Optional[TokenBucket],
                 max_retry_seconds: float, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep):
        self.client = client
        self.table = table
        self.limiter = limiter  # WCU, taken before each write request
        self.read_limiter = read_limiter  # RCU, taken before each read request; None: paced by the table alone
        self.max_retry_seconds = max_retry_seconds
        self.clock = clock
        self.sleep = sleep
        self.rng = random.Random()
        names = {"#e": EVENT_ID, "#f": FINGERPRINT, "#t": ETL_TIME}
        self.read_spec = {"ProjectionExpression": "#e, #f, #t", "ExpressionAttributeNames": names,
                          "ConsistentRead": True}

    def backoff(self, attempt: int) -> None:
        self.sleep(self.rng.uniform(0.0, min(MAX_DELAY, BASE_DELAY * (2 ** min(attempt, 16)))))

    def retry_kind(self, exc: BaseException, operation: str) -> str:
        """THROTTLE or TRANSIENT for errors worth retrying; raises WriteError (or `exc`) for the rest."""
        if isinstance(exc, ClientError):
            code = error_code(exc)
            if code in THROTTLE_CODES:
                return THROTTLE
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0
            if code in TRANSIENT_CODES or status >= 500:
                return TRANSIENT
            context = (identity_of(self.client), iam_action("dynamodb", operation),
                       table_resource(self.table, self.client.meta.region_name))
            found = refusal(exc, *context)
            raise WriteError(found.line() if found else explained(exc, *context), found is not None) from None
        if isinstance(exc, (BotoConnectionError, HTTPClientError)):
            return TRANSIENT
        raise exc

    def send(self, operation: str, limiter: Optional[TokenBucket], units: Callable[[], float], size: int,
             attempt: Callable[[], int], throttled: Callable[[], None]) -> bool:
        """Send one request until nothing of it is left: True, or False once `max_retry_seconds` have passed.

        `attempt()` sends what is left of the request's `size` things and returns how many still are (0: done); a
        retryable error leaves them all. Before each attempt `limiter` (unless None) is taken `units()`. A round
        that left things over for throttling calls `throttled()` to count the retries; a round that got some of
        them through is not backed off further.
        """
        started = None
        tries = 0
        left = size
        while True:
            if limiter is not None:
                limiter.take(units())
            if started is None:
                started = self.clock()
            before = left
            try:
                left = attempt()
                kind = THROTTLE  # what a response leaves unprocessed was throttled
            except Exception as e:  # noqa: BLE001 - sorted by retry_kind
                kind = self.retry_kind(e, operation)
            if not left:
                return True
            if self.clock() - started >= self.max_retry_seconds:
                return False
            if kind == THROTTLE:
                throttled()
            tries = 0 if left < before else tries + 1
            self.backoff(tries)

    def read_keys(self, runs: Dict[Key, str], tally: Tally) -> Tuple[Dict[Key, int], FrozenSet[Key]]:
        """etlTime of the keys the table holds (-1 when it lacks one: never overwritten), and the keys left unread.

        One strongly consistent BatchGetItem (up to BATCH_GET_SIZE keys; a write a moment ago is seen), 1 RCU per
        key from `read_limiter`; `runs` names the run a key's throttled reads are counted for.
        """
        pending = [key_attributes(*key) for key in runs]
        existing: Dict[Key, int] = {}
        if not pending:
            return existing, frozenset()

        def attempt() -> int:
            nonlocal pending
            request = dict(self.read_spec, Keys=pending)
            response = self.client.batch_get_item(RequestItems={self.table: request})
            for found in response.get("Responses", {}).get(self.table, ()):
                etl = found.get(ETL_TIME)
                existing[key_of(found)] = int(etl["N"]) if etl else -1
            pending = response.get("UnprocessedKeys", {}).get(self.table, {}).get("Keys", [])
            return len(pending)

        def throttled() -> None:
            for key in pending:
                tally.add(runs[key_of(key)], "throttle_retries")

        if self.send("BatchGetItem", self.read_limiter, lambda: len(pending), len(pending), attempt, throttled):
            return existing, frozenset()
        return existing, frozenset(key_of(key) for key in pending)
