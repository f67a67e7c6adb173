"""Peak memory of a command and everything it starts, sampled from /proc (Linux).

A sampler thread reads, a few times a second, the resident set size (RSS, /proc/<pid>/statm) of the command's
process and all its descendants, and sums it by role: the `luigi` command itself (planning, leases, marking), the
Spark JVM started by spark-submit (the driver and, in local mode, the executors' threads), the job's Python driver
(a child of the JVM) and the Python workers (pyspark.daemon and the workers it forks); anything else (the
spark-submit scripts, the short launcher JVM that builds the command line) is "other". The peak of each role is the
largest sum seen in one sample; the tree's peak is the largest total of one sample, so roles that peak at different
moments are not added up. Forked workers share pages with their daemon until written, so their RSS overstates a
little what they add; a child the JVM has forked but not yet exec'd (a worker starting) is the JVM's own pages and
is left out. Processes living less than one interval may be missed.
"""
from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Set, Tuple

ROLES = ("luigi", "spark JVM", "python driver", "python workers", "other")
PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096

Table = Dict[int, Tuple[int, List[str]]]  # pid -> (parent pid, command line)


def read_table(proc: str = "/proc") -> Table:
    """Every process's parent and command line (processes that end while being read are left out)."""
    out: Table = {}
    for name in os.listdir(proc):
        if not name.isdigit():
            continue
        try:
            with open(f"{proc}/{name}/stat", "rb") as f:
                stat = f.read()
            with open(f"{proc}/{name}/cmdline", "rb") as f:
                cmdline = [a.decode("utf-8", "replace") for a in f.read().split(b"\0") if a]
        except OSError:
            continue
        ppid = int(stat[stat.rindex(b")") + 2:].split()[1])  # after "pid (comm) state"
        out[int(name)] = (ppid, cmdline)
    return out


def rss(pid: int, proc: str = "/proc") -> int:
    """Resident bytes of `pid` (0 when it has ended)."""
    try:
        with open(f"{proc}/{pid}/statm", "rb") as f:
            return int(f.read().split()[1]) * PAGE
    except (OSError, IndexError, ValueError):
        return 0


def descendants(root: int, table: Table) -> Set[int]:
    children: Dict[int, List[int]] = {}
    for pid, (ppid, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    out, todo = set(), [root]
    while todo:
        pid = todo.pop()
        if pid in out:
            continue
        out.add(pid)
        todo.extend(children.get(pid, []))
    return out & (set(table) | {root})


def role(pid: int, root: int, table: Table) -> str:
    """Which part of the backfill a process of the tree is, from its command line and its ancestors'."""
    if pid == root:
        return "luigi"
    cmdline = table.get(pid, (0, []))[1]
    if any("pyspark.daemon" in a or "pyspark/daemon.py" in a or "pyspark.worker" in a for a in cmdline):
        return "python workers"
    if cmdline and os.path.basename(cmdline[0]).startswith("java"):
        # spark-class first runs a short JVM (launcher.Main) that only builds the real command line
        launcher = any("org.apache.spark.launcher.Main" in a for a in cmdline)
        return "spark JVM" if any("SparkSubmit" in a for a in cmdline) and not launcher else "other"
    parent = table.get(pid, (0, []))[0]
    seen = 0
    while parent and parent != root and seen < 64:  # a Python process under the JVM that is no worker: the driver
        parent_cmd = table.get(parent, (0, []))[1]
        if parent_cmd and os.path.basename(parent_cmd[0]).startswith("java"):
            return "python driver" if cmdline and "python" in os.path.basename(cmdline[0]) else "other"
        parent = table.get(parent, (0, []))[0]
        seen += 1
    return "other"


@dataclass
class Peaks:
    by_role: Dict[str, int] = field(default_factory=lambda: dict.fromkeys(ROLES, 0))
    total: int = 0
    samples: int = 0
    jvms: Set[int] = field(default_factory=set)  # spark-submit JVMs seen (one per Spark application)
    first_jvm_at: Optional[float] = None  # epoch seconds the first one was seen

    def add(self, sample: Dict[str, int], jvms: Set[int], at: float) -> None:
        self.samples += 1
        for name, value in sample.items():
            self.by_role[name] = max(self.by_role[name], value)
        self.total = max(self.total, sum(sample.values()))
        if jvms and self.first_jvm_at is None:
            self.first_jvm_at = at
        self.jvms |= jvms


def sample(root: int, table: Table, rss_of: Callable[[int], int] = rss) -> Tuple[Dict[str, int], Set[int]]:
    """One sample of the tree under `root`: RSS summed by role, and the Spark JVMs in it."""
    by_role = dict.fromkeys(ROLES, 0)
    jvms = set()
    for pid in descendants(root, table):
        ppid, cmdline = table.get(pid, (0, []))
        if pid != root and cmdline and cmdline == table.get(ppid, (0, None))[1] and \
                role(ppid, root, table) == "spark JVM":
            continue  # the JVM forking a worker, caught before its exec: the JVM's own pages, counted once
        name = role(pid, root, table)
        by_role[name] += rss_of(pid)
        if name == "spark JVM":
            jvms.add(pid)
    return by_role, jvms


class Sampler:
    """Samples the tree under `root` every `interval` seconds from a daemon thread until stop()."""

    def __init__(self, root: int, interval: float = 0.25):
        self.root, self.interval = root, interval
        self.peaks = Peaks()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="memory-sampler", daemon=True)

    def start(self) -> Sampler:
        self._thread.start()
        return self

    def _loop(self) -> None:
        while not self._stop.is_set():
            by_role, jvms = sample(self.root, read_table())
            self.peaks.add(by_role, jvms, time.time())
            self._stop.wait(self.interval)

    def stop(self) -> Peaks:
        self._stop.set()
        self._thread.join(10)
        return self.peaks
