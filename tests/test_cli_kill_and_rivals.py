"""kill -9 mid-backfill (in a state read from S3; the slow variant at seeded random moments), and two
PopulateManifest processes at once (--local-scheduler, and a real luigid on 127.0.0.1), through the real `luigi`
command against the moto server.

Every scenario must end as the module's uninterrupted reference run: the same table, the same markers (up to what
legitimately differs: when, in which batch, and which of the processings that met a key wrote it), and a marker
must never exist for a run whose items are not all in the table.
"""
import functools
import os
import random
import re
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional

import pytest

from bench import servers
from bench.archive import ArchiveTruth
from pipeline.stores import leases
from pipeline.stores.markers import MarkerStore
from spark import storage
from spark.storage import parse_location
from tests.cli import (
    ALREADY_RUNNING,
    NOT_RUN,
    luigi_env,
    make_archive,
    populate_command,
    run_luigi,
    storage_config,
    table_items,
)

ARCHIVE = "s3://archive/interrupts"
SETTLED = ("written", "already_present", "batch_duplicates")  # what became of a key the run owes the table
# What differs between two complete backfills with the same outcome: which processing met a key first, and cost.
HOW_PROCESSED = ("batch_id", "timings")
HOW_COUNTED = ("throttle_retries", "wcu_consumed")


@dataclass
class Scene:
    endpoint: str
    folder: Path
    runs: List[str]
    truth: ArchiveTruth
    markers: Dict[str, dict]  # the reference markers, normalized
    seconds: float  # how long the uninterrupted reference run took


def command(folder: Path, name: str, *extra: str, batch_size: int = 2, scheduler: Optional[List[str]] = None):
    """The backfill into table `name` with markers under s3://ops/<name>, its storage config in `folder`."""
    storage_file = storage_config(folder / f"{name}.json", name)
    return populate_command(ARCHIVE, storage_file, f"s3://ops/{name}", "--create-table", "--batch-size",
                            str(batch_size), "--max-write-capacity", "300", *extra, scheduler=scheduler)


@functools.cache
def store(name: str) -> MarkerStore:
    """One store (and S3 client) per table: polling must not take the CPU the backfill under test needs."""
    return MarkerStore(parse_location(f"s3://ops/{name}"), name)


def normalized(marker: dict) -> dict:
    """A marker without its time, batch and costs, and without which of several processings wrote a key."""
    report = {k: v for k, v in marker["report"].items() if k not in HOW_PROCESSED}
    counts = {k: v for k, v in report["counts"].items() if k not in HOW_COUNTED + SETTLED}
    counts["settled"] = sum(report["counts"].get(k, 0) for k in SETTLED)
    return {"run": marker["run"], "report": dict(report, counts=counts)}


def differences(got, want, path: str = "") -> List[str]:
    """Where two JSON values differ, as 'path: got != want' lines."""
    if isinstance(got, dict) and isinstance(want, dict):
        return [d for k in sorted(set(got) | set(want)) for d in differences(got.get(k), want.get(k), f"{path}/{k}")]
    return [] if got == want else [f"{path}: {got!r} != {want!r}"]


def markers_of(name: str) -> Dict[str, dict]:
    s = store(name)
    return {run: normalized(s.read_marker(run)) for run in sorted(s.done_runs())}


def lease_records(name: str) -> List[dict]:
    """The records under _leases/: the runs' leases and the holds they name. A lease released between the listing
    and its read (the backfill runs on while this polls) is no longer held: left out."""
    s = store(name)
    folder = s.folder.child("_leases")
    records = (s.read_json(folder.child(o.name)) for o in storage.list_objects(folder, s.client))
    return [record for record in records if record is not None]


def run_leases(name: str) -> List[dict]:
    return [r for r in lease_records(name) if r["lease"].startswith("run=")]


