"""Realistic Snowplow enriched archives for tests, the demo and the benchmarks, with their ground truth.

The job must be checked against what was written, not against its own reading of it, so `generate_archive`
returns an `ArchiveTruth` (bench.archive_truth) recording every event key, every deliberately bad line and every
object. Here the runs are planned (duplicates, bad lines, stream-enrich runs) and written; the lines come from
bench.event_lines and the objects' names and bytes, in every kind Snowplow releases wrote, from
bench.archive_objects.
"""
from __future__ import annotations

import argparse
import random
import sys
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Dict, List, Optional, Sequence, Tuple

from bench.archive_objects import FILE_KINDS, GZIP_KINDS, MULTIGZ_MEMBERS, encode_object, object_name, split_evenly
from bench.archive_truth import MALFORMED_REASONS, ArchiveTruth, ObjectTruth, RunTruth
from bench.event_lines import epoch_ms, event_line, format_tstamp, new_fingerprint, new_uuid, run_ids, run_time
from spark.runid import folder_name
from spark.storage import Location, parse_location, s3_client, write_bytes


@dataclass
class _Line:
    event_id: str
    fingerprint: str
    etl_ms: int
    reason: str = ""  # malformed reason, '' for a well-formed line
    variant: int = 0
    invalid_utf8: bool = False
    counted: bool = True  # a fingerprinted valid event, recorded in RunTruth.events


