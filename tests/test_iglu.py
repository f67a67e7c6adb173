"""The Iglu resolver against real repositories: directories on disk and HTTP servers on 127.0.0.1."""
from __future__ import annotations

import http.server
import json
import logging
import socket
import threading
from pathlib import Path

import pytest

from pipeline.configs.iglu_repositories import PACKAGE_REPOSITORY_NAME, EmbeddedRepository, HttpRepository
from pipeline.configs.iglu_resolver import Resolver
from pipeline.configs.self_describing import IgluError, SchemaKey, parse_envelope
from pipeline.configs.storage_config import load_resolver

SHARED = Path(__file__).resolve().parent.parent.parent / "shared" / "iglu"
DYNAMODB = "com.snowplowanalytics.snowplow.storage/amazon_dynamodb_config/jsonschema"
ACME = SchemaKey("com.acme", "thing", "jsonschema", "1-0-0")
ACME_B = SchemaKey("com.acme", "other", "jsonschema", "1-0-0")
FAST = {"timeout": 2.0, "retries": 1, "backoff": 0.01}


def acme_schema(key: SchemaKey = ACME, marker: str = "") -> dict:
    """A valid self-describing schema; marker tells copies in different repositories apart."""
    return {
        "description": marker,
        "self": {"vendor": key.vendor, "name": key.name, "format": key.format, "version": key.version},
        "type": "object",
        "properties": {"size": {"type": "integer", "minimum": 1}},
        "required": ["size"],
        "additionalProperties": False,
    }


def embedded(tmp_path: Path, name: str, schemas: dict, **kwargs) -> EmbeddedRepository:
    root = tmp_path / name
    for key, schema in schemas.items():
        target = root / "schemas" / key.path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(schema if isinstance(schema, str) else json.dumps(schema))
    return EmbeddedRepository(name, root=root, **kwargs)


class FakeIglu:
    """A real HTTP server: answers from routes (path -> (status, body)), 404 otherwise, and records each request."""

    def __init__(self):
        self.routes: dict = {}
        self.requests: list = []
        fake = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                fake.requests.append((self.path, {k.lower(): v for k, v in self.headers.items()}))
                status, body = fake.routes.get(self.path, (404, "not found"))
                data = body if isinstance(body, str) else json.dumps(body)
                self.send_response(status)
                self.send_header("Content-Length", str(len(data.encode())))
                self.end_headers()
                self.wfile.write(data.encode())

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def serve(self, key: SchemaKey, body, status: int = 200) -> None:
        self.routes[f"/schemas/{key.path}"] = (status, body)

    def repository(self, name: str = "fake", **kwargs) -> HttpRepository:
        return HttpRepository(name, uri=self.url, **{**FAST, **kwargs})


@pytest.fixture
def fake_iglu():
    fake = FakeIglu()
    yield fake
    fake.server.shutdown()
    fake.server.server_close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def iglu_error(call, *args) -> str:
    with pytest.raises(IgluError) as caught:
        call(*args)
    message = str(caught.value)
    assert "\n" not in message
    return message


# --- schema keys and envelopes ---------------------------------------------------------------------------------


def test_schema_key_round_trips():
    key = SchemaKey.parse(f"iglu:{DYNAMODB}/2-0-0")
    assert (key.vendor, key.name, key.format, key.version) == (
        "com.snowplowanalytics.snowplow.storage", "amazon_dynamodb_config", "jsonschema", "2-0-0",
    )
    assert key.uri == str(key) == f"iglu:{DYNAMODB}/2-0-0"


@pytest.mark.parametrize(
    "uri",
    ["iglu:a/b/c/1-0", "iglu:a/b/c/0-0-1", "iglu:a/b/c/01-0-0", "iglu:a/b/c/1-0-0/x", "http://a/b/c/1-0-0",
     "iglu:../b/c/1-0-0", "iglu:a/b.c/d/1-0-0", 5, None],
)
def test_schema_key_rejects(uri):
    with pytest.raises(ValueError, match="is not an Iglu URI"):
        SchemaKey.parse(uri)