def assert_markers_proven(scene: Scene, name: str) -> set:
    """No marker for a run with a missing item: markers are listed first, the table read after."""
    done = store(name).done_runs()
    if not done:
        return done
    items = table_items(name)
    for run in done:
        for key, (etl, _) in scene.truth.expected_items(now=time.time(), runs=[run]).items():
            assert key in items and items[key][0] <= etl, f"run {run} is marked but item {key} is missing or later"
    return done


def assert_as_reference(scene: Scene, name: str, runs: Optional[List[str]] = None) -> None:
    runs = runs or scene.runs
    assert table_items(name) == scene.truth.expected_items(now=time.time(), runs=runs)
    got, want = markers_of(name), {r: scene.markers[r] for r in runs}
    assert got == want, differences(got, want)
    s, here = store(name), leases.Owner.here()
    judge = leases.Judge(s.folder.child("_leases"), s.client, here.boot)
    for record in lease_records(name):  # a lease left behind belongs to a killed process, never to a live one
        assert judge.verdict(record, time.time())[0], record


@pytest.fixture(scope="module")
def scene(moto_endpoint, tmp_path_factory) -> Scene:
    servers.reset_moto(moto_endpoint)
    runs, truth = make_archive(4, 40, ARCHIVE, malformed_fraction=0.01, no_fingerprint_fraction=0.02,
                               stream_enrich_runs=1, seed=23)
    folder = tmp_path_factory.mktemp("interrupts")
    started = time.monotonic()
    proc = run_luigi(command(folder, "reference"), folder, luigi_env(moto_endpoint))
    seconds = time.monotonic() - started
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert table_items("reference") == truth.expected_items(now=time.time())
    reference = markers_of("reference")
    assert set(reference) == set(runs) and lease_records("reference") == []
    return Scene(moto_endpoint, folder, runs, truth, reference, seconds)


# Two processes at once ------------------------------------------------------------------------------------------

_ACQUIRED = re.compile(r"lease on run=(\S+) acquired by \S+ pid (\d+) \(.*\) at ([\d.]+)")
_RELEASED = re.compile(r"lease on run=(\S+) released by \S+ pid (\d+) at ([\d.]+)")
_TO_DO = re.compile(r"batch \S+: \d+ runs to do: ?(.*)$")


def processed_runs(logs: List[str]) -> List[str]:
    """Every run a batch set out to do, over all the processes' logs (a run twice = processed twice)."""
    return sorted(run for log in logs for line in log.splitlines() for m in [_TO_DO.search(line)] if m
                  for run in m.group(1).split())


def assert_leases_never_overlap(logs: List[str]) -> None:
    """The hold intervals the processes logged (from after the write to before the release) never overlap."""
    intervals: Dict[str, list] = {}
    for log in logs:
        open_at: Dict[tuple, float] = {}
        for line in log.splitlines():
            if m := _ACQUIRED.search(line):
                open_at[m.group(1), m.group(2)] = float(m.group(3))
            elif m := _RELEASED.search(line):
                begin = open_at.pop((m.group(1), m.group(2)))
                intervals.setdefault(m.group(1), []).append((begin, float(m.group(3)), m.group(2)))
        assert not open_at, f"leases never released: {open_at}"
    for run, spans in intervals.items():
        spans.sort()
        for (_, end, pid), (begin, _, other) in zip(spans, spans[1:]):
            assert begin >= end, f"run {run}: pid {other} held its lease before pid {pid} released it"


def rivals(scene: Scene, commands: List[List[str]], delay: float = 0.0) -> List[subprocess.CompletedProcess]:
    procs = []
    for i, cmd in enumerate(commands):
        if i and delay:
            time.sleep(delay)
        procs.append(subprocess.Popen(cmd, cwd=scene.folder, env=luigi_env(scene.endpoint), text=True,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE))
    results = []
    for cmd, proc in zip(commands, procs):
        out, err = proc.communicate(timeout=600)
        results.append(subprocess.CompletedProcess(cmd, proc.returncode, out, err))
    return results


