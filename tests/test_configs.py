"""Loading the storage and resolver configs: every schema version, every bad file, and secrets never shown."""
from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from pipeline.configs.iglu_repositories import PACKAGE_REPOSITORY_NAME
from pipeline.configs.iglu_resolver import Resolver
from pipeline.configs.self_describing import SchemaKey
from pipeline.configs.storage_config import (
    MAX_CONFIG_BYTES,
    ConfigError,
    StorageConfig,
    load_configs,
    load_resolver,
    load_storage_config,
)
from tests.test_iglu import free_port

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
SHARED = Path(__file__).resolve().parent.parent.parent / "shared" / "iglu"
STORAGE = "iglu:com.snowplowanalytics.snowplow.storage/amazon_dynamodb_config/jsonschema/"
RESOLVER = "iglu:com.snowplowanalytics.iglu/resolver-config/jsonschema/"
UUID = "56799a26-980c-4148-8bd9-c021b988c669"
KEY_CANARY = "AKIACANARY7QX2Z9"
SECRET_CANARY = "s3cr3t/CANARY+zq81Lm"
CANARIES = (KEY_CANARY, SECRET_CANARY)


def storage_data(version: str, key: str = "AKIAEXAMPLE", secret: str = "SECRETEXAMPLE") -> dict:
    base = {"name": "manifest", "awsRegion": "eu-west-1", "dynamodbTable": "snowplow-manifest"}
    if version == "2-0-0":
        return {**base, "id": UUID, "auth": {"accessKeyId": key, "secretAccessKey": secret},
                "purpose": "EVENTS_MANIFEST"}
    extra = {"id": UUID} if version == "1-0-1" else {}
    return {**base, **extra, "accessKeyId": key, "secretAccessKey": secret, "purpose": "DUPLICATE_TRACKING"}


def resolver_data(version: str) -> dict:
    http = {"uri": "http://iglucentral.com"}
    if version != "1-0-0":
        http["apikey"] = "IGLU-KEY"
    data = {"cacheSize": 500, "repositories": [
        {"name": "Iglu Central", "priority": 0, "vendorPrefixes": ["com.snowplowanalytics"],
         "connection": {"http": http}}]}
    if version in ("1-0-2", "1-0-3"):
        data["cacheTtl"] = 0 if version == "1-0-3" else 60
    return data


def write(path: Path, content) -> str:
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content if isinstance(content, str) else json.dumps(content))
    return str(path)


def config_error(call, *args) -> str:
    with pytest.raises(ConfigError) as caught:
        call(*args)
    message = str(caught.value)
    assert message and "\n" not in message
    return message


@pytest.fixture(scope="module")
def bootstrap():
    return Resolver.bootstrap()


# --- the examples ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "example, version, has_id, has_keys",
    [("dynamodb-1-0-0.json", "1-0-0", False, True), ("dynamodb-1-0-1.json", "1-0-1", True, True),
     ("dynamodb-2-0-0.json", "2-0-0", True, True), ("dynamodb-2-0-0-default-chain.json", "2-0-0", True, False)],
)
def test_examples_load_without_network(no_network, example, version, has_id, has_keys):
    config = load_configs(str(EXAMPLES / example), str(EXAMPLES / "resolver.json"))
    assert (config.name, config.table, config.region) == ("Event manifest", "snowplow-event-manifest", "eu-west-1")
    assert config.schema == STORAGE + version
    assert config.id == (UUID if has_id else None)
    expected = {"accessKeyId": "AKIAIOSFODNN7EXAMPLE", "secretAccessKey": "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"}
    assert config.credentials() == (expected if has_keys else None)


def test_example_resolver_tries_the_package_repository_before_iglu_central(no_network):
    resolver = load_resolver(str(EXAMPLES / "resolver.json"))
    assert resolver.cache_size == 500 and resolver.cache_ttl == 600
    for version in ("1-0-0", "1-0-1", "2-0-0"):
        order = [r.name for r in resolver.ordered(SchemaKey.parse(STORAGE + version))]
        assert order == [PACKAGE_REPOSITORY_NAME, "Iglu Central"]


