"""Importing settings from EmrEtlRunner's config.yml: values, ERB environment lookups, precedence, bad files."""
from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.emr_settings import EmrSettings
from pipeline.emretlrunner import merge_settings, read_emretlrunner_config
from pipeline.errors import PipelineError

SAMPLE = Path(__file__).resolve().parent.parent / "examples" / "emretlrunner-config.yml"
CANARY = "canarySecretZ9x8c7v6b5n4"

MINIMAL = """\
aws:
  access_key_id: <%= ENV['AWS_SNOWPLOW_ACCESS_KEY'] %>
  secret_access_key: <%= ENV["AWS_SNOWPLOW_SECRET_KEY"] %>
  s3:
    region: us-east-1
    buckets:
      log: <%= ENV['EER_LOG_BUCKET'] %>
      enriched:
        archive: <%= ENV.fetch('EER_ARCHIVE', 's3://fallback/enriched') -%>
  emr:
    ami_version: 5.29.0
    jobflow:
      core_instance_count: 2
      core_instance_bid: 0.05
    bootstrap:
      - s3://acme-ops/bootstrap/tune.sh
"""


def write(tmp_path, text, name="config.yml"):
    path = tmp_path / name
    path.write_bytes(text.encode("utf-8") if isinstance(text, str) else text)
    return str(path)


def test_sample_config_values():
    got = read_emretlrunner_config(str(SAMPLE))
    assert got == {
        "archive": "s3://acme-snowplow-archive/enriched",
        "region": "eu-west-1",
        "log_uri": "s3://acme-snowplow-logs/emr",
        "release_label": "emr-7.5.0",
        "master_instance_type": "m5.xlarge",
        "core_instance_type": "r5.xlarge",
        "core_instance_count": 3,
        "service_role": "EMR_DefaultRole",
        "job_flow_role": "EMR_EC2_DefaultRole",
        "subnet_id": "subnet-0a1b2c3d4e5f67890",
        "key_name": "acme-emr",
        "configurations": {"yarn-site": {"yarn.resourcemanager.am.max-attempts": "1"},
                           "spark": {"maximizeResourceAllocation": "true"}},
        "tags": {"team": "data-platform", "cost-centre": "analytics"},
    }
    got.pop("archive")
    settings = EmrSettings.from_mapping(got)
    assert settings.core_instance_count == 3 and settings.region == "eu-west-1"
    assert {"Classification": "spark", "Properties": {"maximizeResourceAllocation": "true"}} in settings.configurations


def test_erb_environment_values_are_substituted(tmp_path, monkeypatch):
    monkeypatch.setenv("EER_LOG_BUCKET", "s3://acme-logs/emr")
    monkeypatch.setenv("EER_ARCHIVE", "s3://acme-archive/enriched")
    monkeypatch.delenv("AWS_SNOWPLOW_ACCESS_KEY", raising=False)  # not used by us: need not be set
    monkeypatch.setenv("AWS_SNOWPLOW_SECRET_KEY", CANARY)
    got = read_emretlrunner_config(write(tmp_path, MINIMAL))
    assert got["log_uri"] == "s3://acme-logs/emr" and got["archive"] == "s3://acme-archive/enriched"
    assert got["region"] == "us-east-1"
    assert CANARY not in repr(got)  # EmrEtlRunner's own keys are never taken
    monkeypatch.delenv("EER_ARCHIVE")
    assert read_emretlrunner_config(write(tmp_path, MINIMAL))["archive"] == "s3://fallback/enriched"


def test_spot_bid_old_ami_and_bootstrap(tmp_path, monkeypatch):
    monkeypatch.setenv("EER_LOG_BUCKET", "s3://acme-logs/emr")
    got = read_emretlrunner_config(write(tmp_path, MINIMAL))
    assert "release_label" not in got  # 5.29.0 cannot run the job: the EMR 7 default stays
    assert (got["core_market"], got["core_bid_price"]) == ("SPOT", "0.05")
    got.pop("archive")
    settings = EmrSettings.from_mapping(got)
    assert settings.release_label.startswith("emr-7.") and settings.core_market == "SPOT"
    assert settings.bootstrap_actions == [{"Name": "tune.sh", "ScriptBootstrapAction": {
        "Path": "s3://acme-ops/bootstrap/tune.sh", "Args": []}}]


def test_unset_variable_in_a_used_field_fails_in_one_line(tmp_path, monkeypatch):
    monkeypatch.delenv("EER_LOG_BUCKET", raising=False)
    with pytest.raises(PipelineError) as err:
        read_emretlrunner_config(write(tmp_path, MINIMAL))
    assert "\n" not in str(err.value)
    assert "aws.s3.buckets.log" in str(err.value) and "EER_LOG_BUCKET is not set" in str(err.value)


def test_explicit_parameters_win():
    from_yml = {"archive": "s3://yml/archive", "region": "eu-west-1", "core_instance_count": 3,
                "core_bid_price": "0.05", "core_market": "SPOT"}
    merged = merge_settings({"region": "us-east-2", "archive": None, "log_uri": "", "core_instance_count": "8"},
                            from_yml)
    assert merged == {"archive": "s3://yml/archive", "region": "us-east-2", "core_instance_count": "8",
                      "core_bid_price": "0.05", "core_market": "SPOT"}
    on_demand = merge_settings({"core_market": "ON_DEMAND"}, from_yml)
    assert on_demand["core_market"] == "ON_DEMAND" and "core_bid_price" not in on_demand
    on_demand.pop("archive")
    assert EmrSettings.from_mapping(on_demand).core_market == "ON_DEMAND"


@pytest.mark.parametrize("text,expected", [
    (f"aws:\n  secret_access_key: {CANARY}\n  s3: [unclosed\n", "not valid YAML at line"),
    (f"aws:\n\tsecret_access_key: {CANARY}\n", "not valid YAML at line 2"),
    ("- just\n- a list\n", "not an EmrEtlRunner config"),
    ("aws:\n  s3: <% if true %>x<% end %>\n", "line 2: unsupported ERB tag"),
    ("aws:\n  s3:\n    buckets: [s3://a]\n", "aws.s3.buckets must be a mapping"),
    (b"aws:\n  s3: \xff\xfe\n", "not UTF-8 text"),
])
def test_bad_files_fail_in_one_line_without_quoting_them(tmp_path, text, expected):
    with pytest.raises(PipelineError) as err:
        read_emretlrunner_config(write(tmp_path, text))
    message = str(err.value)
    assert expected in message and "\n" not in message and CANARY not in message


def test_missing_file_fails_in_one_line(tmp_path):
    with pytest.raises(PipelineError, match=r"config .*nope\.yml: cannot read it \(No such file or directory\)$"):
        read_emretlrunner_config(str(tmp_path / "nope.yml"))
