"""A loopback DynamoDB stand-in: a moto server behind a proxy that enforces a WCU/s capacity, like the real table.

moto never throttles, so benchmarks and fault tests would otherwise measure a table of infinite capacity. The proxy
adds, per request, a network latency; per write, a token bucket of `wcu` units per second (1 unit per started KB
of item, also when a condition fails; a throttled write costs nothing); and the answers DynamoDB gives when over
capacity: HTTP 400 ProvisionedThroughputExceededException for single writes, UnprocessedItems for the part of a
BatchWriteItem that does not fit (the exception when none of it fits, as DynamoDB does). Optional noise:
`throttle_fraction` throttles that fraction of write items at random whatever the capacity (a throttling storm),
`read_throttle_fraction` returns that fraction of BatchGetItem keys as UnprocessedKeys, and `fault_fraction` answers
HTTP 500 InternalServerError before forwarding or drops the connection after forwarding (the write happened, the
client never hears). Everything else is forwarded untouched.

Library: start_endpoint(...) -> (server, url), stop(server), fetch_stats(url), reset_stats(url).
CLI: python -m bench.dynamo_endpoint --upstream URL --port P --wcu N --latency-ms L
HTTP: GET /_stats (JSON counts), POST /_reset (zero the counts; an optional JSON body changes the settings).
"""
from __future__ import annotations

import argparse
import base64
import json
import random
import threading
import time
import urllib.request
import zlib
from typing import Callable, Dict, List, Optional, Tuple

from bench.proxy import ProxyHandler, ProxyServer, serve_printing_url

SINGLE_WRITES = frozenset({"PutItem", "UpdateItem", "DeleteItem"})
FAULTY = SINGLE_WRITES | {"BatchWriteItem", "BatchGetItem", "GetItem"}
ERROR_TYPE = "com.amazonaws.dynamodb.v20120810#"
SETTINGS = ("wcu", "latency_ms", "throttle_fraction", "read_throttle_fraction", "fault_fraction", "burst_seconds")


def attribute_size(value: dict) -> int:
    """Bytes DynamoDB counts for one attribute value (strings as UTF-8, numbers ~1 byte per 2 digits)."""
    kind, v = next(iter(value.items()))
    if kind == "S":
        return len(v.encode("utf-8"))
    if kind == "N":
        return (len(v.lstrip("-").replace(".", "")) + 1) // 2 + 1
    if kind == "B":
        return len(base64.b64decode(v))
    if kind in ("SS", "NS", "BS"):
        return sum(attribute_size({kind[0]: x}) for x in v)
    if kind == "L":
        return 3 + sum(attribute_size(x) + 1 for x in v)
    if kind == "M":
        return 3 + sum(len(k.encode("utf-8")) + attribute_size(x) + 1 for k, x in v.items())
    return 1  # BOOL, NULL


