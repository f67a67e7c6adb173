"""The write benchmark's strategies: the job's write_items, the original populator's per-event puts in
processes of their own, and boto3's own calls measured as the reference for client CPU."""
from __future__ import annotations

import gc
import multiprocessing
import os
import queue
import time
from typing import Callable, List, Optional, Sequence, Tuple

from botocore.exceptions import ClientError

from bench.dynamo_endpoint import reset_stats
from bench.write_config import ORIGINAL_CONDITION, Config
from bench.write_events import BENCH_CREDENTIALS, REGION, Event, attributes, make_events, manifest_item, session
from spark.dynamo import dynamodb_client
from spark.ratelimit import TokenBucket
from spark.writer import BATCH_WRITE_SIZE, CONDITION, write_items

Pass = Tuple[float, float, int]  # wall s, client CPU s, writes the client gave up on


def write_with_items(events: Sequence[Event], mode: str, url: str, table: str, capacity: float, threads: int,
                     checkpoint: Callable[[], None], passes: int = 2) -> List[Pass]:
    """spark.writer.write_items as a job task runs it, `passes` times over the same items; `checkpoint` runs
    before each pass and after the last."""
    client = dynamodb_client(REGION, BENCH_CREDENTIALS, endpoint_url=url)
    items = [manifest_item(e) for e in events]
    out = []
    for _ in range(passes):
        checkpoint()
        gc.collect()  # a pass pays for no garbage of what ran before it (one full collection is ~60 ms here)
        cpu0, wall0 = time.process_time(), time.perf_counter()
        counts = write_items(items, client=client, table=table, mode=mode, limiter=TokenBucket(capacity),
                             concurrency=threads, max_retry_seconds=120.0)
        wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
        out.append((wall, cpu, sum(c["write_failures"] for c in counts.values())))
    checkpoint()
    return out


def _original_task(url: str, table: str, events: List[Event], ready, starts, results) -> None:
    """One task of the original populator: sequential conditional puts, boto3's default client and retries."""
    client = session().client("dynamodb", endpoint_url=url)
    requests = [{"TableName": table, "Item": attributes(e), "ConditionExpression": ORIGINAL_CONDITION,
                 "ExpressionAttributeValues": {":tst": {"N": str(e[2])}}} for e in events]
    ready.put(os.getpid())
    for start in starts:
        start.wait()
        failed = 0
        cpu0 = time.process_time()
        for request in requests:
            try:
                client.put_item(**request)
            except ClientError as e:
                if e.response.get("Error", {}).get("Code") != "ConditionalCheckFailedException":
                    failed += 1  # past boto3's retries: the original's task would have failed here
        results.put((time.process_time() - cpu0, failed))


def _gather(answers, procs, timeout: float) -> list:
    """One answer from each task; a task that died makes this fail at once rather than at the timeout."""
    deadline, out = time.monotonic() + timeout, []
    while len(out) < len(procs):
        try:
            out.append(answers.get(timeout=0.5))
        except queue.Empty:
            dead = [p.exitcode for p in procs if p.exitcode not in (None, 0)]
            if dead or time.monotonic() > deadline:
                raise RuntimeError(f"an original-strategy task failed or hung (exit codes {dead})") from None
    return out


