"""Run ids of the enriched archive: parsing, and the rules that select runs (--since, --until, --runs)."""
from __future__ import annotations

import re
from datetime import datetime
from typing import Iterable, List, Optional, Tuple

from spark.runid import RUN_PREFIX, parse_run_id

from .errors import PipelineError


def parse_since(value: str, flag: str = "--since", time_of_day: str = "00-00-00") -> Optional[str]:
    """--since (or another inclusive bound) as a run id; a bare date means that time of its day. Empty: no bound."""
    value = (value or "").strip()
    if not value:
        return None
    if len(value) == 10:
        try:
            return datetime.strptime(value, "%Y-%m-%d").strftime(f"%Y-%m-%d-{time_of_day}")
        except ValueError:
            pass
    run = parse_run_id(value)
    if run is None:
        raise PipelineError(f"{flag} {value!r} is not a date: use YYYY-MM-DD or YYYY-MM-DD-HH-mm-ss")
    return run


def split_since(runs: List[str], since: Optional[str]) -> Tuple[List[str], List[str]]:
    """(runs at or after since, runs before it); run ids sort as their timestamps."""
    if since is None:
        return list(runs), []
    return [r for r in runs if r >= since], [r for r in runs if r < since]




def parse_runs(text: str) -> List[str]:
    """--runs: run ids separated by commas (or spaces), sorted, each once."""
    found = []
    for item in re.split(r"[,\s]+", (text or "").strip()):
        if not item:
            continue
        run = parse_run_id(item[len(RUN_PREFIX):] if item.startswith(RUN_PREFIX) else item)
        if run is None:
            raise PipelineError(f"--runs: {item!r} is not a run id (YYYY-MM-DD-HH-MM-SS)")
        found.append(run)
    return sorted(set(found))


def parse_until(value: str) -> Optional[str]:
    """--until (inclusive) as a run id: a bare date means the end of that day. Empty means no limit."""
    return parse_since(value, "--until", "23-59-59")


def check_selection(runs_arg: str, since: Optional[str], until_arg: str) -> Tuple[List[str], Optional[str]]:
    """(--runs, --until) checked together with --since; everything here needs no AWS call."""
    given = parse_runs(runs_arg)
    until = parse_until(until_arg)
    if runs_arg.strip() and not given:
        raise PipelineError("--runs names no run")
    if given and (since or until):
        raise PipelineError("--runs names the runs itself: do not combine it with --since or --until")
    if since and until and until < since:
        raise PipelineError(f"--until {until} is before --since {since}")
    return given, until


def shown(items: List[str], limit: int = 10) -> str:
    """At most `limit` items for a one-line message, and how many more."""
    return ", ".join(items[:limit]) + (f" and {len(items) - limit} more" if len(items) > limit else "")


def select_runs(archive_runs: Iterable[str], archive_uri: str, given: List[str], since: Optional[str],
                until: Optional[str], default: Optional[Iterable[str]] = None) -> List[str]:
    """The runs to act on, oldest first: --runs (each must be in the archive), else the archive's runs (or the
    `default` ones) between --since and --until. Runs that are not in the archive cannot be read: refused."""
    present = set(archive_runs)
    wanted = given or [r for r in (present if default is None else default)
                       if (since is None or r >= since) and (until is None or r <= until)]
    absent = sorted(set(wanted) - present)
    if absent:
        if given:
            raise PipelineError(f"--runs: not in the enriched archive {archive_uri}, so cannot be read: "
                                f"{shown(absent)}")
        raise PipelineError(f"marked runs not in the enriched archive {archive_uri}, so cannot be read: "
                            f"{shown(absent)} (leave them out with --since/--until or --runs)")
    return sorted(set(wanted))
