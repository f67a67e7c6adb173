"""Locations in S3 or on local disk, with the few operations the job and the pipeline need.

S3 is read with boto3 rather than Hadoop's connector: pip's pyspark ships no S3 jars, and one code path for
local runs and EMR keeps them honest. boto3 picks endpoints from AWS_ENDPOINT_URL(_S3) itself.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import List

from botocore.exceptions import ClientError, IncompleteReadError, ReadTimeoutError, ResponseStreamingError

from spark.errors import error_code, is_not_found
from spark.refusals import DEFAULT_CHAIN, watch

S3_SCHEMES = ("s3", "s3a", "s3n")
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9]$")


class LocationError(ValueError):
    """A URI or path that cannot name a location; the message is one line for the user."""


@dataclass(frozen=True)
class Location:
    """An S3 prefix/object (scheme 's3') or a local path (scheme 'file')."""

    scheme: str
    bucket: str
    key: str  # S3: key or prefix without a leading slash ('' for a bucket root); file: absolute path

    @property
    def is_s3(self) -> bool:
        return self.scheme == "s3"

    @property
    def uri(self) -> str:
        if self.is_s3:
            return f"s3://{self.bucket}/{self.key}" if self.key else f"s3://{self.bucket}"
        return self.key

    def child(self, *parts: str) -> Location:
        if self.is_s3:
            key = "/".join([self.key.rstrip("/")] + list(parts)) if self.key else "/".join(parts)
            return Location("s3", self.bucket, key)
        return Location("file", "", os.path.join(self.key, *parts))

    def contains(self, other: Location) -> bool:
        """True when `other` is this location or lies beneath it."""
        if self.scheme != other.scheme or self.bucket != other.bucket:
            return False
        mine, theirs = self.key.rstrip("/"), other.key.rstrip("/")
        if not mine:
            return True
        return theirs == mine or theirs.startswith(mine + "/")

    def __str__(self) -> str:
        return self.uri


def parse_location(uri: str) -> Location:
    """s3://, s3a://, s3n:// (bucket root allowed) or a local path; `..` segments are refused."""
    if not isinstance(uri, str) or not uri.strip():
        raise LocationError("empty location")
    uri = uri.strip()
    m = re.match(r"^([A-Za-z][A-Za-z0-9+.\-]*)://(.*)$", uri)
    if m:
        scheme, rest = m.group(1).lower(), m.group(2)
        if scheme == "file":
            return _local(rest or "/", uri)
        if scheme not in S3_SCHEMES:
            raise LocationError(f"{uri}: unsupported scheme '{scheme}://' (use s3://, s3a://, s3n:// or a local path)")
        bucket, _, key = rest.partition("/")
        if not _BUCKET.match(bucket) or ".." in bucket:
            raise LocationError(f"{uri}: '{bucket}' is not a valid S3 bucket name")
        if "//" in key or any(part in (".", "..") for part in key.split("/")):
            raise LocationError(f"{uri}: the key must not contain empty, '.' or '..' segments")
        return Location("s3", bucket, key.strip("/"))
    if ":" in uri.split("/")[0]:
        raise LocationError(f"{uri}: not a URI (expected s3://bucket/prefix or a local path)")
    return _local(uri, uri)


def _local(path: str, original: str) -> Location:
    if ".." in path.replace("\\", "/").split("/"):
        raise LocationError(f"{original}: '..' is not allowed in a path")
    return Location("file", "", os.path.abspath(os.path.expanduser(path)))


def s3_client(session=None, identity: str = DEFAULT_CHAIN, fail_fast: bool = False):
    """An S3 client with retries for transient faults (500s, resets), whose failures say who asked for what
    (spark.refusals.watch: `identity` is the label of who `session` is; `fail_fast`: not retrying an endpoint that
    has never answered)."""
    # boto3 is imported where a client is made: a task that reads local files only never pays its ~0.15 s import.
    import boto3
    from botocore.config import Config

    config = Config(retries={"max_attempts": 8, "mode": "standard"}, connect_timeout=10, read_timeout=60)
    return watch((session or boto3.session.Session()).client("s3", config=config), identity, fail_fast)


@dataclass(frozen=True)
class ObjectInfo:
    name: str  # path relative to the listed location
    size: int
    storage_class: str = "STANDARD"