# --- storage configs ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("version", ["1-0-0", "1-0-1", "2-0-0"])
def test_valid_storage_config_with_keys(tmp_path, bootstrap, version):
    path = write(tmp_path / "dynamodb.json", {"schema": STORAGE + version, "data": storage_data(version)})
    config = load_storage_config(path, bootstrap)
    assert config == StorageConfig(
        "manifest", "snowplow-manifest", "eu-west-1", None if version == "1-0-0" else UUID, STORAGE + version,
        "AKIAEXAMPLE", "SECRETEXAMPLE",
    )


def test_1_0_1_id_is_optional(tmp_path, bootstrap):
    data = storage_data("1-0-1")
    del data["id"]
    config = load_storage_config(write(tmp_path / "d.json", {"schema": STORAGE + "1-0-1", "data": data}), bootstrap)
    assert config.id is None


def test_2_0_0_auth_null_uses_the_default_chain(tmp_path, bootstrap):
    data = {**storage_data("2-0-0"), "auth": None}
    config = load_storage_config(write(tmp_path / "d.json", {"schema": STORAGE + "2-0-0", "data": data}), bootstrap)
    assert (config.access_key_id, config.secret_access_key, config.credentials()) == (None, None, None)
    session = config.boto3_session()
    assert session.region_name == "eu-west-1"
    assert session.get_credentials().access_key == "testing"  # conftest's environment


def test_session_uses_the_config_keys_over_any_profile(tmp_path, bootstrap):
    path = write(tmp_path / "d.json", {"schema": STORAGE + "2-0-0", "data": storage_data("2-0-0", "AKIAX", "SX")})
    session = load_storage_config(path, bootstrap).boto3_session(profile="ignored")
    credentials = session.get_credentials()
    assert (credentials.access_key, credentials.secret_key, session.region_name) == ("AKIAX", "SX", "eu-west-1")


def test_unknown_profile_is_a_config_error(tmp_path, bootstrap, monkeypatch):
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    config = StorageConfig("m", "table", "eu-west-1", None, STORAGE + "2-0-0")
    assert config_error(config.boto3_session, "nosuch") == (
        "AWS profile 'nosuch' not found in the AWS config or credentials files"
    )


def _without(data: dict, key: str) -> dict:
    return {k: v for k, v in data.items() if k != key}


INVALID_STORAGE = [
    ("1-0-0", {**storage_data("1-0-0"), "purpose": "DUPLICATE"},
     "data.purpose: 'DUPLICATE' is not one of ['DUPLICATE_TRACKING']"),
    ("1-0-0", {**storage_data("1-0-0"), "id": UUID},
     "data: Additional properties are not allowed ('id' was unexpected)"),
    ("1-0-0", _without(storage_data("1-0-0"), "secretAccessKey"), "data: 'secretAccessKey' is a required property"),
    ("1-0-0", {**storage_data("1-0-0"), "awsRegion": 1}, "data.awsRegion: 1 is not of type 'string'"),
    ("1-0-1", {**storage_data("1-0-1"), "id": "not-a-uuid"}, "data.id: 'not-a-uuid' is not a 'uuid'"),
    ("1-0-1", {**storage_data("1-0-1"), "purpose": "EVENTS_MANIFEST"},
     "data.purpose: 'EVENTS_MANIFEST' is not one of ['DUPLICATE_TRACKING']"),
    ("2-0-0", {**storage_data("2-0-0"), "purpose": "DUPLICATE_TRACKING"},
     "data.purpose: 'DUPLICATE_TRACKING' is not one of ['EVENTS_MANIFEST']"),
    ("2-0-0", _without(storage_data("2-0-0"), "id"), "data: 'id' is a required property"),
    ("2-0-0", _without(storage_data("2-0-0"), "auth"), "data: 'auth' is a required property"),
    ("2-0-0", {**storage_data("2-0-0"), "auth": {"accessKeyId": "A"}},
     "data.auth: 'secretAccessKey' is a required property"),
    ("2-0-0", {**storage_data("2-0-0"), "auth": "keys"}, "data.auth: **** is not of type 'object' or 'null'"),
    ("2-0-0", storage_data("1-0-1"), "data: 'auth' is a required property"),
    ("2-0-0", [storage_data("2-0-0")], "data: [{"),
]


