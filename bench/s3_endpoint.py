"""A loopback S3 endpoint in front of a moto server that injects the transient faults of S3 and of networks.

moto never fails, so the job's retries and resumed downloads would go untested. Of the requests whose path starts
with `prefix` (path-style: /bucket/key, so "/archive" is one bucket), `fault_fraction` are answered HTTP 500
InternalError or have their connection reset before anything is forwarded (botocore retries both), and the first
download of `cut_fraction` of the objects sends its headers and only part of the body before the connection
closes, which botocore does not retry for a streamed body: the reader must resume (later downloads of an object
are whole, so a resuming reader always finishes). Everything else is forwarded untouched.

Library: start_endpoint(...) -> (server, url), stop(server); server.counts holds what was injected.
"""
from __future__ import annotations

import argparse
import json
import random
import threading
import time
import urllib.parse
import urllib.request
from typing import Dict, List, Optional, Set, Tuple

from bench.proxy import ProxyHandler, ProxyServer, serve_printing_url

INTERNAL_ERROR = (b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>InternalError</Code><Message>We encountered '
                  b'an internal error. Please try again. (injected)</Message></Error>')


class FaultyS3Server(ProxyServer):
    def __init__(self, address, upstream_url: str, fault_fraction: float, cut_fraction: float, prefix: str,
                 seed: Optional[int], record: bool = False):
        super().__init__(address, upstream_url, _Handler)
        self.record = record
        self.log: List[Tuple[float, str, str]] = []  # (epoch seconds, method, path with query) when recording
        self.fault_fraction = fault_fraction
        self.cut_fraction = cut_fraction
        self.prefix = prefix
        self.rng = random.Random(seed)
        self.lock = threading.Lock()
        self.counts: Dict[str, int] = {"requests": 0, "500": 0, "reset": 0, "cut": 0}
        self.downloaded: Set[str] = set()

    def draw(self, kind: str, fraction: float) -> bool:
        """Whether to inject `kind` now (counted when it is)."""
        with self.lock:
            hit = fraction > 0 and self.rng.random() < fraction
            if hit:
                self.counts[kind] += 1
            return hit

    def cut_point(self, path: str, length: int) -> Optional[int]:
        """Where to cut this download of the object at `path`: only ever its first, and None for most."""
        with self.lock:
            if path in self.downloaded:
                return None
            self.downloaded.add(path)
        return self.rng.randrange(1, length) if self.draw("cut", self.cut_fraction) else None


class _Handler(ProxyHandler):
    server: FaultyS3Server

    def handle_request(self, body: bytes) -> None:
        server = self.server
        if self.path in ("/_requests", "/_reset"):
            self.control()
            return
        with server.lock:
            server.counts["requests"] += 1
            if server.record:
                server.log.append((time.time(), self.command, self.path))
        if not self.path.startswith(server.prefix):
            self.reply(*self.forward(body))
            return
        if server.draw("500", server.fault_fraction / 2):
            self.reply(500, [("Content-Type", "application/xml")], INTERNAL_ERROR)
            return
        if server.draw("reset", server.fault_fraction / 2):
            self.drop_connection(reset=True)
            return
        status, headers, data = self.forward(body)
        path = urllib.parse.urlsplit(self.path).path
        cut = None
        if self.command == "GET" and path.strip("/").count("/") and status in (200, 206) and len(data) > 1:
            cut = server.cut_point(path, len(data))  # an object (/bucket/key), not a listing
        if cut is None:
            self.reply(status, headers, data)
            return
        self.reply(status, headers + [("Content-Length", str(len(data)))], data[:cut])
        self.drop_connection(reset=False)

    def control(self) -> None:
        """GET /_requests: the recorded log; POST /_reset: empty it and the counts."""
        server = self.server
        with server.lock:
            if self.command == "POST" and self.path == "/_reset":
                server.log = []
                server.counts = dict.fromkeys(server.counts, 0)
                data = b"{}"
            else:
                data = json.dumps(server.log).encode()
        self.reply(200, [("Content-Type", "application/json")], data)


def make_server(upstream_url: str, fault_fraction: float = 0.0, cut_fraction: float = 0.0, prefix: str = "/",
                seed: Optional[int] = None, port: int = 0, record: bool = False) -> FaultyS3Server:
    if not 0 <= fault_fraction < 1:  # at 1 no request would ever get through
        raise ValueError(f"fault_fraction must be at least 0 and below 1, not {fault_fraction!r}")
    if not 0 <= cut_fraction <= 1:
        raise ValueError(f"cut_fraction must be between 0 and 1, not {cut_fraction!r}")
    return FaultyS3Server(("127.0.0.1", port), upstream_url, fault_fraction, cut_fraction, prefix, seed, record)


def start_endpoint(upstream_url: str, fault_fraction: float = 0.0, cut_fraction: float = 0.0, prefix: str = "/",
                   seed: Optional[int] = None, port: int = 0, record: bool = False) -> Tuple[FaultyS3Server, str]:
    """Serve the endpoint on 127.0.0.1 from a daemon thread; returns the server and its URL."""
    server = make_server(upstream_url, fault_fraction, cut_fraction, prefix, seed, port, record)
    threading.Thread(target=server.serve_forever, name="s3-faults", daemon=True).start()
    return server, server.url


def stop(server: FaultyS3Server) -> None:
    server.shutdown()
    server.server_close()


def fetch_log(url: str) -> List[Tuple[float, str, str]]:
    """The requests a recording endpoint (in this process or another) has logged."""
    with urllib.request.urlopen(url + "/_requests", timeout=30) as response:
        return [tuple(entry) for entry in json.loads(response.read())]


def reset_log(url: str) -> None:
    with urllib.request.urlopen(urllib.request.Request(url + "/_reset", data=b"", method="POST"), timeout=10):
        pass


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--upstream", required=True, help="moto server URL, e.g. http://127.0.0.1:5000")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--record", action="store_true", help="log every request (GET /_requests)")
    parser.add_argument("--fault-fraction", type=float, default=0.0)
    parser.add_argument("--cut-fraction", type=float, default=0.0)
    parser.add_argument("--prefix", default="/")
    parser.add_argument("--seed", type=int, default=None)
    args = parser.parse_args(argv)
    server = make_server(args.upstream, args.fault_fraction, args.cut_fraction, args.prefix, args.seed, args.port,
                         args.record)
    serve_printing_url(server)


if __name__ == "__main__":
    main()
