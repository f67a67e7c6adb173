"""The read pass: listing a run, packing its objects into Spark tasks, reading them on executors, and the one
record stream those tasks produce.

The stream. A reading task yields, object after object:
- an int: the batch index of the run whose object follows;
- (event_id, fingerprint, etl_tstamp ms) tuples: that object's valid events;
- a dict: that object's stats (counts, malformed examples, earliest etl_tstamp, error), its last record.
The stream is read twice and nowhere else than here: the driver collects the dicts (`stats_records`), and an action
pass turns the ints and tuples into each key's copies (`copies_by_key`). Events are kept (memory and disk) between
the two, so the archive is read once.
"""
from __future__ import annotations

import logging
import zlib
from typing import Dict, Iterator, List, Optional, Tuple

from spark import events as ev
from spark.archive import ArchiveReadError, archived_objects, data_objects, read_lines
from spark.clients import task_client
from spark.refusals import DEFAULT_CHAIN, told
from spark.report import new_report
from spark.runid import folder_name
from spark.runstate import RunState
from spark.spec import BatchSpec
from spark.storage import Location, list_objects, parse_location

LOG = logging.getLogger("manifest.job")
# Reading tasks: objects are packed up to a share of the input, as Spark packs small files; each object is
# charged an opening cost so that a task never holds very many tiny ones (S3 Loader writes thousands).
MIN_TASK_BYTES = 8 << 20
MAX_TASK_BYTES = 128 << 20
OPEN_COST_BYTES = 1 << 20
ARCHIVED_ERROR = "archived in GLACIER or DEEP_ARCHIVE: restore it first"

Task = List[Tuple[int, str, str, Dict[str, str], str]]  # per object: (run index, uri, name, endpoints, identity)


def list_run(archive: Location, run: str, spec: BatchSpec, client=None) -> RunState:
    """The run's data objects; archived (GLACIER, DEEP_ARCHIVE) ones fail the run before any reading."""
    folder = archive.child(folder_name(run))
    state = RunState(run, folder, new_report(run, spec.batch_id, spec.mode))
    if spec.mode == "verify":  # what the counts cover; missing_examples: up to 10 keys missing or late
        state.report.update(sample={"size": spec.sample, "seed": spec.sample_seed} if spec.sample else None,
                            missing_examples=[])
    try:
        listed = list_objects(folder, client)
        data = data_objects(listed)
        archived = archived_objects(folder, data, client) if folder.is_s3 else []
    except Exception as e:  # noqa: BLE001
        line, refused = told(e)
        state.fail(line if refused else f"cannot list {folder.uri}: {line}", refused)
        return state
    state.objects = [(o.name, o.size) for o in data]
    unreadable = set(archived)
    state.report["objects"] = [
        {"key": folder.child(o.name).uri, "bytes": o.size, "lines": 0,
         "error": ARCHIVED_ERROR if o.name in unreadable else None}
        for o in data]
    if archived:
        shown = ", ".join(folder.child(a).uri for a in archived[:5])
        more = f" and {len(archived) - 5} more" if len(archived) > 5 else ""
        state.fail(f"{len(archived)} objects are archived in GLACIER or DEEP_ARCHIVE and cannot be read "
                   f"(restore them first): {shown}{more}")
    if not data:
        what = "holds no data objects" if listed else "is empty or missing"
        state.report["warnings"] = [f"{folder.uri} {what}"]
    LOG.info("run %s: %d objects, %d bytes%s", run, len(data), sum(o.size for o in data),
             f", {len(archived)} archived" if archived else "")
    return state


def pack_objects(objects: List[tuple], parallelism: int) -> List[List[tuple]]:
    """Group (size, ...) objects into reading tasks: largest first, each task up to a share of the input.

    A share is the input over Spark's parallelism, kept between MIN_TASK_BYTES and MAX_TASK_BYTES; an object
    larger than that is a task of its own (one object is never split: gzip cannot be).
    """
    total = sum(o[0] + OPEN_COST_BYTES for o in objects)
    target = max(MIN_TASK_BYTES, min(MAX_TASK_BYTES, total // max(1, parallelism)))
    groups: List[List[tuple]] = []
    loads: List[int] = []
    for o in sorted(objects, key=lambda o: (-o[0],) + tuple(o[1:])):
        cost = o[0] + OPEN_COST_BYTES
        fits = [g for g, load in enumerate(loads) if load + cost <= target]
        if fits:  # the emptiest group it fits in, so groups even out
            g = min(fits, key=loads.__getitem__)
            groups[g].append(o)
            loads[g] += cost
        else:
            groups.append([o])
            loads.append(cost)
    return groups


def reading_tasks(states: List[RunState], parallelism: int, endpoints: Dict[str, str],
                  identity: str = DEFAULT_CHAIN) -> List[Task]:
    """The objects of the ok runs packed into tasks for `read_objects`, read as `identity` (its label)."""
    objects = [(size, i, s.folder.child(name).uri, name) for i, s in enumerate(states) if s.ok
               for name, size in s.objects]
    return [[(i, uri, name, endpoints, identity) for _, i, uri, name in group]
            for group in pack_objects(objects, parallelism)]


def read_objects(tasks: Iterator[Task]) -> Iterator:
    """The record stream of one Spark partition of tasks (see the module's docstring)."""
    for task in tasks:
        for run_index, uri, name, endpoints, identity in task:
            yield run_index
            tally = ev.LineTally()
            error, refused = None, False
            try:
                loc = parse_location(uri)
                client = task_client("s3", endpoints, identity=identity) if loc.is_s3 else None
                yield from ev.scan_lines(read_lines(loc, client, name=uri), name, tally)
            except ArchiveReadError as e:
                error = str(e)
            except Exception as e:  # noqa: BLE001 - the run fails naming the object; other runs go on
                line, refused = told(e)
                error = line if refused else f"{uri}: cannot read: {line}"
            yield {"run_index": run_index, "key": uri, "lines": tally.lines, "malformed": tally.malformed,
                   "examples": tally.examples, "no_fingerprint": tally.no_fingerprint, "valid": tally.valid,
                   "min_etl_ms": tally.min_etl_ms, "error": error, "refused": refused}


def is_stats(record) -> bool:
    return isinstance(record, dict)


def stats_records(parsed) -> List[dict]:
    """Every object's stats, collected on the driver (a Spark action)."""
    return parsed.filter(is_stats).collect()


def key_partition(key: Tuple[str, str]) -> int:
    """A hash of the event id that is the same in every Python process (str hashes are salted)."""
    return zlib.crc32(key[0].encode("utf-8"))


def copies_by_key(parsed, acting: Dict[int, RunState], per_event: bool, partitions: int):
    """The acting runs' events as (event_id, fingerprint) -> copies (ev.merge_copies) in P hash partitions.

    A copy's etlTime is what the populator writes for it: the run's earliest etl_tstamp, or with `per_event` the
    event's own.
    """
    run_etl = {i: (s.run, ev.etl_seconds(s.min_etl_ms)) for i, s in acting.items()}

    def keyed(records: Iterator) -> Iterator:
        run: Optional[str] = None
        etl = None
        for r in records:
            kind = r.__class__
            if kind is tuple:
                if run is not None:
                    yield (r[0], r[1]), ev.first_copy(r[2] // 1000 if per_event else etl, run)
            elif kind is int:  # the next object's run: None when that run is not acted on
                run, etl = run_etl.get(r, (None, None))

    return parsed.mapPartitions(keyed).reduceByKey(ev.merge_copies, partitions, key_partition)
