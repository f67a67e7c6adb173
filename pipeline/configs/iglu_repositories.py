"""Iglu repositories: where a schema is looked up, in a directory (embedded) or over HTTP(S).

Each answers a lookup with the schema, None when it does not have it (a 404, a missing file), or RepositoryFailure
when it cannot tell (unreachable, unreadable), as Snowplow's Iglu clients tell those apart. The package ships the
schemas it needs as its own embedded repository, so validating our configs needs no network.
"""
from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Optional, Tuple

from .self_describing import SchemaKey

PACKAGE_REPOSITORY_DIR = Path(__file__).resolve().parent / "iglu_repo"
PACKAGE_REPOSITORY_NAME = "Pipeline embedded"
PACKAGE_VENDOR_PREFIXES = ("com.snowplowanalytics",)

MAX_SCHEMA_BYTES = 1 << 20


class RepositoryFailure(Exception):
    """A repository could not answer (as opposed to answering "not here"); str() names the repository."""


@dataclass(frozen=True)
class Repository:
    name: str
    priority: float = 0
    vendor_prefixes: Tuple[str, ...] = ()
    class_priority: ClassVar[int] = 0  # Iglu clients try every embedded repository before any HTTP one

    def matches(self, vendor: str) -> bool:
        return any(vendor.startswith(prefix) for prefix in self.vendor_prefixes)

    @property
    def location(self) -> str:
        raise NotImplementedError

    def fetch(self, key: SchemaKey) -> Optional[Any]:
        """The parsed schema, None if this repository does not have it; RepositoryFailure if it cannot tell."""
        raise NotImplementedError


@dataclass(frozen=True)
class EmbeddedRepository(Repository):
    """A directory in Iglu static-repository layout: <root>/schemas/<vendor>/<name>/<format>/<version>."""

    root: Path = PACKAGE_REPOSITORY_DIR
    class_priority: ClassVar[int] = 1

    @property
    def location(self) -> str:
        return f"embedded {self.root}"

    def fetch(self, key: SchemaKey) -> Optional[Any]:
        path = Path(self.root, "schemas", key.vendor, key.name, key.format, key.version)
        try:
            raw = path.read_bytes()
        except (FileNotFoundError, NotADirectoryError):
            return None
        except OSError as e:
            raise RepositoryFailure(f"repository {self.name!r} unreadable: {path}: {e.strerror or e}") from None
        try:
            return json.loads(raw)
        except ValueError:
            raise RepositoryFailure(f"repository {self.name!r} unreadable: {path} is not valid JSON") from None


@dataclass(frozen=True)
class HttpRepository(Repository):
    """A static or server Iglu repository over HTTP(S), fetched with the stdlib so nothing else is needed."""

    uri: str = ""
    apikey: Optional[str] = field(default=None, repr=False)
    timeout: float = 5.0  # seconds per attempt
    retries: int = 2  # further attempts after a failure other than 404
    backoff: float = 0.25  # seconds before the first retry, doubled for each next one
    class_priority: ClassVar[int] = 100

    @property
    def location(self) -> str:
        return self.uri

    def fetch(self, key: SchemaKey) -> Optional[Any]:
        url = f"{self.uri.rstrip('/')}/schemas/{key.path}"
        headers = {"Accept": "application/json"}
        if self.apikey:
            headers["apikey"] = self.apikey
        reason = ""
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(self.backoff * 2 ** (attempt - 1))
            try:
                with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=self.timeout) as r:
                    body = r.read(MAX_SCHEMA_BYTES + 1)
            except urllib.error.HTTPError as e:
                e.close()
                if e.code == 404:
                    return None
                reason = f"HTTP {e.code} {e.reason}"
                if e.code < 500 and e.code != 429:
                    break  # a refusal (401, 403, ...) will not change on retry
            except (urllib.error.URLError, OSError) as e:
                reason = _network_reason(e, self.timeout)
            else:
                return self._parse(body, url)
        tries = f" after {attempt + 1} attempts" if attempt else ""
        raise RepositoryFailure(f"repository {self.name!r} unreachable: {reason}{tries} ({url})")

    def _parse(self, body: bytes, url: str) -> Any:
        failed = f"repository {self.name!r} unreachable"
        if len(body) > MAX_SCHEMA_BYTES:
            raise RepositoryFailure(f"{failed}: response over {MAX_SCHEMA_BYTES} bytes ({url})")
        try:
            return json.loads(body)
        except ValueError:
            raise RepositoryFailure(f"{failed}: response is not valid JSON ({url})") from None


def _network_reason(error: OSError, timeout: float) -> str:
    reason = error.reason if isinstance(error, urllib.error.URLError) else error
    if isinstance(reason, TimeoutError):
        return f"timed out after {timeout:g}s"
    if isinstance(reason, ConnectionRefusedError):
        return "connection refused"
    if isinstance(reason, OSError) and reason.strerror:
        return reason.strerror
    return str(reason) or type(reason).__name__


def package_repository() -> EmbeddedRepository:
    """The schemas shipped in the package; always part of a resolver, first for Snowplow's vendor."""
    return EmbeddedRepository(PACKAGE_REPOSITORY_NAME, 0, PACKAGE_VENDOR_PREFIXES, PACKAGE_REPOSITORY_DIR)


