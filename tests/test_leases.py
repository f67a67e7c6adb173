"""Run leases on a local markers folder and on S3 (the moto server): exclusive, renewed, released, taken over
only when stale, and exactly one winner when processes race."""
import dataclasses
import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from bench import servers
from pipeline.rules.errors import AwsRefused, PipelineError
from pipeline.stores import leases
from spark import storage
from spark.storage import parse_location

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(params=["local", "s3"])
def folder(request, tmp_path):
    """A marker folder (<markers>/<table>) and the client to reach it."""
    if request.param == "local":
        return parse_location(str(tmp_path / "markers" / "manifest")), None
    request.getfixturevalue("moto_reset")
    client = storage.s3_client()
    client.create_bucket(Bucket="ops")
    return parse_location("s3://ops/markers/manifest"), client


def other_owner(**changes) -> leases.Owner:
    """Another holder on this machine (a token of its own), by default this very live process."""
    return dataclasses.replace(leases.Owner.here(), **changes)


class Clock:
    """Epoch seconds that move only when the test says: expiries are decided by it, not by the machine's speed."""

    def __init__(self):
        self.now = time.time()

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def eventually(condition, what: str, timeout: float = 30.0) -> None:
    """Wait for `condition()` (another thread's doing), however slow the machine; fail after `timeout`."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"never: {what}"
        time.sleep(0.01)


def stored(loc, client):
    current = leases.read_lease(loc, client)
    return current[0] if current else None


def dead_process() -> tuple:
    """(pid, start ticks) of a process that ran on this machine and is gone (reaped)."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    started = leases.process_start(proc.pid)
    proc.kill()
    proc.wait()
    return proc.pid, started


def test_acquire_is_exclusive_until_released(folder):
    root, client = folder
    loc = leases.lease_location(root, "2026-05-01-00-00-00")
    first, second = other_owner(), other_owner()
    lease, holder = leases.try_acquire(loc, first, "batch one", 60, client)
    assert lease is not None and holder is None
    record = stored(loc, client)
    assert record["owner"]["token"] == first.token and record["purpose"] == "batch one"
    assert record["owner"]["pid"] == os.getpid() and record["expires_at"] > time.time() + 50

    blocked, holder = leases.try_acquire(loc, second, "batch two", 60, client)
    assert blocked is None and holder["owner"]["token"] == first.token
    assert leases.describe(holder) == f"{first.host} pid {first.pid}"

    assert leases.release(lease, client)
    assert stored(loc, client) is None
    lease2, _ = leases.try_acquire(loc, second, "batch two", 60, client)
    assert lease2 is not None and stored(loc, client)["owner"]["token"] == second.token


def test_renewal_moves_the_expiry_and_the_version(folder):
    root, client = folder
    loc = leases.lease_location(root, "r1")
    lease, _ = leases.try_acquire(loc, other_owner(), "b", 5, client)
    time.sleep(0.05)
    renewed = leases.renew(lease, client, 60)
    assert renewed.version != lease.version
    assert renewed.record["expires_at"] > lease.record["expires_at"] + 50
    assert stored(loc, client)["heartbeat_at"] == renewed.record["heartbeat_at"]
    with pytest.raises(leases.LeaseLost):  # the old version no longer matches: the write is refused
        leases.renew(lease, client, 60)
    assert stored(loc, client)["expires_at"] == renewed.record["expires_at"]


def test_an_expired_lease_is_taken_over_and_its_old_holder_learns_it(folder):
    root, client = folder
    loc, clock = leases.lease_location(root, "r1"), Clock()
    old, _ = leases.try_acquire(loc, other_owner(), "old batch", 20, client, clock=clock)
    newcomer = other_owner()
    clock.advance(19.9)
    assert leases.try_acquire(loc, newcomer, "new batch", 60, client, clock=clock)[0] is None  # not yet expired
    clock.advance(0.1)
    taken, _ = leases.try_acquire(loc, newcomer, "new batch", 60, client, clock=clock)
    assert taken is not None and stored(loc, client)["owner"]["token"] == newcomer.token
    with pytest.raises(leases.LeaseLost, match="taken over by"):
        leases.renew(old, client, 60)
    assert not leases.release(old, client)  # releasing it would delete the newcomer's lease: refused
    assert stored(loc, client)["owner"]["token"] == newcomer.token