@pytest.mark.parametrize(
    "instance, expected",
    [
        ([1], "f.json: not a self-describing JSON: the top level is an array, expected an object with 'schema' and"),
        ({"data": {}}, "f.json: not a self-describing JSON: no 'schema' (the iglu: URI of the data's schema)"),
        ({"schema": "iglu:a/b/c/1-0-0"}, "f.json: not a self-describing JSON: no 'data'"),
        ({"schema": "iglu:a/b/1-0-0", "data": {}}, "f.json: not a self-describing JSON: schema: 'iglu:a/b/1-0-0' is"),
        ({"schema": 7, "data": {}}, "f.json: not a self-describing JSON: schema: 7 is not an Iglu URI"),
        ({"schema": "iglu:a/b/c/1-0-0", "data": {}, "Data": 1},
         "f.json: not a self-describing JSON: unexpected top-level key(s) 'Data' (only 'schema' and 'data' belong)"),
    ],
)
def test_envelope_problems(instance, expected):
    assert iglu_error(parse_envelope, instance, "f.json").startswith(expected)


def test_envelope_lists_every_problem():
    message = iglu_error(parse_envelope, {"x": 1}, "f.json")
    assert "no 'schema'" in message and "no 'data'" in message and "'x'" in message


def test_extra_top_level_keys_can_be_ignored_with_a_warning(caplog):
    """Iglu's decoder in Snowplow's loaders ignores them; a secret under one never reaches the log."""
    instance = {"schema": "iglu:a/b/c/1-0-0", "data": {"size": 1}, "sub": {"apikey": "IGLU-CANARY-KEY"}, "z": 2}
    with caplog.at_level(logging.WARNING, logger="manifest.iglu"):
        key, data = parse_envelope(instance, "f.json", extra_keys="warn")
    assert (key.uri, data) == ("iglu:a/b/c/1-0-0", {"size": 1})
    assert "f.json: ignoring top-level key(s) 'sub', 'z' beside 'schema' and 'data'" in caplog.text
    assert "IGLU-CANARY-KEY" not in caplog.text
    assert "unexpected top-level key(s) 'sub', 'z'" in iglu_error(parse_envelope, instance, "f.json")


def test_extra_keys_are_named_with_the_problem_that_makes_an_envelope_bad():
    """A misspelt 'data' is then the likely cause: the extra key is listed with it, not only warned about."""
    message = iglu_error(lambda i, f: parse_envelope(i, f, extra_keys="warn"), {"schema": "iglu:a/b/c/1-0-0",
                                                                               "Data": {}}, "f.json")
    assert "no 'data'" in message and "unexpected top-level key(s) 'Data'" in message


# --- ordering ----------------------------------------------------------------------------------------------------


def test_order_is_vendor_match_then_embedded_then_priority():
    plain_embedded = EmbeddedRepository("plain embedded", priority=0)
    acme_http = HttpRepository("acme http", priority=5, vendor_prefixes=("com.acme",), uri="http://x")
    acme_embedded = EmbeddedRepository("acme embedded", priority=9, vendor_prefixes=("com.other", "com.ac"))
    early_http = HttpRepository("early http", priority=-1, uri="http://y")
    late_http = HttpRepository("late http", priority=3, uri="http://z")
    resolver = Resolver([late_http, plain_embedded, acme_http, early_http, acme_embedded])
    order = [r.name for r in resolver.ordered(ACME)]
    assert order == ["acme embedded", "acme http", "plain embedded", "early http", "late http"]
    other = [r.name for r in resolver.ordered(SchemaKey("org.example", "x", "jsonschema", "1-0-0"))]
    assert other == ["plain embedded", "acme embedded", "early http", "late http", "acme http"]


