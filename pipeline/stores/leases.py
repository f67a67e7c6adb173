"""Leases on runs, so that at most one process works on a run at any moment, wherever and however it was started.

Luigi's central scheduler only refuses a task id another worker is running, and --local-scheduler has nothing but
a pid file for identical command lines on one machine (checked, then written: not atomic). Batch ids come from the
runs left when a process planned and from --batch-size, so two processes can hold overlapping batches under
different ids: the lease is therefore taken per run, for all runs of a batch at once or not at all (no process
holds some while waiting for others, so two batches can never wait for each other).

A lease is the object `<markers>/<table>/_leases/run=<id>.json`, created only if absent and replaced only if
unchanged since read: S3 conditional writes (If-None-Match / If-Match on the ETag), or a compare-and-swap under an
flock(2) on a local markers folder (`lease_store`). A batch first writes its hold, `_leases/hold=<token>.json`;
each run's lease names the hold and lives as long as it, and only the hold is renewed while the batch works. So a
run costs two requests however long its batch runs (its lease written, then deleted), and renewing costs one
request per beat whatever the batch's size. A hold whose expiry has passed, or whose process on this very machine
(same boot) is gone, is stale: its runs' leases are taken over atomically, so a resume right after kill -9 does
not wait, and the stale hold is deleted. Expiry compares the holder's clock with ours: keep clocks in sync.
"""
from __future__ import annotations

import logging
import os
import random
import re
import secrets
import socket
import threading
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Tuple

from pipeline.rules.errors import PipelineError
from spark import storage
from spark.refusals import told
from spark.runid import file_name
from spark.storage import Location

from .lease_store import delete_lease, lease_names, put_lease, read_lease

log = logging.getLogger("manifest.leases")

LEASE_SECONDS = 300.0  # a holder that stops renewing (frozen, or killed on another machine) blocks this long
RENEW_EVERY = 30.0
POLL_SECONDS = (0.5, 5.0)  # first and longest wait between attempts while another process holds a lease
_RACES = 8  # attempts when other processes keep changing a lease between our read and our write
_HOLD = re.compile(r"hold=[0-9a-f]{16}")


class LeaseLost(PipelineError):
    """Another process took over a lease this process still needed."""


@dataclass(frozen=True)
class Owner:
    host: str
    boot: str  # host, kernel boot id and pid namespace: equal only where this process's pids mean the same processes
    pid: int
    started: Optional[int]  # the process's start time in clock ticks since boot, so a reused pid is not mistaken
    token: str  # distinguishes two holds by one process

    @classmethod
    def here(cls) -> Owner:
        return cls(socket.gethostname(), _boot_id(), os.getpid(), process_start(os.getpid()), secrets.token_hex(8))


@dataclass
class Lease:
    loc: Location
    record: dict
    version: str  # the S3 ETag, or the digest of the local file


def lease_location(folder: Location, run: str) -> Location:
    """Where the lease of `run` lives under a marker folder (<markers>/<table>)."""
    return folder.child("_leases", file_name(run))


def hold_location(folder: Location, token: str) -> Location:
    """Where the hold of a batch taken with `token` lives under a marker folder."""
    return folder.child("_leases", f"hold={token}.json")


def describe(record: dict) -> str:
    """Who holds a lease, for messages: 'host pid N'."""
    owner = record.get("owner") if isinstance(record, dict) else None
    if not isinstance(owner, dict):
        return "an unknown process"
    return f"{owner.get('host', '?')} pid {owner.get('pid', '?')}"


def stale_reason(record: dict, now: float, boot: str,
                 alive: Optional[Callable[[int, Optional[int]], bool]] = None) -> Optional[str]:
    """Why a record with its own expiry (a hold, or a lease taken alone) may be taken over, or None while its
    holder may still be working."""
    alive = alive or process_alive
    try:
        owner, expires = record["owner"], float(record["expires_at"])
        pid, started = int(owner["pid"]), owner.get("started")
    except (KeyError, TypeError, ValueError):
        return "unreadable lease record"
    if now >= expires:
        return f"expired {now - expires:.0f} s ago"
    if boot and owner.get("boot") == boot and not alive(pid, started):
        return f"process {pid} on this machine is gone"
    return None


