"""Importing settings from EmrEtlRunner's config.yml: values, symbol keys, ERB environment lookups, precedence,
missing and bad values named with their setting, bad files."""
from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.configs.emr_settings import EmrSettings
from pipeline.configs.emretlrunner import backfill_archive, cluster_settings, merge_settings, read_emretlrunner_config
from pipeline.reports import estimate
from pipeline.rules.errors import PipelineError

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
    got = read_emretlrunner_config(str(SAMPLE)).values()
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
    got = read_emretlrunner_config(write(tmp_path, MINIMAL)).values()
    assert got["log_uri"] == "s3://acme-logs/emr" and got["archive"] == "s3://acme-archive/enriched"
    assert got["region"] == "us-east-1"
    assert CANARY not in repr(got)  # EmrEtlRunner's own keys are never taken
    monkeypatch.delenv("EER_ARCHIVE")
    assert read_emretlrunner_config(write(tmp_path, MINIMAL)).archive() == "s3://fallback/enriched"


def test_spot_bid_old_ami_and_bootstrap(tmp_path, monkeypatch):
    monkeypatch.setenv("EER_LOG_BUCKET", "s3://acme-logs/emr")
    got = read_emretlrunner_config(write(tmp_path, MINIMAL)).values()
    assert "release_label" not in got  # 5.29.0 cannot run the job: the EMR 7 default stays
    assert (got["core_market"], got["core_bid_price"]) == ("SPOT", "0.05")
    got.pop("archive")
    settings = EmrSettings.from_mapping(got)
    assert settings.release_label.startswith("emr-7.") and settings.core_market == "SPOT"
    assert settings.bootstrap_actions == [{"Name": "tune.sh", "ScriptBootstrapAction": {
        "Path": "s3://acme-ops/bootstrap/tune.sh", "Args": []}}]


def test_unset_variable_in_a_used_field_fails_in_one_line(tmp_path, monkeypatch):
    monkeypatch.delenv("EER_LOG_BUCKET", raising=False)
    path = write(tmp_path, MINIMAL)
    assert "log_uri" not in read_emretlrunner_config(path).values()  # reading is fine: the value is not used yet
    with pytest.raises(PipelineError) as err:
        cluster_settings({}, path, {"log_uri": ""})
    assert "\n" not in str(err.value)
    assert "aws.s3.buckets.log" in str(err.value) and "EER_LOG_BUCKET is not set" in str(err.value)
    assert cluster_settings({}, path, {"log_uri": "s3://ops/logs"})["log_uri"] == "s3://ops/logs"  # not used


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


# --- read as EmrEtlRunner reads it: symbol and string keys alike, at every level ---------------------------------

REAL = Path(__file__).resolve().parent.parent.parent / "shared" / "snowplow" / "real-configs" / "emretlrunner"
SAMPLE_1_0_4 = REAL / "emr-etl-runner@1.0.4__eer__config.yml.sample"


def as_symbols(text: str, every: int = 1) -> str:
    """The same file with every `every`-th key written as a Ruby symbol (`:aws:`), as older releases write them."""
    out = []
    for i, line in enumerate(text.splitlines()):
        key = line.lstrip()
        if i % every == 0 and key and key[0].isalpha() and ":" in key:
            line = line[: len(line) - len(key)] + ":" + key
        out.append(line)
    return "\n".join(out) + "\n"


@pytest.mark.parametrize("every", [1, 2, 3])
def test_symbol_keys_read_as_string_keys_at_every_level(tmp_path, every):
    text = SAMPLE.read_text()
    symbols = as_symbols(text, every)
    assert symbols.count("\n:") + symbols.count(" :") > text.count(" :") and (every > 1 or ":aws:" in symbols)
    assert read_emretlrunner_config(write(tmp_path, symbols)).values() == \
        read_emretlrunner_config(str(SAMPLE)).values()


def test_a_symbol_key_and_its_string_twin_are_one_key_the_later_wins(tmp_path):
    text = "aws:\n  s3:\n    region: eu-west-1\n    :region: us-east-2\n  :emr:\n    region: ap-south-1\n"
    assert read_emretlrunner_config(write(tmp_path, text)).values()["region"] == "ap-south-1"
    text = "aws:\n  s3:\n    :region: us-east-2\n    region: eu-west-1\n"
    assert read_emretlrunner_config(write(tmp_path, text)).values()["region"] == "eu-west-1"


# --- no enriched archive: which setting lacks, and --enriched-archive instead -----------------------------------

def archive_error(path: str, runner: str = "local") -> str:
    with pytest.raises(PipelineError) as err:
        backfill_archive("", path, runner)
    message = str(err.value)
    assert "\n" not in message and "give --enriched-archive" in message and path in message
    return message


def test_placeholder_archive_names_the_setting_and_the_parameter_instead():
    message = archive_error(str(SAMPLE_1_0_4))
    assert "no enriched archive: aws.s3.buckets.enriched.archive is still the sample's 'ADD HERE'" in message


def test_pre_r70_layout_names_the_missing_setting_and_the_layout():
    message = archive_error(str(REAL / "snowplow@r68-turquoise-jay__eer__config.yml.sample"))
    assert "layout of EmrEtlRunner before R70" in message and "no aws.s3.buckets.enriched.archive" in message


def test_empty_or_absent_archive(tmp_path):
    assert "aws.s3.buckets.enriched.archive is absent;" in archive_error(write(tmp_path, "aws:\n  s3: {}\n"))
    for value in ("", "'  '"):
        text = f"aws:\n  s3:\n    buckets:\n      enriched:\n        archive: {value}\n"
        assert "aws.s3.buckets.enriched.archive is empty;" in archive_error(write(tmp_path, text))