def test_first_repository_in_order_that_has_the_schema_wins(tmp_path, fake_iglu):
    fake_iglu.serve(ACME, acme_schema(marker="http"))
    low = embedded(tmp_path, "low", {ACME: acme_schema(marker="priority 1")}, priority=1)
    high = embedded(tmp_path, "high", {ACME: acme_schema(marker="priority 0")}, priority=0)
    empty = embedded(tmp_path, "empty", {}, priority=-5)
    http_first = fake_iglu.repository(priority=-10)
    resolver = Resolver([low, http_first, high, empty])
    # Embedded before HTTP even at a worse priority; "empty" has nothing, so the next in order answers.
    assert resolver.lookup(ACME)["description"] == "priority 0"
    assert fake_iglu.requests == []


def test_vendor_prefix_match_comes_before_embedded(tmp_path, fake_iglu):
    fake_iglu.serve(ACME, acme_schema(marker="http"))
    local = embedded(tmp_path, "local", {ACME: acme_schema(marker="embedded")}, priority=0)
    resolver = Resolver([local, fake_iglu.repository(priority=100, vendor_prefixes=("com.acme",))])
    assert resolver.lookup(ACME)["description"] == "http"
    assert [path for path, _ in fake_iglu.requests] == [f"/schemas/{ACME.path}"]


def test_package_repository_is_always_there_and_first_for_our_schemas():
    data = {"cacheSize": 0, "repositories": [
        {"name": "Other", "priority": -100, "vendorPrefixes": ["com.snowplowanalytics"],
         "connection": {"http": {"uri": f"http://127.0.0.1:{free_port()}"}}},
    ]}
    resolver = Resolver.from_config(data, "resolver.json", http_retries=0)
    key = SchemaKey.parse(f"iglu:{DYNAMODB}/1-0-0")
    assert [r.name for r in resolver.ordered(key)] == [PACKAGE_REPOSITORY_NAME, "Other"]
    expected = json.loads((SHARED / "schemas" / key.path).read_text())
    assert resolver.lookup(key) == expected  # found before the (refusing) HTTP repository is ever asked


# --- HTTP repositories --------------------------------------------------------------------------------------------


def test_http_repository_serves_the_shared_schemas(iglu_http):
    resolver = Resolver([HttpRepository("shared", uri=iglu_http + "/", **FAST)])
    for version in ("1-0-0", "1-0-1", "2-0-0"):
        key = SchemaKey.parse(f"iglu:{DYNAMODB}/{version}")
        assert resolver.lookup(key) == json.loads((SHARED / "schemas" / key.path).read_text())


def test_http_404_is_not_found_and_lists_repositories_tried(iglu_http, tmp_path):
    local = embedded(tmp_path, "local", {})
    resolver = Resolver([HttpRepository("shared", uri=iglu_http, **FAST), local])
    message = iglu_error(resolver.lookup, SchemaKey.parse(f"iglu:{DYNAMODB}/9-0-0"))
    assert message == (
        f"schema iglu:{DYNAMODB}/9-0-0 not found; repositories tried: "
        f"'local' (embedded {local.root}), 'shared' ({iglu_http})"
    )


def test_http_500_is_unreachable_after_retries(fake_iglu):
    fake_iglu.serve(ACME, "boom", status=500)
    resolver = Resolver([fake_iglu.repository("broken", retries=2)])
    message = iglu_error(resolver.lookup, ACME)
    assert message == (
        f"schema {ACME.uri} not found; repositories tried: 'broken' ({fake_iglu.url}); repository 'broken' "
        f"unreachable: HTTP 500 Internal Server Error after 3 attempts ({fake_iglu.url}/schemas/{ACME.path})"
    )
    assert len(fake_iglu.requests) == 3


def test_http_403_is_unreachable_without_retry(fake_iglu):
    fake_iglu.serve(ACME, "no", status=403)
    message = iglu_error(Resolver([fake_iglu.repository("locked", retries=3)]).lookup, ACME)
    assert "repository 'locked' unreachable: HTTP 403 Forbidden (" in message
    assert len(fake_iglu.requests) == 1


def test_refused_connection_is_unreachable():
    url = f"http://127.0.0.1:{free_port()}"
    message = iglu_error(Resolver([HttpRepository("gone", uri=url, **FAST)]).lookup, ACME)
    assert f"repository 'gone' unreachable: connection refused after 2 attempts ({url}/schemas/{ACME.path})" in message


