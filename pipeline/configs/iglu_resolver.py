"""An Iglu resolver made from a resolver config: finds schemas in its repositories, caches them, validates against them.

Behaves like Snowplow's Iglu clients so a resolver config written for them means the same here: repositories whose
vendorPrefixes match come first, then embedded before HTTP, then by priority; a 404 moves on to the next repository,
any other failure is reported as that repository being unreachable; found schemas are cached (cacheSize, cacheTtl).
"""
from __future__ import annotations

import logging
import time
import urllib.parse
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

from jsonschema import Draft4Validator, FormatChecker
from jsonschema.exceptions import SchemaError

from .iglu_repositories import (
    EmbeddedRepository,
    HttpRepository,
    Repository,
    RepositoryFailure,
    package_repository,
)
from .self_describing import IgluError, SchemaKey, explain, json_path, scrub, show

log = logging.getLogger("manifest.iglu")

# Draft 4's own formats plus "uuid", which Iglu schemas use with draft 4 and Snowplow's validators check.
FORMATS = FormatChecker(formats=[*Draft4Validator.FORMAT_CHECKER.checkers, "uuid"])


@dataclass
class _Cached:
    schema: Any
    validator: Draft4Validator
    stored_at: float


class Resolver:
    """Looks schemas up in its repositories, caching what it found, and validates self-describing JSON."""

    def __init__(
        self,
        repositories: Sequence[Repository],
        cache_size: int = 500,
        cache_ttl: Optional[float] = None,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.repositories = list(repositories)
        self.cache_size = cache_size
        self.cache_ttl = cache_ttl
        self._clock = clock
        self._cache: OrderedDict[SchemaKey, _Cached] = OrderedDict()

    @classmethod
    def bootstrap(cls) -> Resolver:
        """Only the package's own schemas: what validates a resolver config before it can be used."""
        return cls([package_repository()])

    @classmethod
    def from_config(
        cls,
        data: Dict[str, Any],
        source_name: str,
        *,
        base_dir: Optional[str] = None,
        http_timeout: float = 5.0,
        http_retries: int = 2,
        http_backoff: float = 0.25,
        clock: Callable[[], float] = time.monotonic,
    ) -> Resolver:
        """From the data of a resolver config already valid against resolver-config 1-0-0..1-0-3.

        Relative embedded paths are taken from base_dir (default: the working directory).
        """
        repositories: List[Repository] = [package_repository()]
        for i, repo in enumerate(data["repositories"]):
            common = (repo["name"], repo["priority"], tuple(repo["vendorPrefixes"]))
            connection = repo["connection"]
            if "embedded" in connection:
                root = Path(base_dir or ".", connection["embedded"]["path"])
                if not root.is_dir():
                    log.warning("%s: embedded repository %r: no directory %s, so no schema is found in it (Snowplow's "
                                "clients read an embedded path from their classpath, this pipeline from disk)",
                                source_name, repo["name"], root)
                repositories.append(EmbeddedRepository(*common, root=root))
                continue
            http = connection["http"]
            parts = urllib.parse.urlsplit(http["uri"])
            if parts.scheme not in ("http", "https") or not parts.netloc:
                shown = show(http["uri"])
                raise IgluError(
                    f"{source_name}: data.repositories[{i}].connection.http.uri: {shown} is not an http(s) URL"
                )
            repositories.append(
                HttpRepository(
                    *common, uri=http["uri"], apikey=http.get("apikey"),
                    timeout=http_timeout, retries=http_retries, backoff=http_backoff,
                )
            )
        ttl = data.get("cacheTtl")
        # cacheSize is any JSON number from 1-0-2 on: negative means no cache, fractions round down.
        size = max(0, int(min(data["cacheSize"], 1_000_000)))
        return cls(repositories, cache_size=size, cache_ttl=ttl, clock=clock)

    def ordered(self, key: SchemaKey) -> List[Repository]:
        """The order Iglu clients try repositories in: vendor match, embedded before HTTP, priority (stable)."""
        return sorted(
            self.repositories, key=lambda r: (not r.matches(key.vendor), r.class_priority, r.priority)
        )

    def lookup(self, key: SchemaKey) -> Any:
        """The schema for key, from the cache or the first repository that has it (do not modify it)."""
        return self._resolve(key).schema

    def validate_data(self, key: SchemaKey, data: Any, file_label: str) -> None:
        """IgluError listing every violation of the schema for key, secrets masked, on one line."""
        try:
            validator = self._resolve(key).validator
        except IgluError as e:
            raise IgluError(f"{file_label}: {e}") from None
        found = sorted(validator.iter_errors(data), key=lambda e: [str(p) for p in e.absolute_path])
        problems = [
            f"{file_label}: {json_path(path)}: {message} ({key.uri})" for e in found for path, message in explain(e)
        ]
        if problems:
            raise IgluError(scrub("; ".join(problems), data))

    def _resolve(self, key: SchemaKey) -> _Cached:
        now = self._clock()
        hit = self._cache.get(key)
        if hit is not None and (self.cache_ttl is None or now - hit.stored_at < self.cache_ttl):
            self._cache.move_to_end(key)
            return hit
        self._cache.pop(key, None)
        schema = self._fetch(key)
        entry = _Cached(schema, Draft4Validator(schema, format_checker=FORMATS), now)
        if self.cache_size > 0:
            self._cache[key] = entry
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        return entry

    def _fetch(self, key: SchemaKey) -> Any:
        ordered = self.ordered(key)
        failures: List[str] = []
        for repo in ordered:
            try:
                schema = repo.fetch(key)
            except RepositoryFailure as e:
                failures.append(str(e))
                continue
            if schema is None:
                continue
            if failures:
                log.warning("%s; found %s in repository %r", "; ".join(failures), key.uri, repo.name)
            _check_schema(schema, key, repo)
            return schema
        tried = ", ".join(f"{r.name!r} ({r.location})" for r in ordered)
        raise IgluError("; ".join([f"schema {key.uri} not found; repositories tried: {tried}", *failures]))


def _check_schema(schema: Any, key: SchemaKey, repo: Repository) -> None:
    where = f"schema {key.uri} from repository {repo.name!r}"
    try:
        Draft4Validator.check_schema(schema)
    except SchemaError as e:
        path = json_path(e.absolute_path, "schema")
        raise IgluError(f"{where} is not a valid JSON schema: {path}: {e.message}") from None
    described = schema.get("self")
    if isinstance(described, dict):
        claimed = tuple(described.get(k) for k in ("vendor", "name", "format", "version"))
        if claimed != (key.vendor, key.name, key.format, key.version):
            raise IgluError(f"{where} describes itself as iglu:{'/'.join(map(str, claimed))}")

