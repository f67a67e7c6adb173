"""Every real Snowplow config in ../shared/snowplow/real-configs/ read as the pipeline reads it, against what its
expected.json says a correct reader makes of it: one test per file.

The files are Snowplow's own (resolver configs, DynamoDB storage configs, EmrEtlRunner/StorageLoader config.yml
from 0.5.0 to R119); they are read where they are, never copied into the project. Nothing here uses the network.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from pipeline.configs.emretlrunner import ARCHIVE_SETTING, backfill_archive, cluster_settings, read_emretlrunner_config
from pipeline.configs.iglu_resolver import Resolver
from pipeline.configs.self_describing import SchemaKey
from pipeline.configs.storage_config import load_resolver, load_storage_config
from pipeline.reports import estimate
from pipeline.rules.errors import PipelineError
from tests.test_configs import config_error

ROOT = Path(__file__).resolve().parent.parent
REAL = ROOT.parent / "shared" / "snowplow" / "real-configs"
EXPECTED = json.loads((REAL / "expected.json").read_text())
FILES = sorted(str(p.relative_to(REAL)) for p in REAL.glob("*/*") if p.is_file())
DYNAMODB_2_0_0 = SchemaKey.parse("iglu:com.snowplowanalytics.snowplow.storage/amazon_dynamodb_config/jsonschema/2-0-0")

# expected.json's reason for a refusal, and the words of ours that say it
REASONS = {
    "placeholder table name": "data.dynamodbTable: 'ADD HERE' is not a DynamoDB table name",
    "name is required": "data: 'name' is a required property",
    "2-0-0 requires id": "data: 'id' is a required property",
    "id is not a UUID": "data.id: 'test' is not a 'uuid'",
    "HOCON, not JSON": "not valid JSON",
}
# luigi.cfg's [emr] instance settings, which a config.yml overrides
EMR_SECTION = {"master_instance_type": "m5.xlarge", "core_instance_type": "m5.xlarge", "core_instance_count": "2",
               "core_market": "ON_DEMAND", "release_label": "emr-7.5.0"}


def of_kind(kind: str):
    return [f for f in FILES if f.startswith(kind + "/")]


def test_every_file_has_an_expectation_and_every_expectation_a_file():
    assert FILES == sorted(EXPECTED)
    assert (len(of_kind("resolver")), len(of_kind("dynamodb")), len(of_kind("emretlrunner"))) == (27, 12, 103)


@pytest.mark.parametrize("name", of_kind("resolver"))
def test_resolver_config(name, no_network, caplog):
    """Accepted ones resolve Snowplow's storage-config schema from the package, with no network."""
    expected, path = EXPECTED[name], str(REAL / name)
    if expected["expect"] == "reject":
        assert REASONS[expected["why"]] in config_error(load_resolver, path)
        return
    with caplog.at_level(logging.WARNING, logger="manifest.iglu"):
        resolver = load_resolver(path)
    assert resolver.lookup(DYNAMODB_2_0_0)["self"]["version"] == "2-0-0"
    extra = sorted(set(json.loads(Path(path).read_text())) - {"schema", "data"})
    assert ("ignoring top-level key(s)" in caplog.text) == bool(extra)


@pytest.mark.parametrize("name", of_kind("dynamodb"))
def test_dynamodb_storage_config(name, no_network):
    expected, path = EXPECTED[name], str(REAL / name)
    if expected["expect"] == "reject":
        assert REASONS[expected["why"]] in config_error(load_storage_config, path, Resolver.bootstrap())
        return
    config = load_storage_config(path, Resolver.bootstrap())
    assert (config.table, config.region) == (expected["table"], expected["region"])


@pytest.mark.parametrize("name", of_kind("emretlrunner"))
def test_emretlrunner_config(name, monkeypatch):
    """Read with symbol and string keys alike; a file without an enriched archive says which setting lacks and
    that --enriched-archive can be given, and its EMR settings still make the cluster (as the dry run shows it)."""
    for variable in ("AWS_SNOWPLOW_ACCESS_KEY", "AWS_SNOWPLOW_SECRET_KEY"):
        monkeypatch.delenv(variable, raising=False)  # the samples' own ERB tags: never needed
    expected, path = EXPECTED[name], str(REAL / name)
    assert expected["expect"] == "accept"
    config = read_emretlrunner_config(path)
    got = config.values()
    assert {"archive": got.get("archive"), "region": got.get("region"), "log": got.get("log_uri"),
            "master_instance_type": got.get("master_instance_type"),
            "core_instance_type": got.get("core_instance_type")} == {k: v for k, v in expected.items() if k != "expect"}

    if expected["archive"] is None:
        with pytest.raises(PipelineError) as err:
            backfill_archive("", path, "local")
        assert f"EmrEtlRunner config {path}: no enriched archive" in str(err.value)
        assert ARCHIVE_SETTING in str(err.value) and "give --enriched-archive" in str(err.value)
    else:
        assert backfill_archive("", path, "local") == (expected["archive"], f"{ARCHIVE_SETTING} in {path}")
    assert backfill_archive("s3://given/enriched", path, "emr") == ("s3://given/enriched", "")

    settings = cluster_settings(EMR_SECTION, path, {})
    groups = {g.role: g.instance_type for g in estimate.emr_groups(settings)}
    assert groups == {"master": expected["master_instance_type"] or "m5.xlarge",
                      "core": expected["core_instance_type"] or "m5.xlarge"}
    assert settings.get("region") == expected["region"] and settings.get("log_uri") == expected["log"]
