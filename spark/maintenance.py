"""Undoing and proving a backfill: conditional deletes of the items runs wrote, and reads that check them.

Both take keys the job has already collapsed: (event_id, fingerprint, targets), the targets being the (etlTime, run)
of each run of the batch holding the key, etlTime what the populator writes for that run (same parsing, same rule:
spark.events.split_copies). Requests, retries, backoff, budgets and tallies are spark.dynamo's, as for the writes.

- clean: DeleteItem conditioned on `etlTime = :etl`, returning the item when the condition fails, so one request
  tells deleted, not present, and kept (an item with another etlTime: another run's, never touched). A key's targets
  go earliest first; a failed condition naming another target's etlTime moves straight to that one. A DeleteItem
  costs 1 WCU whatever its outcome (manifest items are far below 1 KB).
- verify: BatchGetItem, strongly consistent (1 RCU per key): a proof must see writes made a moment ago.

A run's sample is its K eligible keys of smallest hash(seed, run, key): uniform, without replacement, and the same
on every attempt and in every process (Python's str hash is salted per process, so it is not used).
"""
from __future__ import annotations

import hashlib
import heapq
import time
from typing import Callable, Dict, Iterable, List, NamedTuple, Tuple

from botocore.exceptions import ClientError

from spark import dynamo
from spark.errors import error_code
from spark.events import Copies, split_copies
from spark.manifest import ETL_TIME, Key, key_attributes
from spark.ratelimit import TokenBucket

Target = Tuple[int, str]  # (etlTime the run writes for the key, run id)
KeyTargets = Tuple[str, str, List[Target]]  # (event_id, fingerprint, targets earliest first)
DELETE_CONDITION = "etlTime = :etl"
CLEAN_COUNTS = ("deleted", "not_present", "kept_older", "kept_newer", "delete_failures", "throttle_retries",
                "wcu_consumed")
VERIFY_COUNTS = ("found", "missing", "later_etl_time", "read_failures", "throttle_retries", "rcu_consumed")
_DELETED, _ABSENT, _OTHER, _FAILED = "deleted", "absent", "other", "failed"


class CheckResult(NamedTuple):
    counts: Dict[str, Dict[str, int]]  # per run, VERIFY_COUNTS
    examples: Dict[str, List[str]]  # per run, up to MAX_EXAMPLES missing or late keys (event ids, no personal data)


# --- the verify sample (pure) -------------------------------------------------------------------------------

def sample_hash(seed: int, run: str, event_id: str, fingerprint: str) -> int:
    """The key's place in the run's sample order: the same in every process."""
    text = f"{seed}\t{run}\t{event_id}\t{fingerprint}".encode()
    return int.from_bytes(hashlib.blake2b(text, digest_size=8).digest(), "big")


def empty_sample() -> dict:
    """A run's share of the verify sample while keys are drawn: its counts and its heap of (-hash, key, etlTime)."""
    return {"in_run_duplicates": 0, "expired": 0, "eligible": 0, "heap": []}


def sample_entries(event_id: str, fingerprint: str, copies: Copies, ttl_days: int, now: float,
                   seed: int) -> List[tuple]:
    """(run, entry) pairs of one key for sample_add: its counts per run, and each eligible copy as a candidate."""
    targets, settled = split_copies(copies, ttl_days, now)
    out: List[tuple] = [(run, (outcome, n)) for run, outcome, n in settled]
    out += [(run, ("eligible", (-sample_hash(seed, run, event_id, fingerprint), event_id, fingerprint, etl)))
            for etl, run in targets]
    return out


def sample_add(k: int, acc: dict, entry: tuple) -> dict:
    """Fold one entry into a run's sample, keeping its k candidates of smallest hash."""
    name, value = entry
    if name != "eligible":
        acc[name] += value
        return acc
    acc["eligible"] += 1
    heap = acc["heap"]
    if len(heap) < k:
        heapq.heappush(heap, value)
    elif value > heap[0]:  # a smaller hash than the largest kept
        heapq.heapreplace(heap, value)
    return acc


def sample_merge(k: int, a: dict, b: dict) -> dict:
    for name in ("in_run_duplicates", "expired", "eligible"):
        a[name] += b[name]
    a["eligible"] -= len(b["heap"])  # sample_add counts each candidate again
    for value in b["heap"]:
        sample_add(k, a, ("eligible", value))
    return a


def sampled_keys(samples: Dict[str, dict]) -> Dict[Tuple[str, str], Copies]:
    """The keys drawn for every run, as the job keys them: (event_id, fingerprint) -> ((etlTime, run, 1), ...)."""
    keys: Dict[Tuple[str, str], Copies] = {}
    for run in sorted(samples):
        for _, event_id, fingerprint, etl in samples[run]["heap"]:
            keys[(event_id, fingerprint)] = keys.get((event_id, fingerprint), ()) + ((etl, run, 1),)
    return keys


# --- clean: conditional deletes -----------------------------------------------------------------------------