def write_like_original(events: Sequence[Event], url: str, table: str, tasks: int, checkpoint: Callable[[], None],
                        passes: int = 2) -> List[Pass]:
    """The events split into `tasks` contiguous slices (as files fall to Spark tasks), each in its own process,
    all started together for each pass; wall time runs from the start signal to the last task's end, CPU is the
    tasks' own. The same processes serve every pass (starting one costs a second or two)."""
    context = multiprocessing.get_context("spawn")
    ready, results = context.Queue(), context.Queue()
    starts = [context.Event() for _ in range(passes)]
    n = len(events)
    slices = [list(events[i * n // tasks:(i + 1) * n // tasks]) for i in range(tasks)]
    procs = [context.Process(target=_original_task, args=(url, table, s, ready, starts, results), daemon=True)
             for s in slices]
    for p in procs:
        p.start()
    out = []
    try:
        _gather(ready, procs, 120.0)
        for start in starts:
            checkpoint()
            wall0 = time.perf_counter()
            start.set()
            outcomes = _gather(results, procs, 1800.0)
            out.append((time.perf_counter() - wall0, sum(o[0] for o in outcomes), sum(o[1] for o in outcomes)))
        checkpoint()
    finally:
        for p in procs:
            p.join(10)
            if p.is_alive():
                p.terminate()
    return out


def boto3_put_cpu_ms(url: str, table: str, calls: int, seed: int, conditional: bool,
                     rate: Optional[float] = None) -> float:
    """Client CPU ms of one put_item from boto3's default client, sequentially: the per-call cost boto3 itself
    sets, for a plain put or for the conditional put that conditional mode sends (on fresh keys, so it succeeds),
    back to back or, given a `rate`, paced to that many calls per second."""
    client = session().client("dynamodb", endpoint_url=url)
    requests = []
    for event in make_events(calls + 1, 0.0, 1, seed):
        request = {"TableName": table, "Item": attributes(event)}
        if conditional:
            request.update(ConditionExpression=CONDITION, ExpressionAttributeValues={":etl": {"N": str(event[2])}})
        requests.append(request)
    client.put_item(**requests[0])  # the first call loads the service model: not a per-call cost
    gc.collect()  # as before each write_items pass
    cpu0, due = time.process_time(), time.monotonic()
    for request in requests[1:]:
        if rate:
            due += 1.0 / rate
            time.sleep(max(0.0, due - time.monotonic()))
        client.put_item(**request)
    return 1000.0 * (time.process_time() - cpu0) / calls


CPU_COLUMNS = ("boto3 put_item, plain", "boto3 put_item, conditional", "conditional mode (write_items)",
               "boto3 put_item, conditional, paced", "conditional mode, at capacity")


def cpu_round(url: str, table: str, config: Config, seed: int) -> Tuple[float, ...]:
    """Client CPU ms per call or item, one figure per CPU_COLUMNS, each on fresh keys.

    Each side is measured twice: back to back, and paced at the conditional capacity (an idle client pays more
    per call: its caches go cold between calls), so conditional mode is compared with boto3 under the same pacing.
    On a shared machine one measurement swings by +-25%, so the comparison is made on the medians of
    interleaved rounds, not on the long run's single figure."""
    capacity, calls = config.conditional.capacity, config.cpu_calls

    def conditional_mode(budget: float, seed: int) -> float:
        reset_stats(url, wcu=budget, latency_ms=config.latency_ms)
        (_, cpu, _), = write_with_items(make_events(calls, 0.0, 1, seed), "conditional", url, table, budget,
                                       config.threads, lambda: None, passes=1)
        reset_stats(url, wcu=1e9, latency_ms=config.latency_ms)
        return 1000.0 * cpu / calls

    return (boto3_put_cpu_ms(url, table, calls, seed, False),
            boto3_put_cpu_ms(url, table, calls, seed + 1, True),
            conditional_mode(1e9, seed + 2),
            boto3_put_cpu_ms(url, table, calls, seed + 3, True, rate=capacity),
            conditional_mode(capacity, seed + 4))


def boto3_batch_cpu_ms(url: str, table: str, events: Sequence[Event], rate: Optional[float] = None) -> float:
    """Client CPU ms per item of boto3's own batch_write_item (default client, 25 items a call, sequentially), back
    to back or, given a `rate`, paced to that many items per second: the per-item cost boto3 itself sets."""
    client = session().client("dynamodb", endpoint_url=url)
    puts = [{"PutRequest": {"Item": attributes(e)}} for e in events]
    calls = [puts[i:i + BATCH_WRITE_SIZE] for i in range(0, len(puts), BATCH_WRITE_SIZE)]
    client.describe_limits()  # the first call loads the service model: not a per-call cost
    gc.collect()  # as before each write_items pass
    cpu0, due = time.process_time(), time.monotonic()
    for batch in calls:
        if rate:
            due += len(batch) / rate
            time.sleep(max(0.0, due - time.monotonic()))
        left = client.batch_write_item(RequestItems={table: batch}).get("UnprocessedItems")
        if left:
            raise RuntimeError("the stand-in left items unprocessed: the reference must not be throttled")
    return 1000.0 * (time.process_time() - cpu0) / len(events)


FAST_CPU_COLUMNS = ("boto3 batch_write_item", "fast mode (write_items)", "boto3 batch_write_item, paced",
                    "fast mode, at capacity")


def fast_mode_cpu_ms(url: str, table: str, events: Sequence[Event], budget: float, threads: int) -> float:
    """Client CPU ms per item of fast mode writing `events` once at `budget` WCU/s."""
    (_, cpu, _), = write_with_items(events, "fast", url, table, budget, threads, lambda: None, passes=1)
    return 1000.0 * cpu / len(events)


def fast_cpu_round(url: str, tables: Tuple[str, str], config: Config, seed: int,
                   fast_first: bool = False) -> Tuple[float, ...]:
    """Client CPU ms per item, one figure per FAST_CPU_COLUMNS: boto3's batch_write_item and fast mode writing the
    same fresh items (boto3 into tables[0], fast mode into tables[1]), back to back, then paced at the fast
    capacity (fast mode by its token bucket, boto3 by sleeping), with no throttling at the stand-in. Which side
    goes first alternates from round to round (`fast_first`), so neither always finds the other's caches warm."""
    reset_stats(url, wcu=1e9, latency_ms=config.latency_ms)
    out: List[float] = []
    for rate, events in ((None, make_events(config.fast_cpu_items, 0.0, 1, seed)),
                         (config.fast.capacity, make_events(config.fast_cpu_items, 0.0, 1, seed + 1))):
        if fast_first:
            fast = fast_mode_cpu_ms(url, tables[1], events, rate or 1e9, config.threads)
            out += [boto3_batch_cpu_ms(url, tables[0], events, rate), fast]
        else:
            out += [boto3_batch_cpu_ms(url, tables[0], events, rate),
                    fast_mode_cpu_ms(url, tables[1], events, rate or 1e9, config.threads)]
    return tuple(out)