def test_silent_server_times_out():
    with socket.socket() as silent:  # accepts connections (the kernel's backlog) and never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(4)
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        repo = HttpRepository("silent", uri=url, timeout=0.2, retries=0)
        message = iglu_error(Resolver([repo]).lookup, ACME)
    assert f"repository 'silent' unreachable: timed out after 0.2s ({url}/schemas/{ACME.path})" in message


def test_invalid_json_response_is_unreachable(fake_iglu):
    fake_iglu.serve(ACME, "<html>not json</html>")
    message = iglu_error(Resolver([fake_iglu.repository("html")]).lookup, ACME)
    assert "repository 'html' unreachable: response is not valid JSON (" in message


def test_unreachable_repository_is_skipped_when_a_later_one_has_the_schema(fake_iglu, iglu_http, caplog):
    fake_iglu.serve(SchemaKey.parse(f"iglu:{DYNAMODB}/2-0-0"), "boom", status=503)
    resolver = Resolver([fake_iglu.repository("flaky", priority=0), HttpRepository("shared", 1, uri=iglu_http)])
    with caplog.at_level(logging.WARNING, logger="manifest.iglu"):
        assert resolver.lookup(SchemaKey.parse(f"iglu:{DYNAMODB}/2-0-0"))["self"]["version"] == "2-0-0"
    assert "repository 'flaky' unreachable: HTTP 503" in caplog.text
    assert "found iglu:" in caplog.text and "'shared'" in caplog.text


def test_apikey_header_is_sent_and_never_shown(fake_iglu):
    fake_iglu.serve(ACME, acme_schema())
    fake_iglu.serve(ACME_B, "boom", status=500)
    keyed = Resolver([fake_iglu.repository(apikey="KEY-4f1c9e")], cache_size=0)
    keyed.lookup(ACME)
    message = iglu_error(keyed.lookup, ACME_B)
    Resolver([fake_iglu.repository()]).lookup(ACME)
    sent = [headers.get("apikey") for _, headers in fake_iglu.requests]
    assert sent == ["KEY-4f1c9e", "KEY-4f1c9e", "KEY-4f1c9e", None]  # the 500 was retried once, with the key
    assert "KEY-4f1c9e" not in message
    assert "KEY-4f1c9e" not in repr(keyed.repositories)


def test_from_config_builds_http_repositories_with_apikey(fake_iglu):
    fake_iglu.serve(ACME, acme_schema())
    data = {"cacheSize": 10, "cacheTtl": 0, "repositories": [
        {"name": "Acme", "priority": 2.5, "vendorPrefixes": ["com.acme"],
         "connection": {"http": {"uri": fake_iglu.url, "apikey": "KEY-77"}}},
        {"name": "Local", "priority": 1, "vendorPrefixes": [], "connection": {"embedded": {"path": "repo"}}},
    ]}
    resolver = Resolver.from_config(data, "resolver.json", base_dir="/etc/iglu", http_retries=0)
    package, acme, local = resolver.repositories
    assert package.name == PACKAGE_REPOSITORY_NAME
    assert (acme.uri, acme.apikey, acme.priority, acme.vendor_prefixes, acme.retries) == (
        fake_iglu.url, "KEY-77", 2.5, ("com.acme",), 0,
    )
    assert local.root == Path("/etc/iglu/repo")
    assert (resolver.cache_size, resolver.cache_ttl) == (10, 0)
    resolver.lookup(ACME)
    assert fake_iglu.requests[0][1].get("apikey") == "KEY-77"


@pytest.mark.parametrize("uri", ["ftp://example.com", "iglucentral.com", "http://"])
def test_from_config_rejects_non_http_uri(uri):
    data = {"cacheSize": 1, "repositories": [
        {"name": "x", "priority": 0, "vendorPrefixes": [], "connection": {"http": {"uri": uri}}}]}
    message = iglu_error(Resolver.from_config, data, "resolver.json")
    assert message == f"resolver.json: data.repositories[0].connection.http.uri: {uri!r} is not an http(s) URL"