def test_a_dead_process_on_this_machine_loses_its_lease_at_once(folder):
    root, client = folder
    pid, started = dead_process()
    loc = leases.lease_location(root, "r1")
    dead = other_owner(pid=pid, started=started)
    leases.try_acquire(loc, dead, "killed batch", 600, client)
    taken, _ = leases.try_acquire(loc, other_owner(), "resume", 600, client)
    assert taken is not None

    far = other_owner(pid=pid, started=started, boot="elsewhere/another-boot")  # same pid on another machine
    loc2 = leases.lease_location(root, "r2")
    leases.try_acquire(loc2, far, "remote batch", 600, client)
    blocked, holder = leases.try_acquire(loc2, other_owner(), "resume", 600, client)
    assert blocked is None and holder["owner"]["boot"] == "elsewhere/another-boot"


def test_stale_reasons():
    here = leases.Owner.here()
    record = {"owner": dataclasses.asdict(here), "expires_at": time.time() + 60}
    assert leases.stale_reason(record, time.time(), here.boot) is None
    assert "expired" in leases.stale_reason(record, time.time() + 61, here.boot)
    reused = dict(record, owner=dict(record["owner"], started=here.started + 1))  # same pid, another process
    assert "is gone" in leases.stale_reason(reused, time.time(), here.boot)
    assert leases.stale_reason({"owner": "x"}, time.time(), here.boot) == "unreadable lease record"
    assert leases.process_alive(os.getpid(), here.started) and not leases.process_alive(dead_process()[0])


def test_a_corrupt_lease_is_taken_over(folder):
    root, client = folder
    loc = leases.lease_location(root, "r1")
    if loc.is_s3:
        client.put_object(Bucket=loc.bucket, Key=loc.key, Body=b"{not json")
    else:
        storage.write_bytes(loc, b"{not json")
    assert leases.try_acquire(loc, other_owner(), "b", 60, client)[0] is not None


def test_losing_a_race_between_read_and_write_gives_the_winner(folder, monkeypatch):
    """Another process creates the lease after this one read it absent: the conditional write is refused."""
    root, client = folder
    loc = leases.lease_location(root, "r1")
    winner = other_owner()
    read = leases.read_lease
    calls = []

    def read_then_lose(where, c):
        calls.append(where)
        if len(calls) == 1:
            leases.try_acquire(loc, winner, "winner", 60, client)
            return None  # what this process saw a moment before the winner wrote
        return read(where, c)

    monkeypatch.setattr(leases, "read_lease", read_then_lose)
    lease, holder = leases.try_acquire(loc, other_owner(), "loser", 60, client)
    assert lease is None and holder["owner"]["token"] == winner.token and len(calls) >= 3