def check_rivals(scene: Scene, name: str, results, runs: Optional[List[str]] = None) -> None:
    logs = [r.stderr for r in results]
    assert processed_runs(logs) == sorted(runs or scene.runs), "every run processed once, by one process"
    assert_leases_never_overlap(logs)
    assert_as_reference(scene, name, runs)


def local_rivals(scene: Scene, name: str, delay: float = 0.0) -> None:
    """Like two machines (each its own Luigi pid-lock folder) with other batch sizes: overlapping batch ids."""
    results = rivals(scene, [
        command(scene.folder, name, "--lock-pid-dir", str(scene.folder / f"{name}-a"), batch_size=2),
        command(scene.folder, name, "--lock-pid-dir", str(scene.folder / f"{name}-b"), batch_size=3),
    ], delay)
    for r in results:
        assert r.returncode == 0, r.stderr[-3000:]
    assert any("waiting for " in r.stderr for r in results), "the two processes never met"
    check_rivals(scene, name, results)


def test_two_processes_with_local_schedulers(scene):
    local_rivals(scene, "rivals-local")


def test_two_processes_under_one_luigid(scene, luigid):
    """Luigi itself gives a batch to one worker; the other exits 10 (already running) or 25 (not run: luigid gave
    a batch it had planned to the other worker), and a run of the command afterwards exits 0 with nothing to do."""
    name, runs = "rivals-luigid", scene.runs[2:]
    commands = [command(scene.folder, name, "--since", runs[0], "--lock-pid-dir", str(scene.folder / f"{name}-{host}"),
                        scheduler=luigid.scheduler) for host in "ab"]
    results = rivals(scene, commands)
    codes = sorted(r.returncode for r in results)
    assert set(codes) <= {0, ALREADY_RUNNING, NOT_RUN}, [r.stderr[-2000:] for r in results]
    assert sum(f"Populated {name}: " in r.stdout for r in results) == 1, [r.stdout[-1500:] for r in results]
    check_rivals(scene, name, results, runs)

    # The check runs with its own scheduler: luigid ignores a new PENDING claim for 10 s after a task is DONE
    # ([scheduler] stable_done_cooldown_secs), so the same command against it would exit 25 without running.
    again = run_luigi(command(scene.folder, name, "--since", runs[0]), scene.folder, luigi_env(scene.endpoint))
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"Nothing to do for {name}: every run at or after --since is already done" in again.stdout
    assert processed_runs([again.stderr]) == []


@pytest.mark.slow
def test_identical_commands_on_one_machine(scene):
    """Luigi's pid lock turns the second away (exit 10) unless both pass its unlocked check at the same instant
    (about once in ten tries here); then the leases keep them apart."""
    name = "rivals-same"
    cmd = command(scene.folder, name, "--lock-pid-dir", str(scene.folder / name))
    results = rivals(scene, [cmd, cmd])
    assert sorted(r.returncode for r in results) in ([0, 0], [0, ALREADY_RUNNING]), [r.stderr[-2000:] for r in results]
    check_rivals(scene, name, results)


@pytest.mark.slow
@pytest.mark.parametrize("share", [0.1, 0.4, 0.7])
def test_two_processes_started_apart(scene, share):
    """The second starts after a share of the reference run's time (a fixed delay outlived the whole backfill
    once batches got faster)."""
    local_rivals(scene, f"rivals-apart-{share:.1f}", share * scene.seconds)


# kill -9 ----------------------------------------------------------------------------------------------------------

@dataclass
class Trial:
    marked_at_kill: int
    taken_over: int  # leases of the killed process that the resume took over


def start_victim(scene: Scene, cmd: List[str]) -> subprocess.Popen:
    """The backfill in a process group of its own, so that a signal reaches Spark's processes too."""
    return subprocess.Popen(cmd, cwd=scene.folder, env=luigi_env(scene.endpoint), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)