@pytest.mark.parametrize("size, expected", [(0, 0), (-3, 0), (2.7, 2), (1e300, 1_000_000)])
def test_from_config_cache_size_from_any_number(size, expected):
    assert Resolver.from_config({"cacheSize": size, "repositories": []}, "r.json").cache_size == expected


# --- cache --------------------------------------------------------------------------------------------------------


def test_cache_size_bounds_what_is_kept(fake_iglu):
    fake_iglu.serve(ACME, acme_schema(ACME))
    fake_iglu.serve(ACME_B, acme_schema(ACME_B))
    resolver = Resolver([fake_iglu.repository()], cache_size=1)
    for key in (ACME, ACME, ACME_B, ACME_B, ACME):
        resolver.lookup(key)
    # ACME cached, ACME_B evicts it, ACME fetched again.
    assert [p.rsplit("/", 3)[1] for p, _ in fake_iglu.requests] == ["thing", "other", "thing"]


def test_least_recently_used_is_evicted(fake_iglu):
    keys = [SchemaKey("com.acme", n, "jsonschema", "1-0-0") for n in ("a", "b", "c")]
    for key in keys:
        fake_iglu.serve(key, acme_schema(key))
    resolver = Resolver([fake_iglu.repository()], cache_size=2)
    for key in (keys[0], keys[1], keys[0], keys[2], keys[0], keys[1]):
        resolver.lookup(key)
    # a and b cached; a used again; c evicts b (least recently used), so a is still cached and b is refetched.
    assert [p.rsplit("/", 3)[1] for p, _ in fake_iglu.requests] == ["a", "b", "c", "b"]


def test_cache_size_zero_fetches_every_time(fake_iglu):
    fake_iglu.serve(ACME, acme_schema())
    resolver = Resolver([fake_iglu.repository()], cache_size=0)
    for _ in range(3):
        resolver.lookup(ACME)
    assert len(fake_iglu.requests) == 3


def test_cache_ttl_refreshes_after_expiry(fake_iglu):
    fake_iglu.serve(ACME, acme_schema(marker="first"))
    now = [1000.0]
    resolver = Resolver([fake_iglu.repository()], cache_size=5, cache_ttl=10, clock=lambda: now[0])
    assert resolver.lookup(ACME)["description"] == "first"
    fake_iglu.serve(ACME, acme_schema(marker="second"))
    now[0] = 1009.9
    assert resolver.lookup(ACME)["description"] == "first"
    now[0] = 1010.0
    assert resolver.lookup(ACME)["description"] == "second"
    assert len(fake_iglu.requests) == 2


def test_no_ttl_keeps_entries(fake_iglu):
    fake_iglu.serve(ACME, acme_schema())
    now = [0.0]
    resolver = Resolver([fake_iglu.repository()], cache_size=5, cache_ttl=None, clock=lambda: now[0])
    resolver.lookup(ACME)
    now[0] = 1e9
    resolver.lookup(ACME)
    assert len(fake_iglu.requests) == 1


def test_not_found_is_not_cached(tmp_path):
    repo = embedded(tmp_path, "late", {})
    resolver = Resolver([repo])
    iglu_error(resolver.lookup, ACME)
    embedded(tmp_path, "late", {ACME: acme_schema(marker="arrived")})
    assert resolver.lookup(ACME)["description"] == "arrived"


# --- schemas and validation ------------------------------------------------------------------------------------


def test_valid_data_passes(tmp_path):
    resolver = Resolver([embedded(tmp_path, "local", {ACME: acme_schema()})])
    assert resolver.validate_data(ACME, {"size": 3}, "thing.json") is None


def test_validate_reports_every_violation_on_one_line(tmp_path):
    resolver = Resolver([embedded(tmp_path, "local", {ACME: acme_schema()})])
    message = iglu_error(resolver.validate_data, ACME, {"size": 0, "colour": "red"}, "t.json")
    assert message == (
        f"t.json: data: Additional properties are not allowed ('colour' was unexpected) ({ACME.uri}); "
        f"t.json: data.size: 0 is less than the minimum of 1 ({ACME.uri})"
    )


