"""Leases on runs, so that at most one process works on a run at any moment, wherever and however it was started.

Luigi's central scheduler only refuses a task id another worker is running, and --local-scheduler has nothing but
a pid file for identical command lines on one machine (checked, then written: not atomic). Batch ids come from the
runs left when a process planned and from --batch-size, so two processes can hold overlapping batches under
different ids: the lease is therefore taken per run, for all runs of a batch at once or not at all (no process
holds some while waiting for others, so two batches can never wait for each other).

A lease is the object `<markers>/<table>/_leases/run=<id>.json`, created only if absent and replaced only if
unchanged since read: S3 conditional writes (If-None-Match / If-Match on the ETag), or a compare-and-swap under an
flock(2) on a local markers folder. The holder renews it while it works and deletes it when done. A lease whose
expiry has passed, or whose process on this very machine (same boot) is gone, is stale and taken over atomically,
so a resume right after kill -9 does not wait. Expiry compares the holder's clock with ours: keep clocks in sync.
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import random
import secrets
import socket
import threading
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Callable, Iterator, List, Optional, Sequence, Tuple

from spark import storage
from spark.errors import error_code, is_not_found
from spark.runid import file_name
from spark.storage import Location

from .errors import PipelineError

log = logging.getLogger("manifest.leases")

LEASE_SECONDS = 300.0  # a holder that stops renewing (frozen, or killed on another machine) blocks this long
RENEW_EVERY = 30.0
POLL_SECONDS = (0.5, 5.0)  # first and longest wait between attempts while another process holds a lease
_RACES = 8  # attempts when other processes keep changing a lease between our read and our write


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


def describe(record: dict) -> str:
    """Who holds a lease, for messages: 'host pid N'."""
    owner = record.get("owner") if isinstance(record, dict) else None
    if not isinstance(owner, dict):
        return "an unknown process"
    return f"{owner.get('host', '?')} pid {owner.get('pid', '?')}"


def stale_reason(record: dict, now: float, boot: str,
                 alive: Optional[Callable[[int, Optional[int]], bool]] = None) -> Optional[str]:
    """Why a lease may be taken over, or None while its holder may still be working."""
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


def try_acquire(loc: Location, owner: Owner, purpose: str = "", seconds: float = LEASE_SECONDS,
                client=None) -> Tuple[Optional[Lease], Optional[dict]]:
    """One attempt: (the lease, None), or (None, the live record of the process that holds it)."""
    current = None
    for _ in range(_RACES):
        current = read_lease(loc, client)
        now = time.time()
        record = _new_record(loc, owner, purpose, now, seconds)
        if current is None:
            version = put_lease(loc, record, None, client)
        else:
            held, seen = current
            if _token(held) == owner.token:
                return Lease(loc, held, seen), None  # ours already: an earlier write's answer was lost
            reason = stale_reason(held, now, owner.boot)
            if reason is None:
                return None, held
            version = put_lease(loc, record, seen, client)
            if version is not None:
                log.warning("took over the lease on %s from %s (%s)", _name(loc), describe(held), reason)
        if version is not None:
            log.info("lease on %s acquired by %s (%s) at %.6f", _name(loc), describe(record), purpose, time.time())
            return Lease(loc, record, version), None
    return None, (current[0] if current else {})


def renew(lease: Lease, client=None, seconds: float = LEASE_SECONDS) -> Lease:
    """Push the expiry forward; LeaseLost when another process has taken the lease over meanwhile."""
    now = time.time()
    record = dict(lease.record, heartbeat_at=now, expires_at=now + seconds)
    version = put_lease(lease.loc, record, lease.version, client)
    if version is None:
        current = read_lease(lease.loc, client)
        if current and current[0] == record:  # this very write landed, only its answer was lost (and retried)
            return Lease(lease.loc, record, current[1])
        holder = describe(current[0]) if current else "nobody (it was deleted)"
        raise LeaseLost(f"the lease on {_name(lease.loc)} was taken over by {holder} while this process held it")
    return Lease(lease.loc, record, version)


def release(lease: Lease, client=None) -> bool:
    """Delete the lease unless another process has taken it over (then False, and a warning)."""
    log.info("lease on %s released by %s at %.6f", _name(lease.loc), describe(lease.record), time.time())
    if _delete(lease.loc, lease.version, client):
        return True
    log.warning("the lease on %s was no longer held by this process when it released it", _name(lease.loc))
    return False


@contextmanager
def hold(folder: Location, runs: Sequence[str], client=None, *, purpose: str = "", seconds: float = LEASE_SECONDS,
         renew_every: float = RENEW_EVERY, poll: Tuple[float, float] = POLL_SECONDS,
         waiting: Optional[Callable[[str], None]] = None) -> Iterator[List[Lease]]:
    """Hold the lease of every run for the block: wait while another process holds any, renew, release at the end.

    `folder` is the marker folder (<markers>/<table>); `waiting` receives a status line while this process waits.
    Raises LeaseLost after the block when a lease was taken over during it (the process was frozen too long).
    """
    if folder.is_s3 and client is None:
        client = storage.s3_client()
    held = _acquire_all(folder, sorted(set(runs)), client, purpose, seconds, poll, waiting)
    stop, lost = threading.Event(), []
    beat = threading.Thread(target=_heartbeat, args=(held, client, seconds, renew_every, stop, lost),
                            name="lease-heartbeat", daemon=True)
    beat.start()
    try:
        yield held
    finally:
        stop.set()
        beat.join()
        for lease in held:
            if lease is not None:
                release(lease, client)
    if lost:
        raise LeaseLost("; ".join(lost))


def _acquire_all(folder: Location, runs: List[str], client, purpose: str, seconds: float,
                 poll: Tuple[float, float], waiting: Optional[Callable[[str], None]]) -> List[Lease]:
    owner, delay, said = Owner.here(), poll[0], ""
    while True:
        blocker = _live_holder(folder, runs, owner, client)  # look first: a waiting process takes nothing
        if blocker is None:
            held: List[Lease] = []
            for run in runs:
                lease, holder = try_acquire(lease_location(folder, run), owner, purpose, seconds, client)
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


def _live_holder(folder: Location, runs: List[str], owner: Owner, client) -> Optional[Tuple[str, dict]]:
    """The first run whose lease another process holds and may still be using, with that lease's record."""
    for run in runs:
        current = read_lease(lease_location(folder, run), client)
        if current is None:
            continue
        record = current[0]
        if _token(record) != owner.token and stale_reason(record, time.time(), owner.boot) is None:
            return run, record
    return None


