"""An Iglu resolver: finds self-describing JSON schemas in embedded and HTTP repositories, validates against them.

Behaves like Snowplow's Iglu clients so a resolver config written for them means the same here: repositories whose
vendorPrefixes match come first, then embedded before HTTP, then by priority; a 404 moves on to the next repository,
any other failure is reported as that repository being unreachable; found schemas are cached (cacheSize, cacheTtl).
The package ships the schemas it needs as its own embedded repository, so validating our configs needs no network.
"""
from __future__ import annotations

import json
import logging
import re
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar, Dict, List, Optional, Sequence, Tuple

from jsonschema import Draft4Validator, FormatChecker
from jsonschema.exceptions import SchemaError, ValidationError

from pipeline.errors import PipelineError

log = logging.getLogger(__name__)

PACKAGE_REPOSITORY_DIR = Path(__file__).resolve().parent / "iglu_repo"
PACKAGE_REPOSITORY_NAME = "Pipeline embedded"
PACKAGE_VENDOR_PREFIXES = ("com.snowplowanalytics",)

# Values under these keys (at any depth) are never shown in a message, whatever the problem with them.
SECRET_KEYS = frozenset({"accessKeyId", "secretAccessKey", "auth", "apikey"})
MASK = "****"

MAX_SCHEMA_BYTES = 1 << 20

# Draft 4's own formats plus "uuid", which Iglu schemas use with draft 4 and Snowplow's validators check.
FORMATS = FormatChecker(formats=[*Draft4Validator.FORMAT_CHECKER.checkers, "uuid"])

_URI = re.compile(
    r"^iglu:([a-zA-Z0-9_.-]+)/([a-zA-Z0-9_-]+)/([a-zA-Z0-9_-]+)/([1-9][0-9]*-(?:0|[1-9][0-9]*)-(?:0|[1-9][0-9]*))$"
)
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*$")


class IgluError(PipelineError):
    """A schema cannot be resolved, or a JSON does not validate against it; str() is one line."""


class RepositoryFailure(Exception):
    """A repository could not answer (as opposed to answering "not here"); str() names the repository."""