@pytest.mark.parametrize("version, data, expected", INVALID_STORAGE)
def test_invalid_storage_config(tmp_path, bootstrap, version, data, expected):
    path = write(tmp_path / "dynamodb.json", {"schema": STORAGE + version, "data": data})
    message = config_error(load_storage_config, path, bootstrap)
    assert f"dynamodb.json: {expected}" in message
    assert message.endswith(f"({STORAGE}{version})")


def test_issue_example_message_exactly(tmp_path, bootstrap):
    data = {**storage_data("1-0-0"), "purpose": "DUPLICATE"}
    path = write(tmp_path / "dynamodb.json", {"schema": STORAGE + "1-0-0", "data": data})
    assert config_error(load_storage_config, path, bootstrap) == (
        f"dynamodb.json: data.purpose: 'DUPLICATE' is not one of ['DUPLICATE_TRACKING'] ({STORAGE}1-0-0)"
    )


def test_every_violation_is_reported(tmp_path, bootstrap):
    data = {**_without(storage_data("1-0-0"), "name"), "purpose": "X", "dynamodbTable": 5}
    message = config_error(load_storage_config, write(tmp_path / "d.json", {"schema": STORAGE + "1-0-0", "data": data}),
                           bootstrap)
    assert message.count("d.json: ") == 3
    assert "'name' is a required property" in message and "data.dynamodbTable: 5 is not" in message
    assert "data.purpose: 'X' is not one of" in message


@pytest.mark.parametrize(
    "change, expected",
    [({"dynamodbTable": "ab"}, "data.dynamodbTable: 'ab' is not a DynamoDB table name"),
     ({"dynamodbTable": "my table"}, "data.dynamodbTable: 'my table' is not a DynamoDB table name"),
     ({"awsRegion": "EU West"}, "data.awsRegion: 'EU West' is not an AWS region name"),
     ({"accessKeyId": ""}, "data.accessKeyId: must not be empty"),
     ({"secretAccessKey": " SECRETEXAMPLE"}, "data.secretAccessKey: **** has leading or trailing whitespace")],
)
def test_values_aws_would_refuse(tmp_path, bootstrap, change, expected):
    path = write(tmp_path / "d.json", {"schema": STORAGE + "1-0-0", "data": {**storage_data("1-0-0"), **change}})
    message = config_error(load_storage_config, path, bootstrap)
    assert message.startswith(f"d.json: {expected}") and message.endswith(f" ({STORAGE}1-0-0)")
    assert message.count("d.json") == 1


def test_empty_key_under_auth(tmp_path, bootstrap):
    data = storage_data("2-0-0", secret="")
    path = write(tmp_path / "d.json", {"schema": STORAGE + "2-0-0", "data": data})
    assert config_error(load_storage_config, path, bootstrap) == (
        f"d.json: data.auth.secretAccessKey: must not be empty ({STORAGE}2-0-0)"
    )


def test_unknown_storage_version_lists_repositories_tried(tmp_path, iglu_http):
    refused = f"http://127.0.0.1:{free_port()}"
    resolver_config = {"schema": RESOLVER + "1-0-3", "data": {"cacheSize": 10, "repositories": [
        {"name": "Shared", "priority": 1, "vendorPrefixes": [], "connection": {"http": {"uri": iglu_http}}},
        {"name": "Down", "priority": 2, "vendorPrefixes": [], "connection": {"http": {"uri": refused}}},
    ]}}
    resolver = load_resolver(write(tmp_path / "resolver.json", resolver_config), http_retries=0, http_timeout=2)
    path = write(tmp_path / "dynamodb.json", {"schema": STORAGE + "1-0-2", "data": storage_data("1-0-1")})
    message = config_error(load_storage_config, path, resolver)
    package = resolver.repositories[0].root
    assert message == (
        f"dynamodb.json: schema {STORAGE}1-0-2 not found; repositories tried: "
        f"'{PACKAGE_REPOSITORY_NAME}' (embedded {package}), 'Shared' ({iglu_http}), 'Down' ({refused}); "
        f"repository 'Down' unreachable: connection refused "
        f"({refused}/schemas/{STORAGE[5:]}1-0-2)"
    )