def list_children(loc: Location, client=None) -> List[str]:
    """Names of the immediate sub-folders of `loc`, paginated (archives hold more than 1,000 runs)."""
    if not loc.is_s3:
        if not os.path.isdir(loc.key):
            return []
        return sorted(e.name for e in os.scandir(loc.key) if e.is_dir())
    client = client or s3_client()
    prefix = loc.key.rstrip("/") + "/" if loc.key else ""
    names = []
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=loc.bucket, Prefix=prefix, Delimiter="/"):
        for cp in page.get("CommonPrefixes", []):
            names.append(cp["Prefix"][len(prefix):].rstrip("/"))
    return sorted(names)


def list_objects(loc: Location, client=None, recursive: bool = True, start_after: str = "") -> List[ObjectInfo]:
    """Every object beneath `loc` (or only its direct files when recursive=False), paginated; with `start_after`
    (a name relative to `loc`), only those whose names sort after it, which S3 skips without listing them."""
    if not loc.is_s3:
        return [o for o in _list_local(loc.key, recursive) if o.name > start_after]
    client = client or s3_client()
    prefix = loc.key.rstrip("/") + "/" if loc.key else ""
    kwargs = {"Bucket": loc.bucket, "Prefix": prefix}
    if start_after:
        kwargs["StartAfter"] = prefix + start_after
    if not recursive:
        kwargs["Delimiter"] = "/"
    out = []
    for page in client.get_paginator("list_objects_v2").paginate(**kwargs):
        for obj in page.get("Contents", []):
            out.append(ObjectInfo(obj["Key"][len(prefix):], obj["Size"], obj.get("StorageClass", "STANDARD")))
    return sorted(out, key=lambda o: o.name)


def _list_local(root: str, recursive: bool) -> List[ObjectInfo]:
    if not os.path.isdir(root):
        return []
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for f in filenames:
            full = os.path.join(dirpath, f)
            out.append(ObjectInfo(os.path.relpath(full, root).replace(os.sep, "/"), os.path.getsize(full)))
        if not recursive:
            break
    return sorted(out, key=lambda o: o.name)


def exists(loc: Location, client=None) -> bool:
    """Whether anything is stored at or beneath `loc` (a bucket root counts when the bucket exists)."""
    if not loc.is_s3:
        return os.path.exists(loc.key)
    client = client or s3_client()
    try:
        prefix = loc.key.rstrip("/") + "/" if loc.key else ""
        resp = client.list_objects_v2(Bucket=loc.bucket, Prefix=prefix, MaxKeys=1)
    except ClientError as e:
        if is_not_found(e) or error_code(e) == "NoSuchBucket":
            return False
        raise
    return bool(resp.get("KeyCount")) or not loc.key


def read_bytes(loc: Location, client=None, attempts: int = 4) -> bytes:
    """The whole object. botocore retries failed requests but not a body cut short: that download starts again."""
    if not loc.is_s3:
        with open(loc.key, "rb") as f:
            return f.read()
    client = client or s3_client()
    for attempt in range(1, attempts + 1):
        body = client.get_object(Bucket=loc.bucket, Key=loc.key)["Body"]
        try:
            return body.read()  # unlike the raw stream, checks the length and wraps urllib3's errors
        except (IncompleteReadError, ReadTimeoutError, ResponseStreamingError):
            if attempt == attempts:
                raise
        finally:
            body.close()
    raise AssertionError("unreachable")


def write_bytes(loc: Location, data: bytes, client=None, encrypt: bool = False) -> None:
    """Write atomically: local files go through a temp file and rename, S3 PUTs are atomic by nature.

    `encrypt` asks S3 for server-side encryption (KMS).
    """
    if not loc.is_s3:
        os.makedirs(os.path.dirname(loc.key) or ".", exist_ok=True)
        tmp = f"{loc.key}.tmp-{os.getpid()}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, loc.key)
        return
    client = client or s3_client()
    extra = {"ServerSideEncryption": "aws:kms"} if encrypt else {}
    client.put_object(Bucket=loc.bucket, Key=loc.key, Body=data, **extra)


def delete(loc: Location, client=None) -> None:
    if not loc.is_s3:
        try:
            os.remove(loc.key)
        except FileNotFoundError:
            pass
        return
    (client or s3_client()).delete_object(Bucket=loc.bucket, Key=loc.key)


def delete_all(folder: Location, client=None) -> None:
    """Every object under `folder` (one listing, one delete each)."""
    for obj in list_objects(folder, client):
        delete(folder.child(obj.name), client)
