"""Enriched-event lines to manifest keys, and the rules that turn a batch's copies of a key into one item.

Pure functions only: no I/O and no Spark, so every rule here is tested on plain bytes.

Lines are handled as bytes and only the three fields the manifest needs are decoded, so bytes that are not UTF-8
elsewhere in a line cannot break it. A line's ending ('\\n' or '\\r\\n') would belong to its last field, which no
check reads: a line is classified the same with or without it, so the reader leaves endings on (stripping them
costs a copy per line).
"""
from __future__ import annotations

import calendar
import re
from dataclasses import dataclass, field
from typing import Dict, Iterable, Iterator, List, Optional, Tuple

from spark.report import MALFORMED_REASONS, MAX_EXAMPLES

FIELD_COUNT = 131  # every enriched-event TSV since R71
ETL_TSTAMP_FIELD = 2
EVENT_ID_FIELD = 6
SECONDS_PER_DAY = 86400

_TABS = FIELD_COUNT - 1
# Each byte of an event id to its class: lowercase hex to 'x', uppercase hex to 'X', '-' to itself, the rest to '?'.
# One translate and one comparison then check a UUID's whole shape (length, dash positions, digits).
_ID_SHAPE = bytes(ord("x") if chr(b) in "0123456789abcdef" else ord("X") if chr(b) in "ABCDEF"
                  else b if b == ord("-") else ord("?") for b in range(256))
_UUID_SHAPE = b"xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx"
_TSTAMP = re.compile(rb"(\d{4})-(\d\d)-(\d\d) (\d\d):(\d\d):(\d\d)(?:\.(\d{1,9}))?\Z")
_DAYS_IN_MONTH = (0, 31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)
_UNSEEN = object()
_CACHE_LIMIT = 100_000  # distinct etl_tstamps remembered: batch runs have one, stream-enrich runs a few per minute

# The reduce value for one key: one (etl_seconds, run, copies) triple per run holding the key.
Copies = Tuple[Tuple[int, str, int], ...]
Event = Tuple[str, str, int]  # (event_id, fingerprint, etl_tstamp epoch ms)


@dataclass
class LineTally:
    """What one object's lines came to; `min_etl_ms` covers every line with a parseable etl_tstamp and event id."""

    lines: int = 0
    malformed: Dict[str, int] = field(default_factory=lambda: dict.fromkeys(MALFORMED_REASONS, 0))
    examples: List[str] = field(default_factory=list)
    no_fingerprint: int = 0
    valid: int = 0
    min_etl_ms: Optional[int] = None


def parse_etl_tstamp(raw: bytes) -> Optional[int]:
    """`yyyy-MM-dd HH:mm:ss[.fraction]` (UTC) to epoch milliseconds, the fraction truncated; None if unparseable."""
    m = _TSTAMP.match(raw)
    if m is None:
        return None
    year, month, day, hour, minute, second = (int(g) for g in m.groups()[:6])
    if year < 1 or not 1 <= month <= 12 or not 1 <= day <= _DAYS_IN_MONTH[month]:
        return None
    if hour > 23 or minute > 59 or second > 59:
        return None
    if month == 2 and day == 29 and not calendar.isleap(year):
        return None
    fraction = m.group(7) or b""
    millis = int((fraction + b"00")[:3]) if fraction else 0
    return calendar.timegm((year, month, day, hour, minute, second)) * 1000 + millis