def race(loc, client, contenders: int = 8):
    barrier = threading.Barrier(contenders)
    won = []

    def contend():
        owner = other_owner()
        barrier.wait()
        lease, _ = leases.try_acquire(loc, owner, owner.token, 60, client)
        if lease is not None:
            won.append(owner.token)

    threads = [threading.Thread(target=contend) for _ in range(contenders)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return won


def test_racing_threads_exactly_one_wins_local(tmp_path):
    root = parse_location(str(tmp_path / "manifest"))
    for i in range(20):
        loc = leases.lease_location(root, f"r{i}")
        won = race(loc, None)
        assert len(won) == 1 and stored(loc, None)["owner"]["token"] == won[0]


@pytest.fixture
def serial_s3():
    """A moto server that answers one request at a time, as atomic as S3 for a conditional write.

    The usual threaded moto server checks If-None-Match and then writes, unlocked: two racers can both win there
    (seen about once in 200 rounds of 8 threads), a flaw of the stand-in that real S3 does not share.
    """
    port = servers.free_port()
    code = ("from werkzeug.serving import run_simple; from moto.server import DomainDispatcherApplication, "
            f"create_backend_app; run_simple('127.0.0.1', {port}, DomainDispatcherApplication(create_backend_app), "
            "threaded=False)")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    import boto3

    client = boto3.client("s3", endpoint_url=f"http://127.0.0.1:{port}")
    deadline = time.time() + 30
    while True:
        try:
            client.create_bucket(Bucket="ops")
            break
        except Exception:
            assert time.time() < deadline and proc.poll() is None, "the serial moto server did not start"
            time.sleep(0.2)
    yield client
    servers.stop(proc)


def test_racing_threads_exactly_one_wins_s3(serial_s3):
    root = parse_location("s3://ops/markers/manifest")
    for i in range(10):
        loc = leases.lease_location(root, f"r{i}")
        won = race(loc, serial_s3)
        assert len(won) == 1 and stored(loc, serial_s3)["owner"]["token"] == won[0]


def test_hold_waits_for_every_run_then_releases(folder):
    root, client = folder
    first_has, first_may_end, first_ends = threading.Event(), threading.Event(), threading.Event()

    def first():
        with leases.hold(root, ["a", "b"], client, purpose="batch ab"):
            first_has.set()
            first_may_end.wait(30)
            first_ends.set()  # from here on the first releases its leases

    thread = threading.Thread(target=first)
    thread.start()
    first_has.wait(10)
    messages = []

    def waiting(message):
        messages.append(message)
        assert stored(leases.lease_location(root, "c"), client) is None  # nothing held while waiting
        first_may_end.set()  # the second has waited: the first may let go

    with leases.hold(root, ["c", "b"], client, purpose="batch bc", poll=(0.05, 0.1), waiting=waiting) as held:
        assert first_ends.is_set()
        assert sorted(lease.record["lease"] for lease in held) == ["run=b", "run=c"]
        assert stored(leases.lease_location(root, "b"), client)["purpose"] == "batch bc"
    thread.join()
    here = leases.Owner.here()
    assert messages and messages[0] == f"waiting for {here.host} pid {here.pid}'s lease on run b (batch ab)"
    assert all(stored(leases.lease_location(root, r), client) is None for r in "abc")


def test_hold_renews_beyond_the_expiry(folder):
    root, client, clock = *folder, Clock()
    with leases.hold(root, ["a"], client, purpose="long", seconds=60, renew_every=0.02, clock=clock) as held:
        hold_loc = leases.hold_location(root, held[0].record["owner"]["token"])
        first_expiry = stored(hold_loc, client)["expires_at"]
        clock.advance(50)
        eventually(lambda: stored(hold_loc, client)["expires_at"] == clock.now + 60, "the hold renewed")
        clock.advance(20)  # past the first expiry, within the renewed one
        assert clock.now > first_expiry
        blocked, holder = leases.try_acquire(leases.lease_location(root, "a"), other_owner(), "rival", 60, client,
                                             clock=clock)
        assert blocked is None and holder["purpose"] == "long"


def test_hold_reports_a_lease_taken_over_while_held(folder):
    root, client, clock = *folder, Clock()
    loc = leases.lease_location(root, "a")
    rival = other_owner()
    with pytest.raises(leases.LeaseLost, match="run=a was taken over by"):
        with leases.hold(root, ["a"], client, purpose="frozen", seconds=20, renew_every=600, clock=clock):
            clock.advance(21)  # expired: as if this process had been frozen longer than its lease
            assert leases.try_acquire(loc, rival, "rival", 60, client, clock=clock)[0] is not None
    assert stored(loc, client)["owner"]["token"] == rival.token  # the rival's lease survives the release


def test_a_release_the_store_refuses_still_stops_the_heartbeat_and_lets_the_hold_go(folder, monkeypatch):
    """A run's lease whose delete fails (AWS denied s3:DeleteObject, say): the error is the block's, and neither the
    heartbeat thread nor the hold outlives it."""
    root, client = folder
    real_delete = leases.delete_lease

    def refused(loc, expect, store_client):
        if "run=" in loc.key:
            raise PipelineError(f"cannot delete the lease {loc.uri}: AccessDenied")
        return real_delete(loc, expect, store_client)

    monkeypatch.setattr(leases, "delete_lease", refused)
    with pytest.raises(PipelineError, match="cannot delete the lease"):
        with leases.hold(root, ["a"], client, purpose="refused release", renew_every=0.01) as held:
            hold_loc = leases.hold_location(root, held[0].record["owner"]["token"])
    assert not [t for t in threading.enumerate() if t.name == "lease-heartbeat"]
    assert stored(hold_loc, client) is None


def test_a_resume_after_kill_9_does_not_wait(folder):
    """A real process holds a run's lease and is killed with SIGKILL: the next holder takes it over at once."""
    root, client = folder
    code = ("import sys, time; from pipeline.stores import leases; from spark import storage; "
            f"root = storage.parse_location({root.uri!r}); "
            "client = storage.s3_client() if root.is_s3 else None; "
            "cm = leases.hold(root, ['a'], client, purpose='victim'); cm.__enter__(); "
            "print('held', flush=True); time.sleep(600)")
    victim = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE, text=True,
                              env=dict(os.environ, PYTHONPATH=ROOT))
    assert victim.stdout.readline().strip() == "held"
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait()
    assert stored(leases.lease_location(root, "a"), client)["purpose"] == "victim"
    def waiting(message):
        raise AssertionError(f"the resume waited: {message}")

    with leases.hold(root, ["a"], client, purpose="resume", waiting=waiting):
        pass
    names = [o.name for o in storage.list_objects(root.child("_leases"), client, recursive=False)]
    assert [n for n in names if n != ".lock"] == []  # the victim's lease and hold are both gone