def test_validate_unknown_schema_names_the_file(tmp_path):
    local = embedded(tmp_path, "local", {})
    message = iglu_error(Resolver([local]).validate_data, ACME, {}, "t.json")
    assert message == f"t.json: schema {ACME.uri} not found; repositories tried: 'local' (embedded {local.root})"


def test_one_of_points_at_the_branch_that_was_meant():
    resolver_config = SchemaKey.parse("iglu:com.snowplowanalytics.iglu/resolver-config/jsonschema/1-0-3")
    bootstrap = Resolver.bootstrap()

    def problem(connection) -> str:
        data = {"cacheSize": 1, "repositories": [
            {"name": "x", "priority": 0, "vendorPrefixes": [], "connection": connection}]}
        return iglu_error(bootstrap.validate_data, resolver_config, data, "r.json")

    where = "r.json: data.repositories[0].connection"
    assert problem({"http": {"uri": 5}}) == f"{where}.http.uri: 5 is not of type 'string' ({resolver_config})"
    assert problem({"embedded": {"path": "/x", "uri": "u"}}) == (
        f"{where}.embedded: Additional properties are not allowed ('uri' was unexpected) ({resolver_config})"
    )
    assert problem({"htp": {}}) == (
        f"{where}: {{'htp': {{}}}} matches none of the allowed forms: 'embedded' is a required property, "
        f"or 'http' is a required property ({resolver_config})"
    )


def test_json_path_quotes_odd_keys(tmp_path):
    schema = {"type": "object", "properties": {"a b": {"type": "array", "items": {"type": "string"}}}}
    resolver = Resolver([embedded(tmp_path, "local", {ACME: schema})])
    message = iglu_error(resolver.validate_data, ACME, {"a b": ["x", 1]}, "t.json")
    assert message == f't.json: data["a b"][1]: 1 is not of type \'string\' ({ACME.uri})'


def test_long_values_are_shortened(tmp_path):
    resolver = Resolver([embedded(tmp_path, "local", {ACME: acme_schema()})])
    message = iglu_error(resolver.validate_data, ACME, {"size": "x" * 5000}, "t.json")
    assert len(message) < 300 and "...." in message


def test_formats_are_checked_including_uuid(tmp_path):
    schema = {"type": "object", "properties": {"id": {"type": "string", "format": "uuid"}}}
    resolver = Resolver([embedded(tmp_path, "local", {ACME: schema})])
    resolver.validate_data(ACME, {"id": "56799a26-980c-4148-8bd9-c021b988c669"}, "t.json")
    message = iglu_error(resolver.validate_data, ACME, {"id": "nope"}, "t.json")
    assert message == f"t.json: data.id: 'nope' is not a 'uuid' ({ACME.uri})"


def test_invalid_schema_in_repository_is_reported(tmp_path):
    resolver = Resolver([embedded(tmp_path, "bad", {ACME: {"type": "objekt"}})])
    message = iglu_error(resolver.lookup, ACME)
    assert message.startswith(f"schema {ACME.uri} from repository 'bad' is not a valid JSON schema: schema.type:")


def test_schema_describing_another_key_is_reported(tmp_path):
    resolver = Resolver([embedded(tmp_path, "mixed", {ACME: acme_schema(ACME_B)})])
    assert iglu_error(resolver.lookup, ACME) == (
        f"schema {ACME.uri} from repository 'mixed' describes itself as {ACME_B.uri}"
    )


def test_unreadable_embedded_schema_is_reported(tmp_path):
    repo = embedded(tmp_path, "corrupt", {ACME: "{not json"})
    message = iglu_error(Resolver([repo]).lookup, ACME)
    assert f"repository 'corrupt' unreadable: {repo.root / 'schemas' / ACME.path} is not valid JSON" in message


