"""A loopback S3 endpoint in front of a moto server that injects the transient faults of S3 and of networks.

moto never fails, so the job's retries and resumed downloads would go untested. Per request, `fault_fraction` of
them are answered HTTP 500 InternalError or have their connection reset, before anything is forwarded (botocore
retries both); `cut_fraction` of the successful object downloads whose path starts with `cut_prefix` (path-style:
/bucket/key) send their headers and only part of the body before the connection closes, which no client retries
by itself: the reader must resume. Everything else is forwarded untouched.

Library: start_endpoint(...) -> (server, url), stop(server); server.counts holds what was injected.
"""
from __future__ import annotations

import random
import threading
from typing import Dict, Optional, Tuple

from bench.proxy import ProxyHandler, ProxyServer

INTERNAL_ERROR = (b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>InternalError</Code><Message>We encountered '
                  b'an internal error. Please try again. (injected)</Message></Error>')


class FaultyS3Server(ProxyServer):
    def __init__(self, address, upstream_url: str, fault_fraction: float, cut_fraction: float, cut_prefix: str,
                 seed: Optional[int]):
        super().__init__(address, upstream_url, _Handler)
        self.fault_fraction = fault_fraction
        self.cut_fraction = cut_fraction
        self.cut_prefix = cut_prefix
        self.rng = random.Random(seed)
        self.lock = threading.Lock()
        self.counts: Dict[str, int] = {"requests": 0, "500": 0, "reset": 0, "cut": 0}

    def draw(self, kind: str, fraction: float) -> bool:
        """Whether to inject `kind` now (counted when it is)."""
        with self.lock:
            hit = fraction > 0 and self.rng.random() < fraction
            if hit:
                self.counts[kind] += 1
            return hit

    def cut_point(self, length: int) -> int:
        with self.lock:
            return self.rng.randrange(1, length)


class _Handler(ProxyHandler):
    server: FaultyS3Server

    def handle_request(self, body: bytes) -> None:
        server = self.server
        with server.lock:
            server.counts["requests"] += 1
        if server.draw("500", server.fault_fraction / 2):
            self.reply(500, [("Content-Type", "application/xml")], INTERNAL_ERROR)
            return
        if server.draw("reset", server.fault_fraction / 2):
            self.drop_connection(reset=True)
            return
        status, headers, data = self.forward(body)
        if (self.command == "GET" and status in (200, 206) and len(data) > 1 and self.path.startswith(server.cut_prefix)
                and server.draw("cut", server.cut_fraction)):
            self.reply(status, headers + [("Content-Length", str(len(data)))], data[:server.cut_point(len(data))])
            self.drop_connection(reset=False)
            return
        self.reply(status, headers, data)


def start_endpoint(upstream_url: str, fault_fraction: float = 0.0, cut_fraction: float = 0.0, cut_prefix: str = "/",
                   seed: Optional[int] = None, port: int = 0) -> Tuple[FaultyS3Server, str]:
    """Serve the faulty endpoint on 127.0.0.1 from a daemon thread; returns the server and its URL."""
    for name, value in (("fault_fraction", fault_fraction), ("cut_fraction", cut_fraction)):
        if not 0 <= value < 1:
            raise ValueError(f"{name} must be at least 0 and below 1, not {value!r}")
    server = FaultyS3Server(("127.0.0.1", port), upstream_url, fault_fraction, cut_fraction, cut_prefix, seed)
    threading.Thread(target=server.serve_forever, name="s3-faults", daemon=True).start()
    return server, server.url


def stop(server: FaultyS3Server) -> None:
    server.shutdown()
    server.server_close()
