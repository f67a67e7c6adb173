"""A loopback HTTP proxy in front of a moto server: the base of the stand-ins that add what moto lacks.

moto answers every request at once and never fails, so the DynamoDB stand-in (capacity, throttling) and the S3
fault endpoint both sit between the client and moto. This module holds what they share: a threaded server with
one keep-alive upstream connection per thread, and a handler that forwards a request as it came (bodies sent
with chunked transfer encoding included), answers, or resets the client's connection.
"""
from __future__ import annotations

import http.client
import socket
import struct
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import List, Tuple

Answer = Tuple[int, List[Tuple[str, str]], bytes]  # status, headers, body

HOP_BY_HOP = frozenset({"connection", "keep-alive", "proxy-connection", "transfer-encoding", "content-length", "host",
                        "server", "date", "te", "trailer", "upgrade"})


class ProxyServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128

    def __init__(self, address, upstream_url: str, handler):
        super().__init__(address, handler)
        parsed = urllib.parse.urlsplit(upstream_url)
        if parsed.scheme != "http" or not parsed.hostname:
            raise ValueError(f"upstream must be an http:// URL, not {upstream_url!r}")
        self.upstream = (parsed.hostname, parsed.port or 80)
        self.local = threading.local()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def upstream_connection(self) -> http.client.HTTPConnection:
        conn = getattr(self.local, "conn", None)
        if conn is None:
            conn = self.local.conn = http.client.HTTPConnection(*self.upstream, timeout=60)
        return conn

    def drop_upstream_connection(self) -> None:
        conn = getattr(self.local, "conn", None)
        if conn is not None:
            conn.close()
            self.local.conn = None


def serve_printing_url(server: ProxyServer) -> None:
    """A stand-in's command line: print its URL (the starter's cue, bench/servers.py) and serve until interrupted."""
    print(server.url, flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


class ProxyHandler(BaseHTTPRequestHandler):
    """Forwards every request untouched; subclasses override `handle_request` to change some of them."""

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out in two writes: without this, delayed ACKs add 40 ms
    server: ProxyServer

    def log_message(self, *args) -> None:
        pass

    def do_GET(self) -> None:
        self.handle_request(self.read_body())

    do_POST = do_PUT = do_DELETE = do_HEAD = do_GET

    def handle_request(self, body: bytes) -> None:
        self.reply(*self.forward(body))

    def read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            parts = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline().strip():  # trailers, then the blank line
                        pass
                    return b"".join(parts)
                parts.append(self.rfile.read(size))
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def forward(self, body: bytes) -> Answer:
        """The same request to the upstream over this thread's keep-alive connection (reconnecting once)."""
        headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
        headers["Content-Length"] = str(len(body))
        for attempt in (1, 2):
            conn = self.server.upstream_connection()
            try:
                conn.request(self.command, self.path, body=body, headers=headers)
                response = conn.getresponse()
                data = response.read()
                # A HEAD answer has no body but announces the object's length: keep that header.
                kept = [(k, v) for k, v in response.getheaders()
                        if k.lower() not in HOP_BY_HOP or (self.command == "HEAD" and k.lower() == "content-length")]
                return response.status, kept, data
            except (http.client.HTTPException, OSError):
                self.server.drop_upstream_connection()
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def reply(self, status: int, headers: List[Tuple[str, str]], data: bytes) -> None:
        self.send_response(status)
        for k, v in headers:
            self.send_header(k, v)
        if not any(k.lower() == "content-length" for k, _ in headers):
            self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def drop_connection(self, reset: bool = True) -> None:
        """Close the client's connection now: with a TCP reset (a crashed server, a dropping network) or a plain FIN.

        The socket is closed here, before the server's own graceful shutdown could send a FIN ahead of the reset.
        """
        self.close_connection = True
        if reset:
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        else:
            self.connection.shutdown(socket.SHUT_RDWR)
        self.connection.close()