def process_alive(pid: int, started: Optional[int] = None) -> bool:
    """Whether `pid` runs on this machine and is the process that started at `started` (a zombie is dead)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    if not os.path.exists("/proc/self/stat"):
        return True  # no /proc to tell a zombie or a reused pid: trust kill(0)
    stat = _proc_stat(pid)
    if stat is None:
        return False
    state, start = stat
    return state not in ("Z", "X") and (started is None or start == started)


class Judge:
    """Whether leases may be taken over: a run's lease taken under a hold is judged by its hold, each hold read
    once per judge (one judge per attempt, so a verdict is never older than the attempt)."""

    def __init__(self, leases_folder: Location, client, boot: str):
        self.folder, self.client, self.boot = leases_folder, client, boot
        self._holds: Dict[str, Optional[Tuple[dict, str]]] = {}

    def verdict(self, record: dict, now: float) -> Tuple[Optional[str], dict]:
        """(why the lease may be taken over, or None; the record that decides: its hold's when it names one)."""
        name = record.get("hold") if isinstance(record, dict) else None
        if name is None:
            return stale_reason(record, now, self.boot), record
        if not isinstance(name, str) or not _HOLD.fullmatch(name):
            return "unreadable lease record", record
        if name not in self._holds:
            self._holds[name] = read_lease(self._location(name), self.client)
        hold = self._holds[name]
        if hold is None:
            return f"its hold {name} is gone", record
        return stale_reason(hold[0], now, self.boot), hold[0]

    def forget_hold(self, record: dict) -> None:
        """Delete the stale hold of a lease just taken over, unless renewed since it was judged: none is left."""
        name = record.get("hold")
        hold = self._holds.get(name) if isinstance(name, str) else None
        if hold is not None:
            delete_lease(self._location(name), hold[1], self.client)
            self._holds[name] = None

    def _location(self, name: str) -> Location:
        return self.folder.child(f"{name}.json")


def try_acquire(loc: Location, owner: Owner, purpose: str = "", seconds: float = LEASE_SECONDS, client=None, *,
                hold: Optional[str] = None, judge: Optional[Judge] = None, absent: bool = False,
                clock: Callable[[], float] = time.time) -> Tuple[Optional[Lease], Optional[dict]]:
    """One attempt: (the lease, None), or (None, the live record that holds it: its hold's when it names one).

    With `hold` (a hold's name) the lease lives as long as that hold; without, it expires `seconds` after each
    renewal. `absent`: a listing has just shown no lease here, so the first write goes without a read. `clock` is
    the epoch seconds expiries are written and judged in.
    """
    judge = judge or Judge(_folder_of(loc), client, owner.boot)
    current = None
    for attempt in range(_RACES):
        current = None if absent and attempt == 0 else read_lease(loc, client)
        now = clock()
        record = _new_record(loc, owner, purpose, now, seconds, hold)
        if current is None:
            version = put_lease(loc, record, None, client)
        else:
            held, seen = current
            if _token(held) == owner.token:
                return Lease(loc, held, seen), None  # ours already: an earlier write's answer was lost
            reason, decider = judge.verdict(held, now)
            if reason is None:
                return None, decider
            version = put_lease(loc, record, seen, client)
            if version is not None:
                log.warning("took over the lease on %s from %s (%s)", _name(loc), describe(held), reason)
                judge.forget_hold(held)
        if version is not None:
            log.info("lease on %s acquired by %s (%s) at %.6f", _name(loc), describe(record), purpose, time.time())
            return Lease(loc, record, version), None
    return None, (current[0] if current else {})


def renew(lease: Lease, client=None, seconds: float = LEASE_SECONDS, clock: Callable[[], float] = time.time) -> Lease:
    """Push the expiry forward; LeaseLost when another process has taken the lease over meanwhile."""
    now = clock()
    record = dict(lease.record, heartbeat_at=now, expires_at=now + seconds)
    version = put_lease(lease.loc, record, lease.version, client)
    if version is None:
        current = read_lease(lease.loc, client)
        if current and current[0] == record:  # this very write landed, only its answer was lost (and retried)
            return Lease(lease.loc, record, current[1])
        raise LeaseLost(_taken_over(lease, current))
    return Lease(lease.loc, record, version)


def release(lease: Lease, client=None) -> bool:
    """Delete the lease unless another process has taken it over (then False, and a warning)."""
    log.info("lease on %s released by %s at %.6f", _name(lease.loc), describe(lease.record), time.time())
    if delete_lease(lease.loc, lease.version, client):
        return True
    log.warning("the lease on %s was no longer held by this process when it released it", _name(lease.loc))
    return False


@contextmanager
def hold(folder: Location, runs: Sequence[str], client=None, *, purpose: str = "", seconds: float = LEASE_SECONDS,
         renew_every: float = RENEW_EVERY, poll: Tuple[float, float] = POLL_SECONDS,
         waiting: Optional[Callable[[str], None]] = None,
         clock: Callable[[], float] = time.time) -> Iterator[List[Lease]]:
    """Hold the lease of every run for the block: wait while another process holds any, renew, release at the end.

    `folder` is the marker folder (<markers>/<table>); `waiting` receives a status line while this process waits.
    Raises LeaseLost after the block when a lease was taken over during it (the process was frozen too long).
    Expiries are written and judged in `clock`'s epoch seconds; beats and waits are real time.
    """
    if folder.is_s3 and client is None:
        client = storage.s3_client(fail_fast=True)
    owner = Owner.here()
    mine, _ = try_acquire(hold_location(folder, owner.token), owner, purpose, seconds, client, absent=True,
                          clock=clock)
    if mine is None:
        raise PipelineError(f"cannot write the hold {hold_location(folder, owner.token).uri}")
    beats: List[Optional[Lease]] = [mine]
    stop, lost = threading.Event(), []
    beat = threading.Thread(target=_heartbeat, args=(beats, client, seconds, renew_every, stop, lost, clock),
                            name="lease-heartbeat", daemon=True)
    beat.start()  # before the runs' leases are taken: however long this process waits, its hold stays live
    held: List[Lease] = []
    try:
        held = _acquire_all(folder, sorted(set(runs)), client, owner, _name(mine.loc), purpose, poll, waiting,
                            clock)
        yield held
    finally:
        try:
            for lease in held:
                if not release(lease, client):
                    lost.append(_taken_over(lease, read_lease(lease.loc, client)))
        finally:  # a release the store refused still stops the heartbeat and lets the hold go
            stop.set()
            beat.join()
            if beats[0] is not None:
                release(beats[0], client)
    if lost:
        raise LeaseLost("; ".join(lost))


def _acquire_all(folder: Location, runs: List[str], client, owner: Owner, hold_name: str, purpose: str,
                 poll: Tuple[float, float], waiting: Optional[Callable[[str], None]],
                 clock: Callable[[], float]) -> List[Lease]:
    leases_folder, delay, said = folder.child("_leases"), poll[0], ""
    while True:
        judge = Judge(leases_folder, client, owner.boot)
        present = set(lease_names(leases_folder, client))  # one listing instead of a read per run
        # look first: a waiting process takes nothing
        blocker = _live_holder(folder, runs, present, owner, judge, client, clock())
        if blocker is None:
            held: List[Lease] = []
            for run in runs:
                lease, holder = try_acquire(lease_location(folder, run), owner, purpose, client=client,
                                            hold=hold_name, judge=judge, absent=file_name(run) not in present,
                                            clock=clock)
                if lease is None:
                    blocker = run, holder
                    break
                held.append(lease)
            else:
                return held
            for lease in held:  # all or nothing: never hold some runs while waiting for others
                release(lease, client)
        run, holder = blocker
        message = f"waiting for {describe(holder)}'s lease on run {run} ({holder.get('purpose') or 'no purpose'})"
        if message != said:
            log.info("%s", message)
            said = message
        if waiting is not None:
            waiting(message)
        time.sleep(delay * random.uniform(0.8, 1.2))
        delay = min(delay * 1.5, poll[1])


def _live_holder(folder: Location, runs: List[str], present: set, owner: Owner, judge: Judge, client,
                 now: float) -> Optional[Tuple[str, dict]]:
    """The first run whose lease another process holds and may still be using, with the record that says so."""
    for run in runs:
        if file_name(run) not in present:
            continue
        current = read_lease(lease_location(folder, run), client)
        if current is None or _token(current[0]) == owner.token:
            continue
        reason, decider = judge.verdict(current[0], now)
        if reason is None:
            return run, decider
    return None


def _heartbeat(beats: List[Optional[Lease]], client, seconds: float, every: float, stop: threading.Event,
               lost: List[str], clock: Callable[[], float]) -> None:
    """Renew the hold (one request a beat, whatever the batch's size) until stopped or lost."""
    while not stop.wait(every) and beats[0] is not None:
        try:
            beats[0] = renew(beats[0], client, seconds, clock)
        except LeaseLost as e:
            log.error("%s", e)
            lost.append(str(e))
            beats[0] = None
        except Exception as e:  # a transient fault: the next beat tries again, well before the expiry
            log.warning("could not renew the lease on %s: %s", _name(beats[0].loc), told(e)[0])


def _new_record(loc: Location, owner: Owner, purpose: str, now: float, seconds: float,
                hold: Optional[str]) -> dict:
    record = {"lease": _name(loc), "purpose": purpose, "owner": asdict(owner), "acquired_at": now}
    if hold is not None:
        record["hold"] = hold
    else:
        record.update(heartbeat_at=now, expires_at=now + seconds)
    return record


def _taken_over(lease: Lease, current: Optional[Tuple[dict, str]]) -> str:
    holder = describe(current[0]) if current else "nobody (it was deleted)"
    return f"the lease on {_name(lease.loc)} was taken over by {holder} while this process held it"


def _token(record: dict) -> Optional[str]:
    owner = record.get("owner")
    return owner.get("token") if isinstance(owner, dict) else None


def _name(loc: Location) -> str:
    return os.path.basename(loc.key)[: -len(".json")]


def _folder_of(loc: Location) -> Location:
    """The folder a lease lies in, where its hold lies too."""
    if loc.is_s3:
        return Location("s3", loc.bucket, loc.key.rsplit("/", 1)[0])
    return Location("file", "", os.path.dirname(loc.key))


def _boot_id() -> str:
    """Host, kernel boot and pid namespace: two containers of one host see different processes under one pid."""
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            boot = f.read().strip()
        namespace = os.readlink("/proc/self/ns/pid")
    except OSError:
        return ""  # no way to tell a live holder on this machine from a dead one: only the expiry frees its leases
    return f"{socket.gethostname()}/{boot}/{namespace}"


def _proc_stat(pid: int) -> Optional[Tuple[str, int]]:
    """(state, start time in ticks) from /proc/<pid>/stat, or None when it cannot be read."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return fields[0], int(fields[19])


def process_start(pid: int) -> Optional[int]:
    """When `pid` started, in clock ticks since boot (None when it is not running here)."""
    stat = _proc_stat(pid)
    return stat[1] if stat else None
