"""The two files a user passes, the DynamoDB storage config and the Iglu resolver config, validated into settings.

Both are self-describing JSON validated through a real Iglu resolver, before anything touches AWS. The storage config
may be amazon_dynamodb_config 1-0-0, 1-0-1 (flat keys) or 2-0-0 (keys under auth, or auth null for the default AWS
credential chain); the resolver config resolver-config 1-0-0 to 1-0-3.
"""
from __future__ import annotations

import json
import os
import re
import stat
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, List, NamedTuple, Optional, Tuple

import boto3
import botocore.exceptions
from botocore.config import Config

from pipeline.rules.errors import PipelineError
from spark.refusals import DEFAULT_CHAIN, keys_identity, watch

from .iglu_resolver import Resolver
from .self_describing import IgluError, SchemaKey, parse_envelope, show

MAX_CONFIG_BYTES = 1 << 20  # a config is a few hundred bytes; anything this big is the wrong file
_TABLE = re.compile(r"^[A-Za-z0-9_.-]{3,255}$")  # DynamoDB's own rule for table names
_REGION = re.compile(r"^[a-z0-9]+(-[a-z0-9]+)*$")


class ConfigError(PipelineError):
    """A config file the user must fix; str() is one line naming the file."""


class _Kind(NamedTuple):
    title: str
    vendor: str
    name: str
    versions: Tuple[str, ...]

    def holds(self, key: SchemaKey) -> bool:
        return (key.vendor, key.name, key.format) == (self.vendor, self.name, "jsonschema")

    def uris(self) -> str:
        *first, last = self.versions
        return f"iglu:{self.vendor}/{self.name}/jsonschema/{', '.join(first)} or {last}"


STORAGE = _Kind(
    "a DynamoDB storage config", "com.snowplowanalytics.snowplow.storage", "amazon_dynamodb_config",
    ("1-0-0", "1-0-1", "2-0-0"),
)
RESOLVER = _Kind(
    "an Iglu resolver config", "com.snowplowanalytics.iglu", "resolver-config", ("1-0-0", "1-0-1", "1-0-2", "1-0-3")
)


@dataclass(frozen=True)
class StorageConfig:
    """Where the manifest lives and how to authenticate; the keys never appear in repr() or str()."""

    name: str
    table: str
    region: str
    id: Optional[str]
    schema: str  # the iglu: URI the file declared
    access_key_id: Optional[str] = field(default=None, repr=False)  # None: the default AWS credential chain
    secret_access_key: Optional[str] = field(default=None, repr=False)
    source: str = field(default="", compare=False)  # the file it was read from (base name), for messages

    @property
    def identity(self) -> str:
        """Who DynamoDB sees: the config's own keys (naming their file), or the default chain."""
        return keys_identity(self.source or "the storage config") if self.access_key_id else DEFAULT_CHAIN

    def credentials(self) -> Optional[dict]:
        if self.access_key_id is None:
            return None
        return {"accessKeyId": self.access_key_id, "secretAccessKey": self.secret_access_key}

    def boto3_session(self, profile: Optional[str] = None) -> boto3.session.Session:
        """A session in the config's region: its keys if it has some (profile is then ignored), else the chain."""
        if self.access_key_id is not None:
            return boto3.session.Session(
                aws_access_key_id=self.access_key_id,
                aws_secret_access_key=self.secret_access_key,
                region_name=self.region,
            )
        try:
            return boto3.session.Session(profile_name=profile, region_name=self.region)
        except botocore.exceptions.ProfileNotFound:
            raise ConfigError(f"AWS profile {profile!r} not found in the AWS config or credentials files") from None

    def dynamodb_client(self):
        """The pipeline's own DynamoDB client (the table's shape, creation, TTL, imports): standard retries, its
        failures naming this config's identity, and an endpoint that never answered said at once (spark.refusals)."""
        config = Config(retries={"max_attempts": 5, "mode": "standard"}, connect_timeout=10, read_timeout=60)
        return watch(self.boto3_session().client("dynamodb", config=config), self.identity, fail_fast=True)


def load_configs(storage_path: str, resolver_path: str) -> StorageConfig:
    """The resolver config, then the storage config through it: the one call the pipeline makes."""
    return load_storage_config(storage_path, load_resolver(resolver_path))


def load_resolver(
    path: str,
    *,
    http_timeout: float = 5.0,
    http_retries: int = 2,
    http_backoff: float = 0.25,
    clock: Callable[[], float] = time.monotonic,
) -> Resolver:
    """A resolver from a resolver config file, itself validated against the package's embedded schemas."""
    label, instance = read_json(path)
    with _as_config_error():
        key, data = parse_envelope(instance, label, extra_keys="warn")
        _expect(key, RESOLVER, STORAGE, label)
        Resolver.bootstrap().validate_data(key, data, label)
        base_dir = os.path.dirname(os.path.abspath(path))
        return Resolver.from_config(
            data, label, base_dir=base_dir,
            http_timeout=http_timeout, http_retries=http_retries, http_backoff=http_backoff, clock=clock,
        )