def test_known_schema_of_unsupported_version(tmp_path):
    schema = json.loads((SHARED / "schemas" / STORAGE[5:] / "2-0-0").read_text())
    schema["self"]["version"] = "3-0-0"
    target = tmp_path / "repo" / "schemas" / STORAGE[5:] / "3-0-0"
    target.parent.mkdir(parents=True)
    write(target, schema)
    resolver_config = {"schema": RESOLVER + "1-0-0", "data": {"cacheSize": 10, "repositories": [
        {"name": "Local", "priority": 0, "vendorPrefixes": [], "connection": {"embedded": {"path": "repo"}}}]}}
    resolver = load_resolver(write(tmp_path / "resolver.json", resolver_config))  # "repo" is next to the file
    path = write(tmp_path / "d.json", {"schema": STORAGE + "3-0-0", "data": storage_data("2-0-0")})
    assert config_error(load_storage_config, path, resolver) == (
        f"d.json: {STORAGE}3-0-0 is valid but version 3-0-0 is not supported (supported: 1-0-0, 1-0-1, 2-0-0)"
    )


# --- resolver configs -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("version", ["1-0-0", "1-0-1", "1-0-2", "1-0-3"])
def test_valid_resolver_config(tmp_path, version):
    resolver = load_resolver(write(tmp_path / "resolver.json", {"schema": RESOLVER + version,
                                                                 "data": resolver_data(version)}))
    central = resolver.repositories[1]
    assert (central.name, central.uri) == ("Iglu Central", "http://iglucentral.com")
    assert central.apikey == (None if version == "1-0-0" else "IGLU-KEY")
    assert resolver.cache_size == 500
    assert resolver.cache_ttl == {"1-0-2": 60, "1-0-3": 0}.get(version)


def _repo_change(version: str, **change) -> dict:
    data = resolver_data(version)
    data["repositories"][0] = {**data["repositories"][0], **change}
    return data


INVALID_RESOLVER = [
    ("1-0-0", {**resolver_data("1-0-0"), "cacheSize": -1}, "data.cacheSize: -1 is less than the minimum of 0"),
    ("1-0-0", {**resolver_data("1-0-0"), "cacheTtl": 5},
     "data: Additional properties are not allowed ('cacheTtl' was unexpected)"),
    ("1-0-0", _repo_change("1-0-0", connection={"http": {"uri": "http://x", "apikey": "IGLU-KEY"}}),
     "data.repositories[0].connection.http: Additional properties are not allowed ('apikey' was unexpected)"),
    ("1-0-1", _repo_change("1-0-1", priority=1.5), "data.repositories[0].priority: 1.5 is not of type 'integer'"),
    ("1-0-1", _without(resolver_data("1-0-1"), "repositories"), "data: 'repositories' is a required property"),
    ("1-0-2", {**resolver_data("1-0-2"), "cacheTtl": 0}, "data.cacheTtl: 0 is less than the minimum of 1"),
    ("1-0-2", _repo_change("1-0-2", vendorPrefixes="com.acme"),
     "data.repositories[0].vendorPrefixes: 'com.acme' is not of type 'array'"),
    ("1-0-3", {**resolver_data("1-0-3"), "cacheTtl": -1}, "data.cacheTtl: -1 is less than the minimum of 0"),
    ("1-0-3", {**resolver_data("1-0-3"), "cacheTtl": "1h"}, "data.cacheTtl: '1h' is not of type 'integer', 'null'"),
    ("1-0-3", _repo_change("1-0-3", connection={"http": {"uri": "http://x", "apikey": 42}}),
     "data.repositories[0].connection.http.apikey: **** is not of type 'string', 'null'"),
    ("1-0-3", _repo_change("1-0-3", connection={"embedded": {}}),
     "data.repositories[0].connection.embedded: 'path' is a required property"),
]