def test_archive_from_an_unset_environment_variable(tmp_path, monkeypatch):
    monkeypatch.delenv("EER_ARCHIVE_X", raising=False)
    text = "aws:\n  s3:\n    buckets:\n      enriched:\n        archive: <%= ENV['EER_ARCHIVE_X'] %>\n"
    path = write(tmp_path, text)
    assert ("aws.s3.buckets.enriched.archive uses <%= ENV['EER_ARCHIVE_X'] %> but environment variable EER_ARCHIVE_X"
            " is not set") in archive_error(path)
    assert backfill_archive("s3://given/archive", path, "emr") == ("s3://given/archive", "")
    monkeypatch.setenv("EER_ARCHIVE_X", "s3://from-env/enriched")
    assert backfill_archive("", path, "emr") == ("s3://from-env/enriched", f"{ARCHIVE} in {path}")


ARCHIVE = "aws.s3.buckets.enriched.archive"


def test_explicit_archive_wins_and_no_file_means_no_archive():
    assert backfill_archive("s3://given/archive", str(SAMPLE), "emr") == ("s3://given/archive", "")
    assert backfill_archive("", "", "local") == ("", "")
    assert backfill_archive("", str(SAMPLE), "emr") == ("s3://acme-snowplow-archive/enriched", f"{ARCHIVE} in {SAMPLE}")


def test_archive_not_in_s3_with_the_emr_runner_names_value_and_setting():
    """EmrEtlRunner's own test configs say `ea`: a local path to us, which the local runner may read."""
    path = str(REAL / "snowplow@r117-biskupin__eerspec__sparse_config.yml")
    with pytest.raises(PipelineError) as err:
        backfill_archive("", path, "emr")
    assert str(err.value) == (f"enriched archive 'ea' from {ARCHIVE} in {path} is not in S3: --runner emr needs an "
                              "s3:// archive (fix the file, or give --enriched-archive)")
    assert backfill_archive("", path, "local") == ("ea", f"{ARCHIVE} in {path}")


def test_archive_that_is_no_location_names_value_and_setting(tmp_path):
    path = write(tmp_path, "aws:\n  s3:\n    buckets:\n      enriched:\n        archive: s3://Bad_Bucket/enriched\n")
    with pytest.raises(PipelineError, match=rf"^enriched archive 's3://Bad_Bucket/enriched' from {ARCHIVE} in "
                                            rf".*config\.yml: .*not a valid S3 bucket name"):
        backfill_archive("", path, "local")


# --- the cluster: [emr], then config.yml, then explicit parameters -------------------------------------------------

EMR_DEFAULTS = {"master_instance_type": "m5.xlarge", "core_instance_type": "m5.xlarge", "core_instance_count": "2",
                "core_market": "ON_DEMAND", "release_label": "emr-7.5.0"}  # as luigi.cfg's [emr] has them


def test_cluster_of_the_1_0_4_sample_overrides_luigi_cfg_defaults():
    """Master and core m4.large, core on SPOT at its bid: what the dry run estimates and the real run creates."""
    settings = cluster_settings(EMR_DEFAULTS, str(SAMPLE_1_0_4), {"log_uri": "", "profile": "", "job_code_uri": ""})
    assert settings["release_label"] == "emr-7.5.0"  # ami_version 5.29.0 cannot run the job: [emr]'s stays
    groups = estimate.emr_groups(settings)
    assert [(g.role, g.instance_type, g.count, g.market) for g in groups] == [
        ("master", "m4.large", 1, "ON_DEMAND"), ("core", "m4.large", 2, "SPOT")]
    assert EmrSettings.from_mapping(settings).core_bid_price == "0.015"
    assert "region" not in settings and "log_uri" not in settings  # 'ADD HERE' in the sample


def test_cluster_without_a_file_is_luigi_cfg_and_explicit_parameters():
    settings = cluster_settings(EMR_DEFAULTS, "", {"log_uri": "s3://ops/logs", "profile": ""})
    assert settings == {**EMR_DEFAULTS, "log_uri": "s3://ops/logs"}


@pytest.mark.parametrize("jobflow, setting, problem", [
    ("core_instance_count: -1", "aws.emr.jobflow.core_instance_count -1", "-1 must not be negative"),
    ("core_instance_count: many", "aws.emr.jobflow.core_instance_count 'many'", "'many' is not a whole number"),
    ("core_instance_bid: cheap", "aws.emr.jobflow.core_instance_bid 'cheap'", "'cheap' is not a price in USD"),
])
def test_bad_cluster_value_from_the_file_names_value_and_setting(tmp_path, jobflow, setting, problem):
    path = write(tmp_path, f"aws:\n  emr:\n    jobflow:\n      {jobflow}\n")
    with pytest.raises(PipelineError) as err:
        cluster_settings(EMR_DEFAULTS, path, {})
    assert str(err.value) == f"EmrEtlRunner config {path}: {setting} cannot be used: {problem}"


def test_log_bucket_not_in_s3_names_value_and_setting_unless_overridden(tmp_path):
    path = write(tmp_path, "aws:\n  s3:\n    buckets:\n      log: acme-logs\n")
    with pytest.raises(PipelineError, match=r"aws\.s3\.buckets\.log 'acme-logs' cannot be used: .*s3://"):
        cluster_settings({}, path, {"log_uri": ""})
    assert cluster_settings({}, path, {"log_uri": "s3://ops/logs"})["log_uri"] == "s3://ops/logs"
