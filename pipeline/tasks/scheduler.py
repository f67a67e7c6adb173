"""The central scheduler, checked before the first task is scheduled: an unreachable luigid is one line.

Luigi itself retries an unreachable scheduler for a minute, then prints a traceback and exits 4. Started from the
`luigi` command without --local-scheduler, the pipeline connects to the scheduler's address first and, when
nothing answers, names the address and the two ways out, and exits SCHEDULER_UNREACHABLE (docs/operations.md,
exit codes).
"""
from __future__ import annotations

import os
import socket
import sys
from typing import Optional, Tuple
from urllib.parse import urlparse

import luigi
from luigi.cmdline_parser import CmdlineParser

SCHEDULER_UNREACHABLE = 45
CONNECT_SECONDS = 3.0


def is_luigi_command(argv0: str) -> bool:
    """The `luigi` command (or `python -m luigi`), which schedules; luigi-deps and the like only read the graph."""
    return os.path.basename(argv0) == "luigi" or argv0.endswith(os.path.join("luigi", "__main__.py"))


def scheduler_address() -> Optional[Tuple[str, int, str]]:
    """(host, port, url) of the central scheduler this command uses; None under --local-scheduler or when the
    tasks were not made by the `luigi` command (luigi.build and tests choose their own scheduler)."""
    if CmdlineParser.get_instance() is None or not is_luigi_command(sys.argv[0]):
        return None
    core = luigi.interface.core()
    if core.local_scheduler:
        return None
    url = core.scheduler_url or f"http://{core.scheduler_host}:{core.scheduler_port}/"
    parsed = urlparse(url)
    return parsed.hostname or "localhost", parsed.port or (443 if parsed.scheme == "https" else 80), url


def unreachable_message(url: str, error: str) -> str:
    return (f"the central scheduler at {url} does not answer ({error}): start it (`luigid --address 127.0.0.1 "
            "--port 8082`, see docs/operations.md) or run with --local-scheduler")


def check_reachable() -> None:
    """Exit with one line when the command's central scheduler does not accept connections."""
    address = scheduler_address()
    if address is None:
        return
    host, port, url = address
    try:
        socket.create_connection((host, port), timeout=CONNECT_SECONDS).close()
    except OSError as e:
        print(f"ERROR: {unreachable_message(url, e.strerror or str(e))}", file=sys.stderr, flush=True)
        sys.exit(SCHEDULER_UNREACHABLE)
