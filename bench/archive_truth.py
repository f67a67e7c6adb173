"""The ground truth of a generated archive: every object, every run's event keys and deliberately bad lines, and
the manifest a correct backfill leaves."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, Iterable, List, Optional, Tuple

from bench.archive_objects import FILE_KINDS

MALFORMED_REASONS = ("field_count", "event_id", "etl_tstamp")  # the job's report names (spark/report.py)


@dataclass
class ObjectTruth:
    key: str  # relative to the archive location, e.g. 'run=2026-05-01-00-00-00/part-00000.gz'
    kind: str  # a FILE_KINDS entry, or 'marker' for the objects readers must skip
    bytes: int
    lines: int
    crlf: bool = False
    members: int = 0  # gzip members (0 for plain text)
    final_newline: bool = True  # False: the last line has no line ending

    @property
    def is_data(self) -> bool:
        return self.kind != "marker"


@dataclass
class RunTruth:
    run: str
    stream: bool  # stream-enrich run: etl_tstamps vary within the run
    lines: int  # data lines written for the run, bad ones included
    events: List[Tuple[str, str, int]]  # (event_id, fingerprint, etl ms) of every valid fingerprinted line
    malformed: Dict[str, int]  # by reason, MALFORMED_REASONS
    malformed_at: List[Tuple[str, int, str]]  # (object key, 1-based line number, reason)
    no_fingerprint: int
    in_run_duplicates: int  # lines repeating a key already on an earlier line of the run
    cross_run_duplicates: int  # lines whose key was written by an earlier run
    same_id_other_fingerprint: int  # a second key sharing an event_id (synthetic duplicates): its own item
    invalid_utf8: int  # valid lines holding non-UTF-8 bytes
    objects: List[str] = field(default_factory=list)  # data object keys

    @property
    def etl_ms(self) -> Optional[int]:
        """The run's earliest etl_tstamp among its valid lines (generation keeps the others no earlier)."""
        return min((ms for _, _, ms in self.events), default=None)

    @property
    def unique_keys(self) -> set:
        return {(e, f) for e, f, _ in self.events}


@dataclass
class ArchiveTruth:
    dest: str
    runs: List[RunTruth]
    objects: List[ObjectTruth]

    def run(self, run_id: str) -> RunTruth:
        return next(r for r in self.runs if r.run == run_id)

    def expected_manifest(self, etl_time: str = "run",
                          runs: Optional[Iterable[str]] = None) -> Dict[Tuple[str, str], int]:
        """(eventId, fingerprint) -> etlTime in epoch seconds, the earliest over the (given) runs.

        etl_time 'run' gives every event its run's earliest etl_tstamp; 'event' its own.
        """
        return {key: t for key, (t, _) in self.expected_items(etl_time=etl_time, runs=runs).items()}

    def expected_items(self, ttl_days: int = 180, etl_time: str = "run", now: Optional[float] = None,
                       runs: Optional[Iterable[str]] = None) -> Dict[Tuple[str, str], Tuple[int, int]]:
        """Key -> (etlTime, ttl) of the final table after a backfill of the (given) runs into an empty one.

        With `now`, copies whose ttl is not after it are expired and never written; of the rest, the earliest wins.
        """
        wanted = set(runs) if runs is not None else None
        out: Dict[Tuple[str, str], Tuple[int, int]] = {}
        for run in self.runs:
            if wanted is not None and run.run not in wanted:
                continue
            for eid, fp, ms in run.events:
                t = (run.etl_ms if etl_time == "run" else ms) // 1000
                ttl = t + ttl_days * 86400
                if (now is None or ttl > now) and t < out.get((eid, fp), (t + 1, 0))[0]:
                    out[(eid, fp)] = (t, ttl)
        return out

    def describe(self) -> str:
        data = [o for o in self.objects if o.is_data]
        kinds = sorted({o.kind for o in data}, key=FILE_KINDS.index)
        malformed = {r: sum(run.malformed[r] for run in self.runs) for r in MALFORMED_REASONS}
        stream = [r.run for r in self.runs if r.stream]
        first, last = self.runs[0].run, self.runs[-1].run
        return (
            f"Wrote {len(self.runs)} runs (run={first} .. run={last}) to {self.dest}: "
            f"{sum(r.lines for r in self.runs)} lines in {len(data)} data objects of kinds {', '.join(kinds)} "
            f"({sum(o.crlf for o in data)} with CRLF endings); "
            f"{sum(r.in_run_duplicates for r in self.runs)} in-run and "
            f"{sum(r.cross_run_duplicates for r in self.runs)} cross-run duplicate lines, "
            f"{sum(malformed.values())} malformed lines ("
            + ", ".join(f"{n} {r}" for r, n in malformed.items())
            + f"), {sum(r.no_fingerprint for r in self.runs)} without a fingerprint, "
            f"{sum(r.invalid_utf8 for r in self.runs)} with non-UTF-8 bytes; "
            + (f"stream-enrich run(s) {', '.join(stream)}; " if stream else "")
            + f"{len(self.objects) - len(data)} marker or zero-byte objects that readers skip. "
            f"Expected manifest items: {len(self.expected_manifest())}."
        )