def test_lease_files_are_json_under_the_leases_folder(tmp_path):
    root = parse_location(str(tmp_path / "manifest"))
    with leases.hold(root, ["2026-05-01-00-00-00"], purpose="batch x"):
        folder = tmp_path / "manifest" / "_leases"
        path = folder / "run=2026-05-01-00-00-00.json"
        record = json.loads(path.read_text())
        assert set(record) == {"lease", "purpose", "owner", "acquired_at", "hold"}
        assert set(record["owner"]) == {"host", "boot", "pid", "started", "token"}
        hold = json.loads((folder / f"{record['hold']}.json").read_text())
        assert set(hold) == {"lease", "purpose", "owner", "acquired_at", "heartbeat_at", "expires_at"}
        assert hold["owner"] == record["owner"] and hold["purpose"] == "batch x"
    assert sorted(p.name for p in folder.iterdir()) == [".lock"]


def s3_requests(client) -> list:
    """(operation, key, conditional) of every S3 request the client sends from now on."""
    sent = []

    def record(params, model, **_):
        sent.append((model.name, params.get("Key") or params.get("Prefix"),
                     bool(params.get("IfMatch") or params.get("IfNoneMatch"))))

    client.meta.events.register("before-parameter-build.s3", record)
    return sent


def test_a_run_costs_two_requests_however_long_its_batch_holds_it(moto_reset):
    """Only the hold is renewed: the runs' leases are written once and deleted once, with no read (one listing
    of the leases folder shows them absent)."""
    client = storage.s3_client()
    client.create_bucket(Bucket="ops")
    root = parse_location("s3://ops/markers/manifest")
    runs = [f"2026-05-01-00-{m:02d}-00" for m in range(40)]
    sent = s3_requests(client)
    with leases.hold(root, runs, client, purpose="long batch", renew_every=0.05):
        hold_key = leases.hold_location(root, leases.Owner.here().token).key  # any token: only its folder is used
        before = len(sent)
        while sum(1 for op, key, _ in sent[before:] if op == "PutObject") < 3:  # three beats at least
            time.sleep(0.05)
    runs_sent = [(op, key) for op, key, _ in sent if "/run=" in key]
    assert sorted(runs_sent) == sorted([("PutObject", leases.lease_location(root, r).key) for r in runs] +
                                       [("DeleteObject", leases.lease_location(root, r).key) for r in runs])
    holds = [(op, key, conditional) for op, key, conditional in sent if "/hold=" in key]
    assert all(conditional for _, _, conditional in holds) and len({key for _, key, _ in holds}) == 1
    assert holds[0][0] == "PutObject" and holds[-1][0] == "DeleteObject" and len(holds) >= 5
    assert os.path.dirname(holds[0][1]) == os.path.dirname(hold_key)
    assert [op for op, key, _ in sent if "/run=" not in key and "/hold=" not in key] == ["ListObjectsV2"]