@dataclass(frozen=True)
class SchemaKey:
    vendor: str
    name: str
    format: str
    version: str  # SchemaVer MODEL-REVISION-ADDITION, kept as written

    @classmethod
    def parse(cls, uri: str) -> SchemaKey:
        """Raises ValueError unless uri is iglu:vendor/name/format/M-R-A (SchemaVer, no leading zeros)."""
        match = _URI.match(uri) if isinstance(uri, str) else None
        if match is None or set(match.group(1)) == {"."}:
            raise ValueError(f"{uri!r} is not an Iglu URI (iglu:vendor/name/format/MODEL-REVISION-ADDITION)")
        return cls(*match.groups())

    @property
    def path(self) -> str:
        return f"{self.vendor}/{self.name}/{self.format}/{self.version}"

    @property
    def uri(self) -> str:
        return f"iglu:{self.path}"

    def __str__(self) -> str:
        return self.uri


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
                    log.warning("%s: embedded repository %r: no directory %s", source_name, repo["name"], root)
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

    def validate(self, instance: Any, file_label: str) -> Tuple[SchemaKey, Any]:
        """Checks the self-describing envelope then validates its data; returns (schema key, data)."""
        key, data = parse_envelope(instance, file_label)
        self.validate_data(key, data, file_label)
        return key, data

    def validate_data(self, key: SchemaKey, data: Any, file_label: str) -> None:
        """IgluError listing every violation of the schema for key, secrets masked, on one line."""
        try:
            validator = self._resolve(key).validator
        except IgluError as e:
            raise IgluError(f"{file_label}: {e}") from None
        found = sorted(validator.iter_errors(data), key=lambda e: [str(p) for p in e.absolute_path])
        problems = [
            f"{file_label}: {_json_path(path)}: {message} ({key.uri})" for e in found for path, message in _explain(e)
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
        path = _json_path(e.absolute_path, "schema")
        raise IgluError(f"{where} is not a valid JSON schema: {path}: {e.message}") from None
    described = schema.get("self")
    if isinstance(described, dict):
        claimed = tuple(described.get(k) for k in ("vendor", "name", "format", "version"))
        if claimed != (key.vendor, key.name, key.format, key.version):
            raise IgluError(f"{where} describes itself as iglu:{'/'.join(map(str, claimed))}")


def parse_envelope(instance: Any, file_label: str) -> Tuple[SchemaKey, Any]:
    """The (schema key, data) of a self-describing JSON; IgluError naming every envelope problem."""
    if not isinstance(instance, dict):
        raise IgluError(
            f"{file_label}: not a self-describing JSON: the top level is {_kind(instance)}, "
            "expected an object with 'schema' and 'data'"
        )
    problems = []
    key = None
    if "schema" not in instance:
        problems.append("no 'schema' (the iglu: URI of the data's schema)")
    else:
        try:
            key = SchemaKey.parse(instance["schema"])
        except ValueError:
            shown = show(instance["schema"])
            problems.append(f"schema: {shown} is not an Iglu URI (iglu:vendor/name/format/MODEL-REVISION-ADDITION)")
    if "data" not in instance:
        problems.append("no 'data'")
    extra = sorted(set(instance) - {"schema", "data"})
    if extra:
        problems.append(f"unexpected top-level key(s) {', '.join(map(repr, extra))} (only 'schema' and 'data' belong)")
    if problems:
        text = "; ".join(f"{file_label}: not a self-describing JSON: {p}" for p in problems)
        raise IgluError(scrub(text, instance))
    return key, instance["data"]


def _explain(error: ValidationError) -> List[Tuple[Sequence, str]]:
    """(instance path, message) pairs for one error, looking inside oneOf/anyOf for the branch that was meant."""
    if error.validator not in ("oneOf", "anyOf") or not error.context:
        return [(error.absolute_path, _render(error))]
    depth = len(error.absolute_path)
    branches: Dict[Any, List[ValidationError]] = {}
    for sub in error.context:
        branches.setdefault(sub.relative_schema_path[0], []).append(sub)

    def rank(errors: List[ValidationError]) -> Tuple[bool, int]:
        shallow = [e for e in errors if len(e.absolute_path) == depth]
        return any(e.validator == "type" for e in shallow), len(shallow)

    ranked = sorted(branches.values(), key=rank)
    best = rank(ranked[0])
    if not best[0] and (len(ranked) == 1 or rank(ranked[1]) > best):
        return [pair for e in ranked[0] for pair in _explain(e)]
    shown = show(error.instance, _secret_path(error.absolute_path))
    if all(rank(b)[0] for b in ranked):
        types = [t for b in ranked for e in b if e.validator == "type" for t in _as_list(e.validator_value)]
        return [(error.absolute_path, f"{shown} is not of type {' or '.join(map(repr, dict.fromkeys(types)))}")]
    alternatives = ", or ".join(_render(b[0]) for b in ranked)
    return [(error.absolute_path, f"{shown} matches none of the allowed forms: {alternatives}")]


def _render(error: ValidationError) -> str:
    """jsonschema's message with the offending value shown masked and shortened."""
    original = repr(error.instance)
    shown = show(error.instance, _secret_path(error.absolute_path))
    return error.message.replace(original, shown, 1)


def _secret_path(path: Sequence) -> bool:
    return any(isinstance(p, str) and p in SECRET_KEYS for p in path)


def _masked(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: MASK if k in SECRET_KEYS else _masked(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_masked(v) for v in value]
    return value


def show(value: Any, secret: bool = False) -> str:
    """A value as a message may show it: masked when secret, secrets inside masked, long ones shortened."""
    if secret:
        return MASK
    text = repr(_masked(value))
    return text if len(text) <= 80 else text[:76] + "...."


def _secret_strings(value: Any, under_secret: bool = False) -> List[str]:
    if isinstance(value, dict):
        return [s for k, v in value.items() for s in _secret_strings(v, under_secret or k in SECRET_KEYS)]
    if isinstance(value, list):
        return [s for v in value for s in _secret_strings(v, under_secret)]
    return [value] if under_secret and isinstance(value, str) and len(value) >= 4 else []


def scrub(text: str, instance: Any) -> str:
    """Last line of defence: any secret string of instance still in text (as is, repr- or JSON-escaped) masked."""
    for secret in sorted(set(_secret_strings(instance)), key=len, reverse=True):
        for form in {secret, repr(secret)[1:-1], json.dumps(secret)[1:-1]}:
            text = text.replace(form, MASK)
    return text


def _as_list(value: Any) -> List[Any]:
    return value if isinstance(value, list) else [value]


def _kind(value: Any) -> str:
    if isinstance(value, list):
        return "an array"
    if isinstance(value, str):
        return "a string"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    return "a number"


def _json_path(path: Sequence, root: str = "data") -> str:
    parts = [root]
    for p in path:
        if isinstance(p, int):
            parts.append(f"[{p}]")
        elif _IDENTIFIER.match(p):
            parts.append(f".{p}")
        else:
            parts.append(f"[{json.dumps(p)}]")
    return "".join(parts)
