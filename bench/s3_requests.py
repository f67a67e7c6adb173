"""What a backfill asked of S3, from the log of a recording endpoint (bench/s3_endpoint.py --record).

Each request is classified by its operation and its key: a listing (any bucket), a read of the archive's data, or
one of the pipeline's bookkeeping objects under <markers>/<table>/ (leases, the job's reports, run markers, batch
specs, anything else). The same log times two phases: planning (the command's start to its first lease request,
when the first batch begins) and marking (per batch, its first report read to the last marker written for its runs).
"""
from __future__ import annotations

import re
import urllib.parse
from dataclasses import dataclass
from typing import Dict, Iterable, Optional, Sequence, Tuple

Request = Tuple[float, str, str]  # (epoch seconds, method, path with query), as bench/s3_endpoint.py records it

KINDS = ("listing", "leases", "reports", "markers", "specs", "other", "archive reads")
BOOKKEEPING = ("listing", "leases", "reports", "markers", "specs", "other")  # all but the data the job must read
_MARKER = re.compile(r"^run=(\d{4}-\d\d-\d\d-\d\d-\d\d-\d\d)\.json$")
_REPORT = re.compile(r"/_reports/([^/]+)/run=(\d{4}-\d\d-\d\d-\d\d-\d\d-\d\d)\.json$")


@dataclass(frozen=True)
class Parsed:
    time: float
    method: str
    bucket: str
    key: str  # '' for a request on the bucket itself
    listing: bool


def parse(request: Request) -> Parsed:
    """A path-style request (/bucket/key?query) taken apart."""
    at, method, raw = request
    parts = urllib.parse.urlsplit(raw)
    bucket, _, key = urllib.parse.unquote(parts.path).lstrip("/").partition("/")
    query = urllib.parse.parse_qs(parts.query, keep_blank_values=True)
    listing = method == "GET" and not key and not ({"location", "versioning", "acl", "policy"} & set(query))
    return Parsed(at, method, bucket, key, listing)


def classify(request: Request, archive_bucket: str, archive_prefix: str) -> str:
    """One of KINDS. The archive is known by its bucket and prefix; everything else is the pipeline's own."""
    p = parse(request)
    if p.listing:
        return "listing"
    if p.bucket == archive_bucket and p.key.startswith(archive_prefix.strip("/")):
        return "archive reads"
    if "/_leases/" in p.key:
        return "leases"
    if "/_reports/" in p.key:
        return "reports"
    if "/_batches/" in p.key:
        return "specs"
    if _MARKER.match(p.key.rpartition("/")[2]) and "/_" not in p.key:
        return "markers"
    return "other"


def count(log: Iterable[Request], archive_bucket: str, archive_prefix: str) -> Dict[str, int]:
    out = dict.fromkeys(KINDS, 0)
    for request in log:
        out[classify(request, archive_bucket, archive_prefix)] += 1
    return out


def planning_seconds(log: Sequence[Request], started: float) -> Optional[float]:
    """From the command's start to its first lease request (the first batch begins); None when no batch ran."""
    leases = [at for at, method, path in log if "/_leases/" in urllib.parse.unquote(path)]
    return min(leases) - started if leases else None


def marking_seconds(log: Sequence[Request]) -> Tuple[float, int]:
    """(seconds, batches): summed over batches, from a batch's first report read (GET) to the last marker written
    (PUT) for a run of that batch."""
    first_read: Dict[str, float] = {}
    batch_runs: Dict[str, set] = {}
    marked: Dict[str, float] = {}
    for at, method, path in log:
        p = parse((at, method, path))
        report = _REPORT.search(p.key)
        if report and method == "GET":
            batch, run = report.groups()
            first_read[batch] = min(at, first_read.get(batch, at))
            batch_runs.setdefault(batch, set()).add(run)
        marker = _MARKER.match(p.key.rpartition("/")[2])
        if marker and method == "PUT" and "/_" not in p.key:
            marked[marker.group(1)] = max(at, marked.get(marker.group(1), at))
    total = 0.0
    for batch, start in first_read.items():
        ends = [marked[r] for r in batch_runs[batch] if r in marked]
        total += max(ends) - start if ends else 0.0
    return total, len(first_read)


def bookkeeping(counts: Dict[str, int]) -> int:
    return sum(counts[k] for k in BOOKKEEPING)
