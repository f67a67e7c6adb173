"""Luigi targets for the per-run records, so Luigi's tools (luigi-deps, luigid) show where each run's proof lives.

They are Luigi's own S3Target and LocalTarget, at `<markers>/<table>/run=<id>.json` (and the clean and verify
records beside it), but `exists()` answers from the marker store's one shared listing per process: a batch of
hundreds of runs costs one listing, never S3 requests of its own per run (a missing object costs four to check).
Nothing writes through them: a marker is written only with the report that proves its run (lifecycle.py).
"""
from __future__ import annotations

from typing import Callable, Optional

import luigi
from luigi.contrib.s3 import S3Client, S3Target

from pipeline.rules.errors import aws_errors
from spark.storage import Location

_S3: Optional[S3Client] = None


def _s3_client() -> S3Client:
    """One luigi S3Client for every target (it connects only if a target is opened, which none is)."""
    global _S3
    if _S3 is None:
        _S3 = S3Client()
    return _S3


class S3RecordTarget(S3Target):
    def __init__(self, loc: Location, exists: Callable[[], bool]):
        super().__init__(loc.uri, client=_s3_client())
        self._exists = exists

    def exists(self) -> bool:
        with aws_errors():
            return self._exists()


class LocalRecordTarget(luigi.LocalTarget):
    def __init__(self, loc: Location, exists: Callable[[], bool]):
        super().__init__(loc.key)
        self._exists = exists

    def exists(self) -> bool:
        return self._exists()


def record_target(loc: Location, exists: Callable[[], bool]) -> luigi.Target:
    """A target at `loc` whose existence `exists` decides (from a shared listing)."""
    return S3RecordTarget(loc, exists) if loc.is_s3 else LocalRecordTarget(loc, exists)