def delete_items(
    keys: Iterable[KeyTargets],
    *,
    client,
    table: str,
    limiter: TokenBucket,
    max_retry_seconds: float = 600.0,
    concurrency: int = 8,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> Dict[str, Dict[str, int]]:
    """Delete the items the targets' runs wrote; per run CLEAN_COUNTS, each target counted once.

    `limiter` is taken 1 WCU per DeleteItem before it is sent, retries included. A target still throttled after
    `max_retry_seconds` is a delete failure, never raised; other errors raise dynamo.WriteError.
    """
    requests = dynamo.TableRequests(client, table, limiter, None, max_retry_seconds, clock, sleep)

    def handle(chunk: List[KeyTargets], tally: dynamo.Tally) -> None:
        for event_id, fingerprint, targets in chunk:
            _clean_key(requests, event_id, fingerprint, targets, tally)

    return dynamo.add_up(dynamo.in_threads(keys, handle, dynamo.ITEM_CHUNK, concurrency), CLEAN_COUNTS)


def _clean_key(requests: dynamo.TableRequests, event_id: str, fingerprint: str, targets: List[Target],
               tally: dynamo.Tally) -> None:
    etls = sorted({etl for etl, _ in targets})
    runs_of = {etl: [run for e, run in targets if e == etl] for etl in etls}

    def count(some: Iterable[int], name: str) -> None:
        for etl in some:
            for run in runs_of[etl]:
                tally.add(run, name)

    i = 0
    while i < len(etls):
        first = runs_of[etls[i]][0]
        outcome, old, retries = _delete(requests, event_id, fingerprint, etls[i])
        tally.add(first, "throttle_retries", retries)
        if outcome == _FAILED:
            count(etls[i:], "delete_failures")
            return
        tally.add(first, "wcu_consumed")
        if outcome == _DELETED:
            count(etls[i:i + 1], "deleted")
            count(etls[i + 1:], "not_present")  # gone with this delete
            return
        if outcome == _ABSENT:
            count(etls[i:], "not_present")
            return
        following = etls.index(old, i + 1) if old in etls[i + 1:] else len(etls)
        for etl in etls[i:following]:
            count([etl], "kept_older" if old < etl else "kept_newer")
        i = following  # the target whose etlTime the item holds, if any


def _delete(requests: dynamo.TableRequests, event_id: str, fingerprint: str, etl: int) -> Tuple[str, int, int]:
    """One conditional delete: (outcome, the item's etlTime when another (-1 if it has none), throttle retries)."""
    request = {
        "TableName": requests.table,
        "Key": key_attributes(event_id, fingerprint),
        "ConditionExpression": DELETE_CONDITION,
        "ExpressionAttributeValues": {":etl": {"N": str(etl)}},
        "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
    }
    answer = (_FAILED, 0)
    retries = 0

    def attempt() -> int:
        nonlocal answer
        try:
            requests.calls.call("DeleteItem", request)
            answer = (_DELETED, etl)
        except ClientError as e:
            if error_code(e) != dynamo.CONDITION_FAILED:
                raise
            item = e.response.get("Item")
            if not item:
                answer = (_ABSENT, 0)
            else:
                answer = (_OTHER, int(item[ETL_TIME]["N"]) if ETL_TIME in item else -1)
        return 0

    def throttled() -> None:
        nonlocal retries
        retries += 1

    requests.send("DeleteItem", requests.limiter, lambda: 1, 1, attempt, throttled)
    return answer + (retries,)


# --- verify: reads ------------------------------------------------------------------------------------------

def check_items(
    keys: Iterable[KeyTargets],
    *,
    client,
    table: str,
    read_limiter: TokenBucket,
    max_retry_seconds: float = 600.0,
    concurrency: int = 8,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> CheckResult:
    """Read every key and check each target: found (etlTime at or before the target's), missing, or later.

    `read_limiter` is taken 1 RCU per key of each BatchGetItem before it is sent, retries included. Keys still
    unread after `max_retry_seconds` are read failures; other errors raise dynamo.WriteError. Never writes.
    """
    requests = dynamo.TableRequests(client, table, None, read_limiter, max_retry_seconds, clock, sleep)

    def handle(chunk: List[KeyTargets], tally: dynamo.Tally) -> None:
        owners: Dict[Key, str] = {}  # the run a key's read is counted for: its earliest target's
        targets_of: Dict[Key, List[Target]] = {}
        for event_id, fingerprint, targets in chunk:
            key = (event_id, fingerprint)
            targets_of.setdefault(key, []).extend(targets)
            owners.setdefault(key, targets[0][1])
        existing, unread = requests.read_keys(owners, tally)
        for key, targets in targets_of.items():
            if key in unread:
                for _, run in targets:
                    tally.add(run, "read_failures")
                continue
            tally.add(owners[key], "rcu_consumed")
            held = existing.get(key)
            for etl, run in targets:
                if held is not None and held <= etl:  # -1: an item without etlTime still stops the shredder
                    tally.add(run, "found")
                    continue
                tally.add(run, "missing" if held is None else "later_etl_time")
                what = "absent" if held is None else f"etlTime {held} after the run's {etl}"
                tally.example(run, f"{key[0]} {key[1]}: {what}")

    tallies = dynamo.in_threads(keys, handle, dynamo.BATCH_GET_SIZE, concurrency)
    return CheckResult(dynamo.add_up(tallies, VERIFY_COUNTS), dynamo.examples_of(tallies))