@pytest.mark.parametrize("version, data, expected", INVALID_RESOLVER)
def test_invalid_resolver_config(tmp_path, version, data, expected):
    message = config_error(load_resolver, write(tmp_path / "resolver.json", {"schema": RESOLVER + version,
                                                                            "data": data}))
    assert f"resolver.json: {expected} ({RESOLVER}{version})" in message
    assert "IGLU-KEY" not in message


def test_1_0_3_accepts_fractional_priority_and_cache_size(tmp_path):
    data = _repo_change("1-0-3", priority=0.5)
    data["cacheSize"] = 10.9
    resolver = load_resolver(write(tmp_path / "r.json", {"schema": RESOLVER + "1-0-3", "data": data}))
    assert (resolver.repositories[1].priority, resolver.cache_size) == (0.5, 10)


def test_unknown_resolver_version(tmp_path):
    path = write(tmp_path / "resolver.json", {"schema": RESOLVER + "1-0-4", "data": resolver_data("1-0-3")})
    assert config_error(load_resolver, path).startswith(
        f"resolver.json: schema {RESOLVER}1-0-4 not found; repositories tried: '{PACKAGE_REPOSITORY_NAME}' (embedded "
    )


def test_resolver_with_an_extra_top_level_key_is_accepted_with_a_warning(tmp_path, caplog):
    """As RDB Loader's resolver configs have them ("sub" for HOCON substitutions), and the loader accepts them."""
    path = write(tmp_path / "r.json", {"schema": RESOLVER + "1-0-1", "data": resolver_data("1-0-1"), "sub": {"a": 1}})
    with caplog.at_level(logging.WARNING, logger="manifest.iglu"):
        resolver = load_resolver(path)
    assert resolver.repositories[1].name == "Iglu Central"
    assert "r.json: ignoring top-level key(s) 'sub'" in caplog.text


def test_storage_config_with_an_extra_top_level_key_is_still_refused(tmp_path, bootstrap):
    """It holds credentials: a key beside 'data' is more likely a misplaced setting than something to ignore."""
    path = write(tmp_path / "d.json", {"schema": STORAGE + "2-0-0", "data": storage_data("2-0-0"), "auth": None})
    assert "unexpected top-level key(s) 'auth'" in config_error(load_storage_config, path, bootstrap)


def test_resolver_with_a_non_http_uri(tmp_path):
    data = _repo_change("1-0-3", connection={"http": {"uri": "iglucentral.com"}})
    path = write(tmp_path / "resolver.json", {"schema": RESOLVER + "1-0-3", "data": data})
    assert config_error(load_resolver, path) == (
        "resolver.json: data.repositories[0].connection.http.uri: 'iglucentral.com' is not an http(s) URL"
    )


# --- the wrong file ---------------------------------------------------------------------------------------------


def test_resolver_passed_as_storage_config(no_network):
    message = config_error(load_configs, str(EXAMPLES / "resolver.json"), str(EXAMPLES / "resolver.json"))
    assert message == (
        "resolver.json: expected a DynamoDB storage config "
        f"({STORAGE}1-0-0, 1-0-1 or 2-0-0), got {RESOLVER}1-0-3 "
        "(an Iglu resolver config: are the storage and resolver files swapped?)"
    )


def test_storage_config_passed_as_resolver():
    message = config_error(load_configs, str(EXAMPLES / "dynamodb-1-0-0.json"), str(EXAMPLES / "dynamodb-2-0-0.json"))
    assert message == (
        f"dynamodb-2-0-0.json: expected an Iglu resolver config ({RESOLVER}1-0-0, 1-0-1, 1-0-2 or 1-0-3), "
        f"got {STORAGE}2-0-0 (a DynamoDB storage config: are the storage and resolver files swapped?)"
    )


def test_some_other_schema(tmp_path, bootstrap):
    path = write(tmp_path / "d.json", {"schema": "iglu:com.acme/thing/jsonschema/1-0-0", "data": {}})
    assert config_error(load_storage_config, path, bootstrap) == (
        f"d.json: expected a DynamoDB storage config ({STORAGE}1-0-0, 1-0-1 or 2-0-0), "
        "got iglu:com.acme/thing/jsonschema/1-0-0"
    )