def scan_lines(batches: Iterable[List[bytes]], source: str, tally: LineTally,
               cache: Optional[Dict[bytes, Optional[int]]] = None) -> Iterator[Event]:
    """The valid events of an object's lines (with or without endings), counting every line into `tally` once.

    A line is malformed for the first failing check of: field count, event id (a UUID), etl_tstamp; otherwise it
    has no fingerprint or is valid. Examples name `source` and the 1-based line number, never the content.
    The event id is lowercased: the shredders write java.util.UUID.toString(). This loop is the job's hot path,
    hence the local names and the memoised timestamps (a batch run's events share one).
    """
    cache = {} if cache is None else cache
    malformed = tally.malformed
    examples = tally.examples
    cache_get = cache.get
    number = tally.lines
    no_fingerprint = valid = 0
    min_ms = tally.min_etl_ms
    last_raw = ms = None  # a run's lines mostly share one etl_tstamp: a repeat skips the lookup
    for lines in batches:
        for line in lines:
            number += 1
            if line.count(b"\t") != _TABS:
                reason = "field_count"
            else:
                head = line.split(b"\t", 7)
                event_id = head[EVENT_ID_FIELD]
                shape = event_id.translate(_ID_SHAPE)
                if shape != _UUID_SHAPE:  # not a lowercase UUID: maybe one with uppercase digits
                    event_id = event_id.lower() if shape.lower() == _UUID_SHAPE else None
                if event_id is None:
                    reason = "event_id"
                else:
                    raw = head[ETL_TSTAMP_FIELD]
                    if raw != last_raw:
                        ms = cache_get(raw, _UNSEEN)
                        if ms is _UNSEEN:
                            if len(cache) >= _CACHE_LIMIT:
                                cache.clear()
                            ms = cache[raw] = parse_etl_tstamp(raw)
                        last_raw = raw
                        if ms is not None and (min_ms is None or ms < min_ms):
                            min_ms = ms
                    if ms is None:
                        reason = "etl_tstamp"
                    else:
                        fingerprint = line.rsplit(b"\t", 2)[1]  # field 129 of 131
                        if not fingerprint:
                            no_fingerprint += 1
                        else:
                            valid += 1
                            yield event_id.decode("ascii"), fingerprint.decode("utf-8", "replace"), ms
                        continue
            malformed[reason] += 1
            if len(examples) < MAX_EXAMPLES:
                examples.append(f"{source}:{number}: {reason}")
        # Settled per batch so a consumer that stops early still sees consistent counts.
        tally.lines = number
        tally.no_fingerprint += no_fingerprint
        tally.valid += valid
        tally.min_etl_ms = min_ms
        no_fingerprint = valid = 0


def etl_seconds(etl_ms: int) -> int:
    """Epoch seconds as the shredders store them: milliseconds truncated."""
    return etl_ms // 1000


def ttl_for(etl_time: int, ttl_days: int) -> int:
    return etl_time + ttl_days * SECONDS_PER_DAY


def is_expired(ttl: int, now: float) -> bool:
    """DynamoDB deletes an item once its ttl is past, so writing one whose ttl is already due is pointless."""
    return ttl <= now


def first_copy(etl_time: int, run: str) -> Copies:
    return ((etl_time, run, 1),)


def merge_copies(a: Copies, b: Copies) -> Copies:
    """Combine two sets of copies of one key: per run the earliest etlTime and the number of copies."""
    if len(a) == 1 and len(b) == 1 and a[0][1] == b[0][1]:
        return ((min(a[0][0], b[0][0]), a[0][1], a[0][2] + b[0][2]),)
    per_run: Dict[str, Tuple[int, int]] = {}
    for etl, run, n in a + b:
        seen = per_run.get(run)
        per_run[run] = (etl, n) if seen is None else (min(seen[0], etl), seen[1] + n)
    return tuple(sorted((etl, run, n) for run, (etl, n) in per_run.items()))


def split_copies(copies: Copies, ttl_days: Optional[int] = None,
                 now: Optional[float] = None) -> Tuple[List[Tuple[int, str]], List[Tuple[str, str, int]]]:
    """A key's targets, (etlTime, run) earliest first, and what its other copies come to as (run, outcome, n).

    Extra copies within a run are in-run duplicates. With `ttl_days`, a copy whose ttl is already past is expired
    and no target: the populator never writes it and DynamoDB deletes it.
    """
    targets = []
    settled = []
    for etl, run, n in copies:
        if n > 1:
            settled.append((run, "in_run_duplicates", n - 1))
        if ttl_days is not None and is_expired(ttl_for(etl, ttl_days), now):
            settled.append((run, "expired", 1))
        else:
            targets.append((etl, run))
    return sorted(targets), settled


def settle(copies: Copies, ttl_days: int, now: float,
           write_expired: bool) -> Tuple[Optional[Tuple[int, str]], List[Tuple[str, str, int]]]:
    """The (etlTime, run) to write for one key, or None, and the outcome of every other copy as (run, outcome, n).

    The copies split as a clean or verify splits them (expired ones kept when `write_expired`); of the targets the
    earliest (etlTime, run) wins and the others are batch duplicates.
    """
    targets, outcomes = split_copies(copies, None if write_expired else ttl_days, now)
    if not targets:
        return None, outcomes
    outcomes.extend((run, "batch_duplicates", 1) for etl, run in targets[1:])
    return targets[0], outcomes
