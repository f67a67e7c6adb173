"""Per-run markers and the pipeline's other bookkeeping objects, under <markers>/<dynamodbTable>/.

A marker `run=<id>.json` exists only once every item of that run is proven in the table; it holds the run's report.
Completeness of all runs comes from ONE listing of the folder (a missing S3 object costs four requests to check).
"""
from __future__ import annotations

import json
import threading
import time
from datetime import datetime, timezone
from typing import Dict, Iterable, Optional, Set

from spark import storage
from spark.errors import is_not_found
from spark.report import report_location
from spark.runid import file_name, run_of_file
from spark.storage import Location

# Luigi asks every batch task whether it is complete; they share one listing per process for a few seconds.
_listing_cache: Dict[str, tuple] = {}
_cache_lock = threading.Lock()
CACHE_SECONDS = 30.0


class MarkerStore:
    def __init__(self, root: Location, table: str, client=None):
        self.root = root
        self.folder = root.child(table)
        self._client = client

    @property
    def client(self):
        if self._client is None and self.folder.is_s3:
            self._client = storage.s3_client(fail_fast=True)
        return self._client

    def marker(self, run: str) -> Location:
        return self.folder.child(file_name(run))

    def batch_spec(self, batch_id: str) -> Location:
        return self.folder.child("_batches", f"{batch_id}.json")

    def reports(self, batch_id: str) -> Location:
        return self.folder.child("_reports", batch_id)

    def report(self, batch_id: str, run: str) -> Location:
        return report_location(self.reports(batch_id), run)

    def reported_runs(self, folder: Location) -> Set[str]:
        """Runs with a report in a reports folder, from one listing."""
        return runs_named(o.name for o in storage.list_objects(folder, self.client, recursive=False))

    def summary(self, stamp: str) -> Location:
        return self.folder.child("_summaries", f"{stamp}.json")

    def staging(self) -> Location:
        return self.folder.child("_staging")

    def done_runs(self, cached: bool = False) -> Set[str]:
        """Run ids with a marker, from one (paginated) listing of the marker folder."""
        key = self.folder.uri
        with _cache_lock:
            hit = _listing_cache.get(key)
            if cached and hit and time.monotonic() - hit[0] < CACHE_SECONDS:
                return set(hit[1])
        done = runs_named(o.name for o in storage.list_objects(self.folder, self.client, recursive=False))
        with _cache_lock:
            _listing_cache[key] = (time.monotonic(), frozenset(done))
        return done

    def mark(self, run: str, report: dict) -> None:
        body = {"run": run, "marked_at": utc_now(), "report": report}
        storage.write_bytes(self.marker(run), json.dumps(body, indent=2, sort_keys=True).encode(), self.client)
        self._forget_listing()

    def unmark(self, run: str) -> None:
        storage.delete(self.marker(run), self.client)
        self._forget_listing()

    def read_marker(self, run: str) -> dict:
        return json.loads(storage.read_bytes(self.marker(run), self.client))

    def read_json(self, loc: Location) -> Optional[dict]:
        """The JSON object at `loc`, or None when it is absent."""
        try:
            return json.loads(storage.read_bytes(loc, self.client))
        except Exception as e:  # only "not found" is an answer: anything else is raised
            if is_not_found(e):
                return None
            raise

    def write_json(self, loc: Location, data: dict) -> None:
        storage.write_bytes(loc, json.dumps(data, indent=2, sort_keys=True).encode(), self.client)

    def _forget_listing(self) -> None:
        with _cache_lock:
            _listing_cache.pop(self.folder.uri, None)


def runs_named(names: Iterable[str]) -> Set[str]:
    """The run ids of `run=<id>.json` names among `names`."""
    return {run for run in map(run_of_file, names) if run is not None}


def utc_now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