@pytest.mark.parametrize(
    "content, expected",
    [({"data": storage_data("1-0-0")}, "c.json: not a self-describing JSON: no 'schema'"),
     (storage_data("1-0-0"), "c.json: not a self-describing JSON: no 'schema'"),
     ({"schema": STORAGE + "1-0-0"}, "c.json: not a self-describing JSON: no 'data'"),
     ({"schema": "com.snowplowanalytics/x/jsonschema/1-0-0", "data": {}},
      "c.json: not a self-describing JSON: schema: 'com.snowplowanalytics/x/jsonschema/1-0-0' is not an Iglu URI"),
     ("[1, 2]", "c.json: not a self-describing JSON: the top level is an array"),
     ('"text"', "c.json: not a self-describing JSON: the top level is a string")],
)
def test_not_self_describing(tmp_path, bootstrap, content, expected):
    path = write(tmp_path / "c.json", content)
    assert config_error(load_storage_config, path, bootstrap).startswith(expected)
    assert config_error(load_resolver, path).startswith(expected)


# --- bad files ----------------------------------------------------------------------------------------------------


def test_missing_file(tmp_path):
    path = str(tmp_path / "nope.json")
    assert config_error(load_resolver, path) == f"nope.json: no such file ({path})"


def test_directory(tmp_path):
    (tmp_path / "conf.json").mkdir()
    path = str(tmp_path / "conf.json")
    assert config_error(load_resolver, path) == f"conf.json: {path} is a directory, expected a JSON file"


def test_unreadable_path(tmp_path):
    path = str(Path(write(tmp_path / "file", "{}")) / "resolver.json")  # a path through a regular file
    assert config_error(load_resolver, path) == f"resolver.json: cannot read {path}: Not a directory"


@pytest.mark.parametrize(
    "content, expected",
    [(b"", "c.json: empty file, expected a JSON object"),
     (b"  \n ", "c.json: empty file, expected a JSON object"),
     (b'{\n  "schema": "x",\n  "data": {,}\n}', "c.json: not valid JSON: Expecting property name enclosed in "
                                                  "double quotes at line 3 column 12"),
     (b'{"schema": "x"', "c.json: not valid JSON: Expecting ',' delimiter at line 1 column 15"),
     (b"{'schema': 1}", "c.json: not valid JSON: Expecting property name enclosed in double quotes at line 1 column 2"),
     (b'{"a": 1, "a": 2}', "c.json: not valid JSON: duplicate key 'a'"),
     (b'{"a": NaN}', "c.json: not valid JSON: NaN is not a JSON value"),
     (b'{"a": 1}\n{"b": 2}', "c.json: not valid JSON: Extra data at line 2 column 1"),
     (b'{\n"a": "caf\xe9"}', "c.json: not UTF-8 text: byte 0xe9 on line 2"),
     (b"[" * 100_000 + b"]" * 100_000, "c.json: not a config: JSON nested too deeply")],
    ids=["empty", "blank", "syntax", "unterminated", "single-quotes", "duplicate-key", "nan", "two-documents",
         "latin-1", "deep"],
)
def test_not_json(tmp_path, content, expected):
    assert config_error(load_resolver, write(tmp_path / "c.json", content)) == expected


def test_utf8_byte_order_mark_is_accepted(tmp_path):
    text = json.dumps({"schema": RESOLVER + "1-0-3", "data": resolver_data("1-0-3")})
    assert load_resolver(write(tmp_path / "r.json", b"\xef\xbb\xbf" + text.encode())).cache_size == 500


def test_huge_file_is_refused_before_parsing(tmp_path):
    path = write(tmp_path / "big.json", b"x" * (MAX_CONFIG_BYTES + 1))  # not JSON either: size is checked first
    assert config_error(load_resolver, path) == (
        f"big.json: larger than {MAX_CONFIG_BYTES} bytes, too big for a config file ({path})"
    )


def test_file_of_exactly_the_limit_is_parsed(tmp_path):
    text = json.dumps({"schema": RESOLVER + "1-0-3", "data": resolver_data("1-0-3")})
    path = write(tmp_path / "r.json", text + " " * (MAX_CONFIG_BYTES - len(text)))
    assert load_resolver(path).cache_size == 500