def _heartbeat(held: List[Optional[Lease]], client, seconds: float, every: float, stop: threading.Event,
               lost: List[str]) -> None:
    while not stop.wait(every):
        for i, lease in enumerate(held):
            if lease is None:
                continue
            try:
                held[i] = renew(lease, client, seconds)
            except LeaseLost as e:
                log.error("%s", e)
                lost.append(str(e))
                held[i] = None
            except Exception as e:  # a transient fault: the next beat tries again, well before the expiry
                log.warning("could not renew the lease on %s: %s", _name(lease.loc), type(e).__name__)


def _new_record(loc: Location, owner: Owner, purpose: str, now: float, seconds: float) -> dict:
    return {"lease": _name(loc), "purpose": purpose, "owner": asdict(owner), "acquired_at": now,
            "heartbeat_at": now, "expires_at": now + seconds}


def _token(record: dict) -> Optional[str]:
    owner = record.get("owner")
    return owner.get("token") if isinstance(owner, dict) else None


def _name(loc: Location) -> str:
    return os.path.basename(loc.key)[: -len(".json")]


# Storage: read, conditional put, conditional delete. A failed precondition is an answer (None/False), not an error.

def read_lease(loc: Location, client) -> Optional[Tuple[dict, str]]:
    """The lease's record and version, or None when there is none."""
    if loc.is_s3:
        try:
            resp = client.get_object(Bucket=loc.bucket, Key=loc.key)
        except client.exceptions.ClientError as e:
            if is_not_found(e):
                return None
            raise _failure("read", loc, e) from None
        return _parse(resp["Body"].read()), resp["ETag"]
    with _locked(loc):
        return _read_local(loc.key)


def put_lease(loc: Location, record: dict, expect: Optional[str], client) -> Optional[str]:
    """Write `record` if the lease is absent (expect None) or still at version `expect`; the new version or None."""
    body = json.dumps(record, indent=2, sort_keys=True).encode()
    if loc.is_s3:
        condition = {"IfNoneMatch": "*"} if expect is None else {"IfMatch": expect}
        try:
            return client.put_object(Bucket=loc.bucket, Key=loc.key, Body=body, **condition)["ETag"]
        except client.exceptions.ClientError as e:
            if _lost_race(e):
                return None
            raise _failure("write", loc, e) from None
    with _locked(loc):
        current = _read_local(loc.key)
        if (current[1] if current else None) != expect:
            return None
        storage.write_bytes(loc, body)
        return _digest(body)


def _delete(loc: Location, expect: str, client) -> bool:
    """Delete the lease if still at version `expect`; True when it is gone, False when another holds it."""
    if loc.is_s3:
        try:
            client.delete_object(Bucket=loc.bucket, Key=loc.key, IfMatch=expect)
            return True
        except client.exceptions.ClientError as e:
            if is_not_found(e):  # gone already (a retried delete that had landed)
                return True
            if _lost_race(e):
                return False
            raise _failure("delete", loc, e) from None
    with _locked(loc):
        current = _read_local(loc.key)
        if current is not None and current[1] != expect:
            return False
        if current is not None:
            os.remove(loc.key)
        return True


def _lost_race(error) -> bool:
    """412: the condition failed; 409: a concurrent conditional write won; 404: If-Match on a deleted lease."""
    lost = ("PreconditionFailed", "ConditionalRequestConflict", "NoSuchKey")
    return _status(error) in (409, 412) or error_code(error) in lost


def _status(error) -> Optional[int]:
    return error.response.get("ResponseMetadata", {}).get("HTTPStatusCode")


def _failure(verb: str, loc: Location, error) -> PipelineError:
    hint = ": the markers store must support S3 conditional writes" if _status(error) == 501 else ""
    return PipelineError(f"cannot {verb} the lease {loc.uri}: {error_code(error) or _status(error)}{hint}")


def _read_local(path: str) -> Optional[Tuple[dict, str]]:
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return None
    return _parse(data), _digest(data)


@contextmanager
def _locked(loc: Location) -> Iterator[None]:
    """Serialise every read-compare-write of one local leases folder (flock works on NFS v4 too)."""
    folder = os.path.dirname(loc.key)
    os.makedirs(folder, exist_ok=True)
    fd = os.open(os.path.join(folder, ".lock"), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _parse(data: bytes) -> dict:
    try:
        record = json.loads(data)
    except ValueError:
        return {}
    return record if isinstance(record, dict) else {}


def _digest(data: bytes) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


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