def write_units(item: Optional[dict]) -> int:
    """WCU of writing `item`: 1 per started KB, at least 1 (deletes and updates without an item cost 1 here)."""
    if not item:
        return 1
    size = sum(len(name.encode("utf-8")) + attribute_size(value) for name, value in item.items())
    return max(1, -(-size // 1024))


class Capacity:
    """The table's write capacity and the counters the benchmarks read; every method holds the lock.

    `clock` (seconds, monotonic) drives the bucket's refill and the per-second counts; tests pass a fake one so
    that a busy machine cannot refill the bucket between two requests.
    """

    def __init__(self, wcu: float, latency_ms: float = 0.0, throttle_fraction: float = 0.0,
                 read_throttle_fraction: float = 0.0, fault_fraction: float = 0.0, burst_seconds: float = 1.0,
                 seed: Optional[int] = None, clock: Callable[[], float] = time.monotonic):
        self.lock = threading.Lock()
        self.clock = clock
        self.rng = random.Random(seed)
        self.configure(wcu=wcu, latency_ms=latency_ms, throttle_fraction=throttle_fraction,
                       read_throttle_fraction=read_throttle_fraction, fault_fraction=fault_fraction,
                       burst_seconds=burst_seconds)
        self.reset()

    def configure(self, **settings) -> None:
        for name, value in settings.items():
            if name not in SETTINGS:
                raise ValueError(f"unknown stand-in setting {name!r} (known: {', '.join(SETTINGS)})")
            setattr(self, name, float(value))
        if not self.wcu > 0:
            raise ValueError(f"wcu must be positive, not {self.wcu}")

    def reset(self) -> None:
        with self.lock:
            self.started = self.clock()
            self.started_at = time.time()  # the same moment on the wall clock, to compare with other processes
            self.tokens = self.wcu * self.burst_seconds
            self.updated = self.started
            self.consumed = 0
            self.accepted_items = 0
            self.conditional_failures = 0
            self.throttled_requests = 0
            self.throttled_items = 0
            self.throttled_keys = 0
            self.faults = {"500": 0, "drop": 0}
            self.requests: Dict[str, int] = {}
            self.per_second: Dict[int, int] = {}
            self.first_write: Optional[float] = None
            self.last_write: Optional[float] = None

    def count_request(self, operation: str) -> Optional[str]:
        """Count one request; the fault to inject into it ('500', 'drop') or None."""
        with self.lock:
            self.requests[operation] = self.requests.get(operation, 0) + 1
            if operation not in FAULTY or self.rng.random() >= self.fault_fraction:
                return None
            fault = "500" if self.rng.random() < 0.5 else "drop"
            self.faults[fault] += 1
            return fault

    def admit(self, units: List[int]) -> List[bool]:
        """Which of these writes fit the capacity now; their units are consumed."""
        with self.lock:
            now = self.clock()
            self.tokens = min(self.wcu * self.burst_seconds, self.tokens + (now - self.updated) * self.wcu)
            self.updated = now
            granted = []
            for n in units:
                ok = self.tokens >= n and not (self.throttle_fraction and self.rng.random() < self.throttle_fraction)
                if ok:
                    self.tokens -= n
                granted.append(ok)
            taken = sum(n for n, ok in zip(units, granted) if ok)
            if taken:
                second = int(now - self.started)
                self.per_second[second] = self.per_second.get(second, 0) + taken
                self.consumed += taken
                self.accepted_items += sum(granted)
                self.first_write = now if self.first_write is None else self.first_write
                self.last_write = now
            if not all(granted):
                self.throttled_requests += 1
                self.throttled_items += len(granted) - sum(granted)
            return granted

    def refund(self, units: int, items: int) -> None:
        """Writes the upstream refused (bad request): DynamoDB charges nothing for them."""
        with self.lock:
            self.consumed -= units
            self.accepted_items -= items

    def read_throttled(self, n: int) -> List[bool]:
        """Which of `n` BatchGetItem keys come back unprocessed."""
        with self.lock:
            out = [bool(self.read_throttle_fraction) and self.rng.random() < self.read_throttle_fraction
                   for _ in range(n)]
            if any(out):
                self.throttled_requests += 1
                self.throttled_keys += sum(out)
            return out

    def count_conditional_failure(self) -> None:
        with self.lock:
            self.conditional_failures += 1

    def wall(self, moment: Optional[float]) -> Optional[float]:
        """A monotonic moment of this stand-in as epoch seconds."""
        return None if moment is None else self.started_at + (moment - self.started)

    def stats(self) -> dict:
        with self.lock:
            now = self.clock()
            seconds = int(now - self.started) + 1
            active = (self.last_write - self.first_write) if self.first_write is not None else 0.0
            first = int(self.first_write - self.started) if self.first_write is not None else seconds
            return {
                "settings": {name: getattr(self, name) for name in SETTINGS},
                "elapsed_seconds": now - self.started,
                "active_seconds": active,  # first to last accepted write
                # epoch seconds of the first and last accepted write (None before any)
                "first_write_at": self.wall(self.first_write),
                "last_write_at": self.wall(self.last_write),
                "consumed_wcu": self.consumed,
                "accepted_items": self.accepted_items,
                "conditional_failures": self.conditional_failures,
                "throttled_requests": self.throttled_requests,
                "throttled_items": self.throttled_items,
                "throttled_keys": self.throttled_keys,
                "faults": dict(self.faults),
                "requests": dict(self.requests),
                # consumed WCU in each whole second from the first accepted write on
                "per_second": [self.per_second.get(s, 0) for s in range(first, seconds)],
            }


class _Handler(ProxyHandler):
    server: StandInServer

    def do_GET(self) -> None:
        if self.path == "/_stats":
            self.reply(200, [("Content-Type", "application/json")], json.dumps(self.server.capacity.stats()).encode())
            return
        self.reply(*self.forward(b""))

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        capacity = self.server.capacity
        if self.path == "/_reset":
            try:
                capacity.configure(**(json.loads(body) if body.strip() else {}))
            except (ValueError, TypeError) as e:
                self.reply(400, [("Content-Type", "text/plain")], str(e).encode())
                return
            capacity.reset()
            self.reply(200, [("Content-Type", "application/json")], b"{}")
            return
        operation = self.headers.get("X-Amz-Target", "").rpartition(".")[2]
        if capacity.latency_ms:
            time.sleep(capacity.latency_ms / 1000.0)
        fault = capacity.count_request(operation)
        if fault == "500":
            self.reply(*error_response(500, "InternalServerError", "Internal server error (injected)"))
            return
        if operation in SINGLE_WRITES:
            answer = self.single_write(body)
        elif operation == "BatchWriteItem":
            answer = self.batch_write(body)
        elif operation == "BatchGetItem" and capacity.read_throttle_fraction:
            answer = self.batch_get(body)
        else:
            answer = self.forward(body)
        if fault == "drop":  # the upstream did the work; the client never hears of it
            self.close_connection = True
            return
        self.reply(*answer)

    def single_write(self, body: bytes) -> Tuple[int, list, bytes]:
        capacity = self.server.capacity
        units = write_units(json.loads(body).get("Item"))
        if not capacity.admit([units])[0]:
            return error_response(400, "ProvisionedThroughputExceededException",
                                  "The level of configured provisioned throughput for the table was exceeded.")
        status, headers, data = self.forward(body)
        if status == 400 and b"ConditionalCheckFailedException" in data:
            capacity.count_conditional_failure()
        elif status != 200:
            capacity.refund(units, 1)
        return status, headers, data

    def batch_write(self, body: bytes) -> Tuple[int, list, bytes]:
        capacity = self.server.capacity
        request = json.loads(body)
        entries = [(table, entry) for table, entries in request.get("RequestItems", {}).items() for entry in entries]
        units = [write_units(entry.get("PutRequest", {}).get("Item")) for _, entry in entries]
        granted = capacity.admit(units)
        if not any(granted):
            return error_response(400, "ProvisionedThroughputExceededException",
                                  "The level of configured provisioned throughput for one or more tables was exceeded.")
        accepted: Dict[str, list] = {}
        unprocessed: Dict[str, list] = {}
        for (table, entry), ok in zip(entries, granted):
            (accepted if ok else unprocessed).setdefault(table, []).append(entry)
        status, headers, data = self.forward(json.dumps(dict(request, RequestItems=accepted)).encode())
        used = sum(n for n, ok in zip(units, granted) if ok)
        if status != 200:
            capacity.refund(used, sum(granted))
            return status, headers, data
        response = json.loads(data)
        merged = response.get("UnprocessedItems") or {}
        for table, rest in unprocessed.items():
            merged.setdefault(table, []).extend(rest)
        response["UnprocessedItems"] = merged
        if request.get("ReturnConsumedCapacity", "NONE") != "NONE":  # moto says 1.0 per table whatever the size
            response["ConsumedCapacity"] = [
                {"TableName": table, "CapacityUnits": float(sum(
                    n for (t, _), n, ok in zip(entries, units, granted) if ok and t == table))}
                for table in request.get("RequestItems", {})
            ]
        return rewritten(status, headers, response)

    def batch_get(self, body: bytes) -> Tuple[int, list, bytes]:
        request = json.loads(body)
        tables = request.get("RequestItems", {})
        keys = [(table, key) for table, spec in tables.items() for key in spec.get("Keys", [])]
        throttled = self.server.capacity.read_throttled(len(keys))
        if keys and all(throttled):
            return error_response(400, "ProvisionedThroughputExceededException",
                                  "The level of configured provisioned throughput for one or more tables was exceeded.")
        kept: Dict[str, list] = {}
        unprocessed: Dict[str, list] = {}
        for (table, key), late in zip(keys, throttled):
            (unprocessed if late else kept).setdefault(table, []).append(key)
        forwarded = {table: dict(tables[table], Keys=k) for table, k in kept.items()}
        status, headers, data = self.forward(json.dumps(dict(request, RequestItems=forwarded)).encode())
        if status != 200:
            return status, headers, data
        response = json.loads(data)
        merged = response.get("UnprocessedKeys") or {}
        for table, rest in unprocessed.items():
            merged.setdefault(table, dict(tables[table], Keys=[]))["Keys"].extend(rest)
        response["UnprocessedKeys"] = merged
        return rewritten(status, headers, response)


def error_response(status: int, code: str, message: str) -> Tuple[int, list, bytes]:
    data = json.dumps({"__type": ERROR_TYPE + code, "message": message}).encode()
    return status, [("Content-Type", "application/x-amz-json-1.0"), ("x-amz-crc32", str(zlib.crc32(data)))], data


def rewritten(status: int, headers: list, response: dict) -> Tuple[int, list, bytes]:
    """A changed response body, with the CRC32 header botocore checks for DynamoDB recomputed."""
    data = json.dumps(response).encode()
    kept = [(k, v) for k, v in headers if k.lower() != "x-amz-crc32"]
    return status, kept + [("x-amz-crc32", str(zlib.crc32(data)))], data


class StandInServer(ProxyServer):
    def __init__(self, address, upstream_url: str, capacity: Capacity):
        super().__init__(address, upstream_url, _Handler)
        self.capacity = capacity


def start_endpoint(upstream_url: str, wcu: float, latency_ms: float = 0.0, throttle_fraction: float = 0.0,
                   fault_fraction: float = 0.0, seed: Optional[int] = None, port: int = 0,
                   read_throttle_fraction: float = 0.0, burst_seconds: float = 1.0,
                   clock: Callable[[], float] = time.monotonic) -> Tuple[StandInServer, str]:
    """Serve the stand-in on 127.0.0.1 from a daemon thread; returns the server and its URL."""
    capacity = Capacity(wcu, latency_ms, throttle_fraction, read_throttle_fraction, fault_fraction, burst_seconds,
                        seed, clock)
    server = StandInServer(("127.0.0.1", port), upstream_url, capacity)
    threading.Thread(target=server.serve_forever, name="dynamo-stand-in", daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


def stop(server: StandInServer) -> None:
    server.shutdown()
    server.server_close()


def fetch_stats(url: str) -> dict:
    with urllib.request.urlopen(url + "/_stats", timeout=10) as response:
        return json.loads(response.read())


def reset_stats(url: str, **settings) -> None:
    """Zero the counts and refill the bucket; `settings` (see SETTINGS) change the stand-in from now on."""
    request = urllib.request.Request(url + "/_reset", data=json.dumps(settings).encode(), method="POST")
    with urllib.request.urlopen(request, timeout=10):
        pass


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--upstream", required=True, help="moto server URL, e.g. http://127.0.0.1:5000")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--wcu", type=float, required=True, help="write capacity units per second")
    parser.add_argument("--latency-ms", type=float, default=0.0)
    parser.add_argument("--throttle-fraction", type=float, default=0.0)
    parser.add_argument("--read-throttle-fraction", type=float, default=0.0)
    parser.add_argument("--fault-fraction", type=float, default=0.0)
    parser.add_argument("--burst-seconds", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=None)
    args = parser.parse_args(argv)
    capacity = Capacity(args.wcu, args.latency_ms, args.throttle_fraction, args.read_throttle_fraction,
                        args.fault_fraction, args.burst_seconds, args.seed)
    server = StandInServer(("127.0.0.1", args.port), args.upstream, capacity)
    serve_printing_url(server)


if __name__ == "__main__":
    main()
