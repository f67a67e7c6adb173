"""The driver's view of each run of a batch: its report while the passes go, what the read pass decides, and the
report finished and saved.

Every count a report holds reaches the driver as the result of a Spark action, never through accumulators, so a
retried task cannot count twice. A run fails before anything is written for it when an object could not be read
or too many lines are malformed; a failed run owes all its valid events.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Dict, Iterable, List, Optional, Tuple

from spark import events as ev
from spark.refusals import JOB_LOG_PREFIX, told
from spark.report import (
    MALFORMED_REASONS,
    MODE_FAILURES,
    MODE_OUTCOMES,
    counts_add_up,
    dumps,
    merge_examples,
    report_location,
)
from spark.storage import Location, write_bytes

LOG = logging.getLogger("manifest.job")


@dataclass
class RunState:
    """One run while the batch goes through its passes."""

    run: str
    folder: Location
    report: dict
    objects: List[Tuple[str, int]] = field(default_factory=list)  # (name, bytes) of its data objects
    valid: int = 0
    min_etl_ms: Optional[int] = None

    @property
    def ok(self) -> bool:
        return self.report["status"] == "ok"

    def fail(self, error: str, refused: bool = False) -> None:
        """Fail the run with one line; `refused`: AWS refused a request of it, and will again (spark.refusals)."""
        self.report["status"] = "failed"
        self.report["errors"].append(error)
        if refused and not self.report.get("refused"):
            self.report["refused"] = error


def acting(states: List[RunState]) -> Dict[int, RunState]:
    """The runs an action pass works on, by their index in the batch: ok, with valid events."""
    return {i: s for i, s in enumerate(states) if s.ok and s.valid}


def add_object_stats(states: List[RunState], stats: List[dict]) -> None:
    """Fold what each object came to (reading.read_objects' stats records) into its run and the run's report."""
    objects = {o["key"]: o for s in states for o in s.report["objects"]}
    for st in sorted(stats, key=lambda x: (x["run_index"], x["key"])):
        s = states[st["run_index"]]
        counts = s.report["counts"]
        counts["lines"] += st["lines"]
        for reason in MALFORMED_REASONS:
            counts["malformed"][reason] += st["malformed"][reason]
        counts["malformed_examples"] = merge_examples(counts["malformed_examples"], st["examples"])
        counts["no_fingerprint"] += st["no_fingerprint"]
        s.valid += st["valid"]
        if st["min_etl_ms"] is not None and (s.min_etl_ms is None or st["min_etl_ms"] < s.min_etl_ms):
            s.min_etl_ms = st["min_etl_ms"]
        objects[st["key"]].update(lines=st["lines"], error=st["error"])
        if st.get("refused"):
            objects[st["key"]]["refused"] = True


def judge(states: List[RunState], max_malformed_fraction: float) -> None:
    """Fail the runs that must not be written (an unreadable object, too many malformed lines); set each etl_time."""
    for s in states:
        if not s.ok:
            continue
        unread = [o for o in s.report["objects"] if o["error"]]
        if unread:
            refused = [o for o in unread if o.get("refused")]
            if refused:  # AWS's line already names the object: every other object will be refused alike
                s.fail(refused[0]["error"], refused=True)
            else:
                s.fail(f"{len(unread)} objects could not be read: {unread[0]['error']}")
            continue
        counts = s.report["counts"]
        malformed = sum(counts["malformed"].values())
        if counts["lines"] and malformed / counts["lines"] > max_malformed_fraction:
            reasons = ", ".join(f"{n} {r}" for r, n in counts["malformed"].items() if n)
            s.fail(f"{malformed} of {counts['lines']} lines are malformed ({reasons}), "
                   f"above the limit of {max_malformed_fraction:.2%}")
    for s in states:
        if s.min_etl_ms is not None:
            s.report["etl_time"] = ev.etl_seconds(s.min_etl_ms)


def count_only(s: RunState) -> None:
    """A count pass: the valid events are counted, none written."""
    s.report["count_only"] = True
    s.report["counts"]["not_written"] = s.valid


def finish_report(s: RunState, read_s: float, action_timing: str, action_s: float) -> None:
    """Timings, the owed events of a failed run, and the check that every line is in one bucket; one log line."""
    report, counts = s.report, s.report["counts"]
    mode = report["mode"]
    outcomes = MODE_OUTCOMES[mode]
    counts.setdefault("rcu_consumed" if mode == "verify" else "wcu_consumed", 0)
    report["valid_events"] = s.valid
    report["timings"] = {"read_s": round(read_s, 3), action_timing: round(action_s, 3)}
    settled = sum(counts[k] for k in outcomes) - counts["no_fingerprint"]
    if not s.ok and not report["count_only"] and settled != s.valid:
        # A failed run owes all its valid events: whatever part of them was settled is reported as not written
        # (not cleaned, not checked).
        for k in outcomes:
            if k != "no_fingerprint":
                counts[k] = 0
        counts[MODE_FAILURES[mode][1]] = s.valid
    if not counts_add_up(counts, mode):  # a bug, not an input problem: say so rather than mark the run
        s.fail("internal error: the run's counts do not add up")
    summary = ", ".join(f"{k}={counts[k]}" for k in outcomes if counts[k])
    malformed = sum(counts["malformed"].values())
    why = "AWS refused (the line after the runs)" if report.get("refused") else (report["errors"] or [""])[0]
    LOG.info("run %s: %s; lines=%d, malformed=%d%s%s", s.run, report["status"], counts["lines"], malformed,
             f", {summary}" if summary else "", f"; {why}" if why else "")


def save_report(reports: Location, s: RunState, client=None) -> Optional[Tuple[str, bool]]:
    """Write one run's report: None, or (why it could not be written, whether AWS refused it). The run stays
    unmarked and the other reports still go; a refusal is left for the job to tell once (`tell_refusals`)."""
    target = report_location(reports, s.run)
    try:
        write_bytes(target, dumps(s.report).encode("utf-8"), client)
        return None
    except Exception as e:  # noqa: BLE001
        line, refused = told(e)
        if not refused:
            LOG.error("run %s: cannot write its report to %s: %s", s.run, target.uri, line)
        return line, refused


def tell_refusals(lines: Iterable[str]) -> None:
    """Each distinct refusal once, on a line of its own that the local runner passes on (JOB_LOG_PREFIX)."""
    for line in dict.fromkeys(lines):
        LOG.error("%s%s", JOB_LOG_PREFIX, line)
