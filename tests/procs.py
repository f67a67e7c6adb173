"""Processes seen through Linux /proc, for tests that watch (or kill) what the pipeline starts (no psutil here)."""
from __future__ import annotations

import os
import threading
from contextlib import contextmanager
from typing import Callable, Dict, Iterator, List, Optional


def pids() -> List[int]:
    return [int(name) for name in os.listdir("/proc") if name.isdigit()]


def read(pid: int, name: str) -> bytes:
    """/proc/<pid>/<name>, or b'' once the process is gone or unreadable."""
    try:
        with open(f"/proc/{pid}/{name}", "rb") as f:
            return f.read()
    except OSError:
        return b""


def cmdline(pid: int) -> str:
    return read(pid, "cmdline").replace(b"\0", b" ").decode("utf-8", "replace").strip()


def parent(pid: int) -> Optional[int]:
    stat = read(pid, "stat")  # "pid (comm) state ppid ...": comm may hold spaces and parentheses
    fields = stat[stat.rfind(b")") + 2:].split()
    return int(fields[1]) if len(fields) > 1 else None


def descendants(root: int) -> List[int]:
    children: Dict[int, List[int]] = {}
    for pid in pids():
        ppid = parent(pid)
        if ppid is not None:
            children.setdefault(ppid, []).append(pid)
    found, todo = [], list(children.get(root, []))
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, []))
    return found


def thread_count(pid: int) -> int:
    for line in read(pid, "status").splitlines():
        if line.startswith(b"Threads:"):
            return int(line.split()[1])
    return 0


def python_workers(root: int) -> List[int]:
    """PySpark's Python workers under `root`: the children that pyspark.daemon forks, one per running task."""
    return [pid for pid in descendants(root)
            if "pyspark.daemon" in cmdline(pid) and "pyspark.daemon" in cmdline(parent(pid) or 0)]


@contextmanager
def polling(step: Callable[[], None], interval: float = 0.05) -> Iterator[None]:
    """Call `step` every `interval` seconds from a background thread while the block runs.

    An exception in `step` ends the polling and is raised when the block ends, so a broken watcher fails the test.
    """
    done = threading.Event()
    errors: List[BaseException] = []

    def loop() -> None:
        try:
            while not done.wait(interval):
                step()
        except BaseException as e:  # noqa: BLE001 - re-raised in the test's thread below
            errors.append(e)

    thread = threading.Thread(target=loop, name="proc-poller", daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join(30)
    if errors:
        raise errors[0]
