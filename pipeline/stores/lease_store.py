"""Lease records in their store: read, write only if unchanged, delete only if unchanged, list.

On S3 these are conditional requests (If-None-Match / If-Match on the ETag); on a local markers folder a
compare-and-swap under flock(2). A failed precondition is an answer (None/False), never an error.
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import os
from contextlib import contextmanager
from typing import Iterator, List, Optional, Tuple

from pipeline.rules.errors import PipelineError, aws_error
from spark import storage
from spark.errors import error_code, is_not_found
from spark.storage import Location


def read_lease(loc: Location, client) -> Optional[Tuple[dict, str]]:
    """The lease's record and version, or None when there is none."""
    if loc.is_s3:
        try:
            resp = client.get_object(Bucket=loc.bucket, Key=loc.key)
        except client.exceptions.ClientError as e:
            if is_not_found(e):
                return None
            raise _failure("read", loc, e) from None
        return _parse(resp["Body"].read()), resp["ETag"]
    with _locked(loc):
        return _read_local(loc.key)


def put_lease(loc: Location, record: dict, expect: Optional[str], client) -> Optional[str]:
    """Write `record` if the lease is absent (expect None) or still at version `expect`; the new version or None."""
    body = json.dumps(record, indent=2, sort_keys=True).encode()
    if loc.is_s3:
        condition = {"IfNoneMatch": "*"} if expect is None else {"IfMatch": expect}
        try:
            return client.put_object(Bucket=loc.bucket, Key=loc.key, Body=body, **condition)["ETag"]
        except client.exceptions.ClientError as e:
            if _lost_race(e):
                return None
            raise _failure("write", loc, e) from None
    with _locked(loc):
        current = _read_local(loc.key)
        if (current[1] if current else None) != expect:
            return None
        storage.write_bytes(loc, body)
        return _digest(body)


def delete_lease(loc: Location, expect: str, client) -> bool:
    """Delete the lease if still at version `expect`; True when it is gone, False when another holds it."""
    if loc.is_s3:
        try:
            client.delete_object(Bucket=loc.bucket, Key=loc.key, IfMatch=expect)
            return True
        except client.exceptions.ClientError as e:
            if is_not_found(e):  # gone already (a retried delete that had landed)
                return True
            if _lost_race(e):
                return False
            raise _failure("delete", loc, e) from None
    with _locked(loc):
        current = _read_local(loc.key)
        if current is not None and current[1] != expect:
            return False
        if current is not None:
            os.remove(loc.key)
        return True


def lease_names(folder: Location, client) -> List[str]:
    """The names of the records in a leases folder, from one listing."""
    try:
        objects = storage.list_objects(folder, client, recursive=False)
    except Exception as e:
        if not error_code(e):
            raise
        raise _failure("list", folder, e) from None
    return [o.name for o in objects if o.name.endswith(".json")]


def _lost_race(error) -> bool:
    """412: the condition failed; 409: a concurrent conditional write won; 404: If-Match on a deleted lease."""
    lost = ("PreconditionFailed", "ConditionalRequestConflict", "NoSuchKey")
    return _status(error) in (409, 412) or error_code(error) in lost


def _status(error) -> Optional[int]:
    return error.response.get("ResponseMetadata", {}).get("HTTPStatusCode")


def _failure(verb: str, loc: Location, error) -> PipelineError:
    what = f"cannot {verb} {'the leases in' if verb == 'list' else 'the lease'} {loc.uri}"
    if _status(error) == 501:
        return PipelineError(f"{what}: the markers store must support S3 conditional writes ({error_code(error)})")
    return aws_error(error, what)


def _read_local(path: str) -> Optional[Tuple[dict, str]]:
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return None
    return _parse(data), _digest(data)


@contextmanager
def _locked(loc: Location) -> Iterator[None]:
    """Serialise every read-compare-write of one local leases folder (flock works on NFS v4 too)."""
    folder = os.path.dirname(loc.key)
    os.makedirs(folder, exist_ok=True)
    fd = os.open(os.path.join(folder, ".lock"), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _parse(data: bytes) -> dict:
    try:
        record = json.loads(data)
    except ValueError:
        return {}
    return record if isinstance(record, dict) else {}


def _digest(data: bytes) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()