def _plan_run(rng: random.Random, n: int, etls: List[int], earlier: List[Tuple[str, str]], stream: bool,
              f_dup: float, f_cross: float, f_malformed: float, f_nofp: float,
              offset: int = 0) -> Tuple[List[_Line], Dict[str, int]]:
    """The run's lines in file order, and how many of each deliberate kind it holds.

    Malformed lines cycle through the reasons and their variants from `offset`, so that runs with one or two bad
    lines each still cover every reason between them.
    """
    n_mal, n_nofp, n_dup = round(n * f_malformed), round(n * f_nofp), round(n * f_dup)
    n_cross = min(round(n * f_cross), len(earlier))
    n_synth = n_dup // 2
    n_new = n - n_mal - n_nofp - n_dup - n_cross - n_synth
    if n_new < (1 if n_dup or n_synth else 0):
        raise ValueError(f"{n} events per run cannot hold the requested fractions of bad and duplicate lines")

    def etl() -> int:
        return rng.choice(etls)

    new = [_Line(new_uuid(rng), new_fingerprint(rng), etl()) for _ in range(n_new)]
    lines = list(new)
    lines += [_Line(o.event_id, o.fingerprint, etl() if stream else o.etl_ms) for o in rng.choices(new, k=n_dup)]
    lines += [_Line(o.event_id, new_fingerprint(rng), etl()) for o in rng.choices(new, k=n_synth)]
    lines += [_Line(e, f, etl()) for e, f in rng.sample(earlier, n_cross)]
    lines += [_Line(new_uuid(rng), "", etl(), counted=False) for _ in range(n_nofp)]
    lines += [_Line(new_uuid(rng), new_fingerprint(rng), etl(), MALFORMED_REASONS[i % 3], i // 3 % 3, counted=False)
              for i in range(offset, offset + n_mal)]
    rng.shuffle(lines)
    valid = [x for x in lines if x.counted]
    for x in rng.sample(valid, min(len(valid), max(1, len(valid) // 100))):
        x.invalid_utf8 = True
    # Stream runs: the run's earliest etl_tstamp must be a counted event's, whatever the job counts from.
    if stream and valid:
        low = min(x.etl_ms for x in valid)
        for x in lines:
            if not x.counted:
                x.etl_ms = max(x.etl_ms, low)
    return lines, {"dup": n_dup, "cross": n_cross, "synth": n_synth, "nofp": n_nofp}


def _render(x: _Line, rng: random.Random, size: int, v_etl: str) -> bytes:
    """A line, broken on purpose in one way when the plan says so."""
    event_id, etl = x.event_id, format_tstamp(x.etl_ms)
    if x.reason == "event_id":
        event_id = ("", "evt-0000042", x.event_id[:-1])[x.variant]
    elif x.reason == "etl_tstamp":
        etl = ("", "2026-13-01 00:00:00.000", "not-a-timestamp")[x.variant]
    line = event_line(event_id, x.fingerprint, etl, rng=rng, size=size, invalid_utf8=x.invalid_utf8, v_etl=v_etl)
    if x.reason == "field_count":
        fields = line.split(b"\t")
        line = b"\t".join((fields[:-1], fields + [b"extra"], fields[:60])[x.variant])
    return line


def generate_archive(dest: str, runs: List[str], events_per_run: int, *, kinds: Sequence[str] = FILE_KINDS,
                     duplicate_fraction: float = 0.02, cross_run_duplicates: float = 0.01,
                     malformed_fraction: float = 0.0, no_fingerprint_fraction: float = 0.0, extras: bool = True,
                     stream_enrich_runs: int = 0, seed: int = 0, objects_per_run: Optional[int] = None,
                     size: int = 1300, client=None) -> ArchiveTruth:
    """Write `runs` run folders of `events_per_run` lines each under `dest` (local dir or s3://bucket/prefix).

    Runs are written oldest first; the last `stream_enrich_runs` are stream-enrich runs (S3 Loader objects,
    etl_tstamps spread over the hour before the run). Batch runs share one etl_tstamp, the run's start with
    milliseconds. Each run holds `objects_per_run` data objects (default one per kind, kinds rotating from run to
    run when fewer); its last object uses CRLF endings and its second lacks a final newline when there are enough.
    `extras` adds `_SUCCESS`, `*_$folder$` and zero-byte objects, and an empty gzip object (a data object of 0
    lines, as Spark writes for an empty partition). The S3 bucket must exist.
    """
    bad = [k for k in kinds if k not in FILE_KINDS]
    if bad or not kinds:
        raise ValueError(f"unknown file kinds {bad} (one of {', '.join(FILE_KINDS)})")
    if events_per_run < 1 or len(set(runs)) != len(runs) or not runs:
        raise ValueError("generate_archive needs distinct runs and at least one event per run")
    if not 0 <= stream_enrich_runs <= len(runs):
        raise ValueError(f"stream_enrich_runs must be between 0 and {len(runs)}")
    times = {r: run_time(r) for r in runs}
    loc = parse_location(dest)
    if loc.is_s3 and client is None:
        client = s3_client()
    rng = random.Random(seed)
    earlier: List[Tuple[str, str]] = []
    truth = ArchiveTruth(loc.uri, [], [])
    ordered = sorted(runs)
    for r_index, run in enumerate(ordered):
        stream = r_index >= len(ordered) - stream_enrich_runs
        start_ms = epoch_ms(times[run])
        if stream:
            etls = [start_ms - rng.randrange(60_000, 3_300_000) for _ in range(max(4, events_per_run // 10))]
            run_kinds = ["s3loader"] if "s3loader" in kinds else list(kinds)
            v_etl = "stream-enrich-1.4.2-common-1.4.2"
        else:
            etls = [start_ms + rng.randrange(1000)]
            run_kinds = [k for k in kinds if k != "s3loader"] or list(kinds)
            v_etl = "spark-1.18.0-common-0.35.0"
        lines, planned = _plan_run(rng, events_per_run, etls, earlier, stream, duplicate_fraction,
                                   cross_run_duplicates, malformed_fraction, no_fingerprint_fraction, r_index)
        k = max(1, min(objects_per_run or len(run_kinds), len(lines)))
        object_kinds = [run_kinds[(r_index + j) % len(run_kinds)] for j in range(k)]
        rt = RunTruth(run, stream, len(lines), [], {r: 0 for r in MALFORMED_REASONS}, [], planned["nofp"],
                      planned["dup"], planned["cross"], planned["synth"], sum(x.invalid_utf8 for x in lines))
        folder = folder_name(run)
        for j, (kind, chunk) in enumerate(zip(object_kinds, split_evenly(lines, k))):
            name = object_name(kind, j, rng, times[run])
            crlf, final_newline = k >= 2 and j == k - 1, not (k >= 3 and j == 1)
            rendered = [_render(x, rng, size, v_etl) for x in chunk]
            data = encode_object(kind, rendered, crlf=crlf, final_newline=final_newline)
            key = f"{folder}/{name}"
            write_bytes(loc.child(folder, name), data, client)
            members = 0 if kind not in GZIP_KINDS else (MULTIGZ_MEMBERS if kind == "multigz" else 1)
            truth.objects.append(ObjectTruth(key, kind, len(data), len(chunk), crlf, members, final_newline))
            rt.objects.append(key)
            for number, x in enumerate(chunk, 1):
                if x.reason:
                    rt.malformed[x.reason] += 1
                    rt.malformed_at.append((key, number, x.reason))
                elif x.counted:
                    rt.events.append((x.event_id, x.fingerprint, x.etl_ms))
        if extras:
            _write_extras(loc, folder, k, client, truth, rt)
        truth.runs.append(rt)
        earlier.extend(sorted(rt.unique_keys - set(earlier)))
    return truth


def _write_extras(loc: Location, folder: str, k: int, client, truth: ArchiveTruth, rt: RunTruth) -> None:
    markers = [f"{folder}/_SUCCESS", f"{folder}/part-{k:05d}_$folder$", f"{folder}/part-{k + 1:05d}",
               f"{folder}_$folder$"]
    for key in markers:
        write_bytes(_child(loc, key), b"", client)
        truth.objects.append(ObjectTruth(key, "marker", 0, 0))
    empty = encode_object("gz", [])
    key = f"{folder}/part-{k + 2:05d}.gz"
    write_bytes(_child(loc, key), empty, client)
    truth.objects.append(ObjectTruth(key, "gz", len(empty), 0, members=1))
    rt.objects.append(key)


def _child(loc: Location, key: str) -> Location:
    return loc.child(*key.split("/"))


# --- command line -------------------------------------------------------------------------------------------

def _start(text: Optional[str], runs: int) -> datetime:
    if text:
        return run_time(text)
    now = datetime.now(timezone.utc).replace(minute=0, second=0, microsecond=0)
    return now - timedelta(hours=runs)


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.archive", description=__doc__.splitlines()[0])
    p.add_argument("--dest", required=True, help="local directory or s3://bucket/prefix (the bucket must exist)")
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--events-per-run", type=int, default=400)
    p.add_argument("--start", help="first run id, YYYY-MM-DD-HH-MM-SS (default: hourly runs ending now, so "
                                   "their items are not already past the 180-day ttl)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--malformed-fraction", type=float, default=0.0)
    p.add_argument("--no-fingerprint-fraction", type=float, default=0.0)
    p.add_argument("--stream-enrich-runs", type=int, default=0)
    p.add_argument("--demo", action="store_true", help="5 runs of every kind with duplicates, bad lines and one "
                                                       "stream-enrich run")
    a = p.parse_args(argv)
    try:
        if a.demo:
            a.runs, a.events_per_run, a.stream_enrich_runs = 5, 400, 1
            a.malformed_fraction, a.no_fingerprint_fraction = 0.0075, 0.005
        truth = generate_archive(a.dest, run_ids(_start(a.start, a.runs), a.runs), a.events_per_run,
                                 malformed_fraction=a.malformed_fraction,
                                 no_fingerprint_fraction=a.no_fingerprint_fraction,
                                 stream_enrich_runs=a.stream_enrich_runs, seed=a.seed)
    except Exception as e:  # one line for the user, whatever broke
        print(f"bench.archive: {str(e).splitlines()[0] if str(e) else type(e).__name__}", file=sys.stderr)
        return 2
    print(truth.describe())
    return 0


if __name__ == "__main__":
    sys.exit(main())