def signal_group(victim: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(victim.pid, sig)
    except ProcessLookupError:
        pass


def resume_after_kill(scene: Scene, name: str, cmd: List[str], context: str) -> Trial:
    """The killed backfill's state checked, then the same command run to the end: as the reference run."""
    done = assert_markers_proven(scene, name)
    unfinished = [r["lease"] for r in run_leases(name) if r["lease"][len("run="):] not in done]
    context = f"{context} with {len(done)} runs marked"
    resumed = run_luigi(cmd, scene.folder, luigi_env(scene.endpoint))
    assert resumed.returncode == 0, f"{context}: {resumed.stderr[-3000:]}"
    assert "waiting for " not in resumed.stderr, f"{context}: the resume waited for the killed process's lease"
    for lease in unfinished:
        assert f"took over the lease on {lease}" in resumed.stderr, f"{context}: {lease}"
    assert_as_reference(scene, name)
    return Trial(len(done), len(unfinished))


def kill_trial(scene: Scene, index: int, trials: int, seed: int) -> Trial:
    """Kill the whole process group at a seeded moment of slice `index` of the reference run's duration."""
    rng = random.Random(seed * 1000 + index)
    name = f"kill-{seed}-{index}"
    cmd = command(scene.folder, name)
    moment = (index + rng.random()) / trials * scene.seconds
    victim = start_victim(scene, cmd)
    end = time.monotonic() + moment
    while victim.poll() is None and time.monotonic() < end:  # markers are proven at every moment, not only at the end
        assert_markers_proven(scene, name)
        time.sleep(min(1.0, max(0.0, end - time.monotonic())))
    signal_group(victim, signal.SIGKILL)
    victim.wait()
    return resume_after_kill(scene, name, cmd, f"trial {index} of {trials}, seed {seed}, kill after {moment:.1f} s")


# The states a kill lands in, read from S3: (runs marked, lease records, runs in all) -> the state is reached
MID_BACKFILL: Dict[str, Callable[[set, List[dict], int], bool]] = {
    "after-the-first-marker": lambda done, held, total: 0 < len(done) < total,
    "while-a-batch-holds-leases": lambda done, held, total: 0 < len(done) < total and any(
        r["lease"][len("run="):] not in done for r in held),
}


def kill_mid_backfill(scene: Scene, state: str) -> Trial:
    """Kill the backfill in the given state: polled from S3, then frozen (SIGSTOP) and checked again, so the
    state at the kill is known exactly, whatever the machine's speed; then SIGKILL, as `kill -9` would."""
    name = f"kill-{state}"
    cmd = command(scene.folder, name)
    ready, total = MID_BACKFILL[state], len(scene.runs)
    timeout = 60 + 3 * scene.seconds
    victim = start_victim(scene, cmd)
    deadline = time.monotonic() + timeout
    try:
        while not ready(assert_markers_proven(scene, name), run_leases(name), total):
            assert victim.poll() is None, f"the backfill ended (exit {victim.returncode}) before {state}"
            assert time.monotonic() < deadline, f"not {state} within {timeout:.0f} s"
            time.sleep(0.5)
        signal_group(victim, signal.SIGSTOP)
        done = assert_markers_proven(scene, name)
        assert ready(done, run_leases(name), total), f"no longer {state} when frozen, marked: {sorted(done)}"
    finally:
        signal_group(victim, signal.SIGKILL)
        victim.wait()
    return resume_after_kill(scene, name, cmd, f"kill {state}")


@pytest.mark.parametrize("state", sorted(MID_BACKFILL))
def test_kill_9_then_resume(scene, state):
    trial = kill_mid_backfill(scene, state)
    assert 0 < trial.marked_at_kill < len(scene.runs), "the kill did not land mid-backfill"
    if state == "while-a-batch-holds-leases":
        assert trial.taken_over, "the resume took over no lease of the killed batch"


@pytest.mark.slow
def test_kill_9_at_twenty_moments(scene):
    trials = [kill_trial(scene, i, 20, seed=2) for i in range(20)]
    assert any(0 < t.marked_at_kill < len(scene.runs) for t in trials), "no kill landed mid-backfill"
    assert any(t.taken_over for t in trials), "no kill landed while a batch held its leases"