def test_a_dead_batchs_leases_are_taken_over_at_once_and_its_hold_deleted(folder):
    root, client = folder
    pid, started = dead_process()
    dead = other_owner(pid=pid, started=started)
    hold, _ = leases.try_acquire(leases.hold_location(root, dead.token), dead, "killed batch", 600, client)
    name = hold.record["lease"]
    for run in ("a", "b"):
        assert leases.try_acquire(leases.lease_location(root, run), dead, "killed batch", 600, client,
                                  hold=name)[0] is not None
    def waiting(message):
        raise AssertionError(f"waited for a dead batch: {message}")

    with leases.hold(root, ["a", "b", "c"], client, purpose="resume", waiting=waiting) as held:
        assert [lease.record["purpose"] for lease in held] == ["resume"] * 3
        assert stored(hold.loc, client) is None  # the dead hold is gone with its first lease taken over
    assert storage.list_objects(root.child("_leases"), client, recursive=False) in ([], [storage.ObjectInfo(
        ".lock", 0)])


def test_a_live_hold_keeps_its_runs_and_one_gone_frees_them(folder):
    root, client = folder
    rival = other_owner()  # this very process: alive
    hold, _ = leases.try_acquire(leases.hold_location(root, rival.token), rival, "rival batch", 60, client)
    loc = leases.lease_location(root, "a")
    leases.try_acquire(loc, rival, "rival batch", 60, client, hold=hold.record["lease"])
    blocked, holder = leases.try_acquire(loc, other_owner(), "mine", 60, client)
    assert blocked is None and holder == stored(hold.loc, client)  # the hold decides, and says who and why
    judge = leases.Judge(root.child("_leases"), client, rival.boot)
    assert judge.verdict(stored(loc, client), time.time())[0] is None
    assert "expired" in judge.verdict(stored(loc, client), time.time() + 61)[0]
    assert leases.release(hold, client)
    assert "is gone" in leases.Judge(root.child("_leases"), client, rival.boot).verdict(stored(loc, client),
                                                                                       time.time())[0]
    assert leases.try_acquire(loc, other_owner(), "mine", 60, client)[0] is not None
    forged = dict(stored(loc, client), hold="../../elsewhere")
    assert judge.verdict(forged, time.time())[0] == "unreadable lease record"


def test_a_renewal_whose_answer_was_lost_is_still_ours(folder, monkeypatch):
    """The write landed but its answer was lost and the retry refused: the record read back is this renewal."""
    root, client = folder
    lease, _ = leases.try_acquire(leases.lease_location(root, "r1"), other_owner(), "b", 60, client)
    put = leases.put_lease
    monkeypatch.setattr(leases, "put_lease", lambda *args: put(*args) and None)
    renewed = leases.renew(lease, client, 120)
    assert renewed.version == leases.read_lease(lease.loc, client)[1] != lease.version
    monkeypatch.setattr(leases, "put_lease", put)
    assert leases.release(renewed, client) and leases.release(renewed, client)  # gone is released
    assert stored(lease.loc, client) is None


def test_a_store_failure_is_one_line(moto_reset):
    loc = leases.lease_location(parse_location("s3://no-such-bucket/markers/manifest"), "r1")
    with pytest.raises(AwsRefused) as info:  # a refusal: every batch would meet it
        leases.try_acquire(loc, other_owner(), "b", 60, storage.s3_client())
    assert str(info.value).startswith("s3://no-such-bucket does not exist (s3:GetObject by the default AWS "
                                      "credential chain): NoSuchBucket")