def load_storage_config(path: str, resolver: Resolver) -> StorageConfig:
    label, instance = read_json(path)
    with _as_config_error():
        key, data = parse_envelope(instance, label)
        _expect(key, STORAGE, RESOLVER, label)
        resolver.validate_data(key, data, label)
    if key.version not in STORAGE.versions:
        raise ConfigError(
            f"{label}: {key.uri} is valid but version {key.version} is not supported "
            f"(supported: {', '.join(STORAGE.versions)})"
        )
    return _storage_config(key, data, label)


def _storage_config(key: SchemaKey, data: dict, label: str) -> StorageConfig:
    if key.version.startswith("1-"):
        keys: Optional[Tuple[str, str]] = (data["accessKeyId"], data["secretAccessKey"])
        key_path = "data"
    else:
        keys = None if data["auth"] is None else (data["auth"]["accessKeyId"], data["auth"]["secretAccessKey"])
        key_path = "data.auth"
    problems: List[str] = []
    if not _TABLE.match(data["dynamodbTable"]):
        problems.append(
            f"data.dynamodbTable: {show(data['dynamodbTable'])} is not a DynamoDB table name "
            "(3 to 255 characters of A-Z a-z 0-9 _ - .)"
        )
    if not _REGION.match(data["awsRegion"]):
        problems.append(f"data.awsRegion: {show(data['awsRegion'])} is not an AWS region name (like eu-west-1)")
    for name, value in zip(("accessKeyId", "secretAccessKey"), keys or ()):
        if not value:
            problems.append(f"{key_path}.{name}: must not be empty")
        elif value != value.strip():
            problems.append(f"{key_path}.{name}: {show(value, secret=True)} has leading or trailing whitespace")
    if problems:
        raise ConfigError("; ".join(f"{label}: {p} ({key.uri})" for p in problems))
    return StorageConfig(
        name=data["name"],
        table=data["dynamodbTable"],
        region=data["awsRegion"],
        id=data.get("id"),
        schema=key.uri,
        access_key_id=keys[0] if keys else None,
        secret_access_key=keys[1] if keys else None,
        source=label,
    )


def _expect(key: SchemaKey, kind: _Kind, other: _Kind, label: str) -> None:
    """Catches a file of the wrong kind before resolving anything, with a hint when the two were swapped."""
    if kind.holds(key):
        return
    hint = f" ({other.title}: are the storage and resolver files swapped?)" if other.holds(key) else ""
    raise ConfigError(f"{label}: expected {kind.title} ({kind.uris()}), got {key.uri}{hint}")


@contextmanager
def _as_config_error() -> Iterator[None]:
    try:
        yield
    except IgluError as e:
        raise ConfigError(str(e)) from e


class _NotJson(ValueError):
    """What the standard parser accepts but JSON does not (duplicate keys, NaN, Infinity)."""


def _no_duplicates(pairs: List[Tuple[str, Any]]) -> dict:
    result = {}
    for k, v in pairs:
        if k in result:
            raise _NotJson(f"duplicate key {show(k)}")
        result[k] = v
    return result


def _no_constant(name: str) -> Any:
    raise _NotJson(f"{name} is not a JSON value")


def read_json(path: str) -> Tuple[str, Any]:
    """(label, parsed JSON) of a config file, label being its base name; ConfigError for every way it can be bad."""
    path = os.fspath(path)
    label = os.path.basename(path.rstrip(os.sep)) or path
    try:
        info = os.stat(path)
    except FileNotFoundError:
        raise ConfigError(f"{label}: no such file ({path})") from None
    except OSError as e:
        raise ConfigError(f"{label}: cannot read {path}: {e.strerror or e}") from None
    if stat.S_ISDIR(info.st_mode):
        raise ConfigError(f"{label}: {path} is a directory, expected a JSON file")
    too_big = f"{label}: larger than {MAX_CONFIG_BYTES} bytes, too big for a config file ({path})"
    if info.st_size > MAX_CONFIG_BYTES:
        raise ConfigError(too_big)
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_CONFIG_BYTES + 1)
    except OSError as e:
        raise ConfigError(f"{label}: cannot read {path}: {e.strerror or e}") from None
    if len(raw) > MAX_CONFIG_BYTES:
        raise ConfigError(too_big)
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise ConfigError(f"{label}: not UTF-8 text: byte 0x{raw[e.start]:02x} on line {line}") from None
    if not text.strip():
        raise ConfigError(f"{label}: empty file, expected a JSON object")
    try:
        return label, json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_no_constant)
    except json.JSONDecodeError as e:
        raise ConfigError(f"{label}: not valid JSON: {e.msg} at line {e.lineno} column {e.colno}") from None
    except _NotJson as e:
        raise ConfigError(f"{label}: not valid JSON: {e}") from None
    except RecursionError:
        raise ConfigError(f"{label}: not a config: JSON nested too deeply") from None