def test_secrets_are_masked_in_violations(tmp_path):
    schema = {"type": "object", "properties": {
        "apikey": {"type": "string", "minLength": 50},
        "nested": {"type": "array", "items": {"type": "string"}},
    }}
    resolver = Resolver([embedded(tmp_path, "local", {ACME: schema})])
    data = {"apikey": "CANARY-one", "nested": [{"secretAccessKey": "CANARY-two"}]}
    message = iglu_error(resolver.validate_data, ACME, data, "t.json")
    assert "CANARY" not in message
    assert "data.apikey: **** is too short" in message
    assert "data.nested[0]: {'secretAccessKey': '****'} is not of type 'string'" in message


# --- what real resolver configs hold (through load_resolver, as the pipeline reads them) --------------------------

RESOLVER_CONFIG = "iglu:com.snowplowanalytics.iglu/resolver-config/jsonschema/"


def resolver_file(tmp_path, version: str, repositories: list, **data) -> str:
    path = tmp_path / "resolver.json"
    path.write_text(json.dumps({"schema": RESOLVER_CONFIG + version,
                                "data": {"cacheSize": 500, "repositories": repositories, **data}}))
    return str(path)


def test_apikey_null_is_a_repository_without_key(tmp_path, fake_iglu):
    """iglu-scala-client's own test config writes "apikey": null: no apikey header is sent."""
    fake_iglu.serve(ACME, acme_schema())
    repo = {"name": "Keyless", "priority": 0, "vendorPrefixes": ["com.acme"],
            "connection": {"http": {"uri": fake_iglu.url, "apikey": None}}}
    resolver = load_resolver(resolver_file(tmp_path, "1-0-2", [repo]))
    assert resolver.repositories[1].apikey is None
    resolver.lookup(ACME)
    assert [(path, "apikey" in headers) for path, headers in fake_iglu.requests] == [(f"/schemas/{ACME.path}", False)]


def test_classpath_style_embedded_path_is_accepted_and_finds_nothing(tmp_path, caplog):
    """Snowplow's SpecHelpers write "/iglu-schemas", a path on the JVM classpath. Here an embedded path is a
    directory, so that one is absolute and missing: the config is accepted with a warning saying so, the
    repository answers "not here" (never a failure), and Snowplow's schemas still come from the package."""
    repo = {"name": "Embedded src/test/resources", "priority": 100, "vendorPrefixes": ["com.snowplowanalytics"],
            "connection": {"embedded": {"path": "/iglu-schemas"}}}
    with caplog.at_level(logging.WARNING, logger="manifest.iglu"):
        resolver = load_resolver(resolver_file(tmp_path, "1-0-0", [repo]))
    assert "embedded repository 'Embedded src/test/resources': no directory /iglu-schemas" in caplog.text
    assert "classpath" in caplog.text
    assert resolver.repositories[1].root == Path("/iglu-schemas")
    assert resolver.lookup(SchemaKey.parse(f"iglu:{DYNAMODB}/2-0-0"))["self"]["version"] == "2-0-0"
    assert iglu_error(resolver.lookup, ACME).startswith(
        f"schema {ACME.uri} not found; repositories tried: '{PACKAGE_REPOSITORY_NAME}' (embedded ")


def test_1_0_2_empty_vendor_prefixes_and_cache_ttl(tmp_path, fake_iglu):
    """enrich's fs2 SpecHelpers: "vendorPrefixes": [] (a repository for every vendor, after the ones whose prefix
    matches) with "cacheTtl": 600 (seconds a found schema is kept)."""
    now = [0.0]
    fake_iglu.serve(ACME, acme_schema())
    repo = {"name": "Iglu Central", "priority": 1, "vendorPrefixes": [], "connection": {"http": {"uri": fake_iglu.url}}}
    resolver = load_resolver(resolver_file(tmp_path, "1-0-2", [repo], cacheTtl=600), clock=lambda: now[0])
    central = resolver.repositories[1]
    assert (central.vendor_prefixes, resolver.cache_ttl) == ((), 600)
    assert not central.matches("com.acme") and resolver.ordered(ACME)[-1] is central
    for at, requests in ((0.0, 1), (599.9, 1), (600.0, 2), (601.0, 2)):
        now[0] = at
        resolver.lookup(ACME)
        assert len(fake_iglu.requests) == requests, at
