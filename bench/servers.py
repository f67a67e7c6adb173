"""Local stand-ins a user would otherwise get from AWS: a moto server on 127.0.0.1 (demo, tests, benchmarks)."""
from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time
import urllib.request
from typing import List, Tuple


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_moto_server(port: int = 0, timeout: float = 30.0) -> Tuple[subprocess.Popen, str]:
    """A moto_server subprocess bound to 127.0.0.1; returns (process, endpoint url) once it answers."""
    port = port or free_port()
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"moto server exited with code {proc.returncode} (is moto[server] installed?)")
        try:
            urllib.request.urlopen(url + "/moto-api/", timeout=1)
            return proc, url
        except OSError:
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError(f"moto server did not answer on {url} within {timeout:.0f} s")


def start_url_printer(command: List[str], timeout: float = 30.0) -> Tuple[subprocess.Popen, str]:
    """A server subprocess that prints its URL as its first line (bench.dynamo_endpoint, bench.s3_endpoint)."""
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    ready = threading.Event()
    line: List[str] = []
    threading.Thread(target=lambda: (line.append(proc.stdout.readline().strip()), ready.set()), daemon=True).start()
    if not ready.wait(timeout) or not line[0].startswith("http://"):
        proc.kill()
        raise RuntimeError(f"{' '.join(command)} printed no URL within {timeout:.0f} s (exit code {proc.poll()})")
    return proc, line[0]


def reset_moto(url: str) -> None:
    urllib.request.urlopen(urllib.request.Request(url + "/moto-api/reset", method="POST"), timeout=10)


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