# --- secrets ----------------------------------------------------------------------------------------------------


def _canary_cases() -> list:
    """(schema version, data) pairs that are each wrong in a different way, all carrying the canaries."""
    flat = storage_data("1-0-0", KEY_CANARY, SECRET_CANARY)
    nested = storage_data("2-0-0", KEY_CANARY, SECRET_CANARY)
    auth = nested["auth"]
    return [
        ("1-0-0", {**flat, "purpose": "DUPLICATE"}),
        ("1-0-0", {**flat, "secretAccessKey": [SECRET_CANARY], "accessKeyId": {"v": KEY_CANARY}}),
        ("1-0-0", {**flat, "backupSecret": SECRET_CANARY, "note": KEY_CANARY}),
        ("1-0-0", {**flat, "secretAccessKey": " " + SECRET_CANARY}),
        ("1-0-0", {**flat, "accessKeyId": KEY_CANARY + "\n"}),
        ("1-0-1", {**flat, "id": "nope"}),
        ("2-0-0", flat),
        ("2-0-0", {**nested, "auth": {"accessKeyId": KEY_CANARY}}),
        ("2-0-0", {**nested, "auth": {**auth, "secretAccessKey": 7}}),
        ("2-0-0", {**nested, "auth": {**auth, "accessKeyId": [KEY_CANARY]}}),
        ("2-0-0", {**nested, "auth": [KEY_CANARY, SECRET_CANARY]}),
        ("2-0-0", {**nested, "auth": f"{KEY_CANARY}:{SECRET_CANARY}"}),
        ("2-0-0", [nested]),
        ("2-0-0", {**nested, "dynamodbTable": "x"}),
        ("2-0-0", {**nested, "auth": {**auth, "secretAccessKey": ""}}),
        ("1-0-2", flat),
    ]


@pytest.mark.parametrize("version, data", _canary_cases())
def test_secrets_never_in_storage_errors(tmp_path, bootstrap, version, data):
    path = write(tmp_path / "dynamodb.json", {"schema": STORAGE + version, "data": data})
    message = config_error(load_storage_config, path, bootstrap)
    assert not any(canary in message for canary in CANARIES), message
    assert not any(canary in repr(message) for canary in CANARIES)


@pytest.mark.parametrize(
    "instance",
    [{"schema": "nope", "data": storage_data("1-0-0", KEY_CANARY, SECRET_CANARY), "accessKeyId": KEY_CANARY},
     {"schema": {"accessKeyId": KEY_CANARY}, "data": {}},
     {"secretAccessKey": SECRET_CANARY},
     {"schema": STORAGE + "1-0-0", "data": storage_data("1-0-0", KEY_CANARY, SECRET_CANARY), SECRET_CANARY: 1}],
)
def test_secrets_never_in_envelope_errors(tmp_path, bootstrap, instance):
    message = config_error(load_storage_config, write(tmp_path / "d.json", instance), bootstrap)
    assert not any(canary in message for canary in CANARIES), message


def test_secrets_never_in_file_errors(tmp_path):
    broken = json.dumps({"schema": STORAGE + "1-0-0", "data": storage_data("1-0-0", KEY_CANARY, SECRET_CANARY)})
    for content in (broken[:-5], broken.replace('"data"', "data"), broken.encode() + b"\xff",
                    broken.replace("{", '{"accessKeyId": 1, ', 1).replace("}", ', "accessKeyId": 2}', 1)):
        message = config_error(load_resolver, write(tmp_path / "c.json", content))
        assert not any(canary in message for canary in CANARIES), message


def test_secrets_never_in_repr_or_str(tmp_path, bootstrap):
    for version in ("1-0-0", "2-0-0"):
        data = storage_data(version, KEY_CANARY, SECRET_CANARY)
        config = load_storage_config(write(tmp_path / "d.json", {"schema": STORAGE + version, "data": data}),
                                     bootstrap)
        assert config.credentials() == {"accessKeyId": KEY_CANARY, "secretAccessKey": SECRET_CANARY}
        for text in (repr(config), str(config), f"{config}", repr([config])):
            assert not any(canary in text for canary in CANARIES), text
