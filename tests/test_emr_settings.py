"""The [emr] settings and the requests built from them: pure, checked without AWS."""
from __future__ import annotations

import pytest

from pipeline.configs.emr_settings import EmrSettings
from pipeline.rules.errors import PipelineError
from pipeline.runners.emr_requests import cluster_request


def test_settings_from_luigi_cfg_strings():
    s = EmrSettings.from_mapping({
        "release_label": "emr-7.2.0", "core_instance_count": "4", "idle_timeout_seconds": "900",
        "tags": '{"team": "data", "env": "prod"}', "bootstrap_actions": '["s3://acme-ops/bootstrap/tune.sh"]',
        "spark_submit_args": "--conf spark.executor.memory=6g", "step_concurrency": "2", "cluster_id": "",
        "log_uri": "s3a://acme-logs/emr/", "core_bid_price": "0.12", "python_packages": '["ujson==5.10.0"]',
        "poll_seconds": "20",
    })
    assert (s.release_label, s.core_instance_count, s.idle_timeout_seconds, s.step_concurrency) == \
        ("emr-7.2.0", 4, 900, 2)
    assert s.tags == {"team": "data", "env": "prod"}
    assert s.bootstrap_actions == [{"Name": "tune.sh", "ScriptBootstrapAction": {
        "Path": "s3://acme-ops/bootstrap/tune.sh", "Args": []}}]
    assert s.spark_submit_args == ["--conf", "spark.executor.memory=6g"]
    assert s.cluster_id is None and s.log_uri == "s3://acme-logs/emr/"
    assert (s.core_market, s.core_bid_price) == ("SPOT", "0.12")
    assert s.python_packages == ["ujson==5.10.0"]
    assert s.poll_seconds == 20.0 and EmrSettings().poll_seconds == 60.0


def test_idle_timeout_is_always_set():
    assert EmrSettings().idle_timeout_seconds == 3600
    assert EmrSettings.from_mapping({"idle_timeout_seconds": "  "}).idle_timeout_seconds == 3600
    request = cluster_request(EmrSettings(), "n", "bf", "s3://b/logs/")
    assert request["AutoTerminationPolicy"] == {"IdleTimeout": 3600}


@pytest.mark.parametrize("key,value", [
    ("idle_timeout_seconds", "30"),
    ("idle_timeout_seconds", "an hour"),
    ("release_label", "emr-6.15.0"),
    ("tags", "{team: data"),
    ("tags", '["not", "a", "map"]'),
    ("cluster_id", "my-cluster"),
    ("log_uri", "/var/log/emr"),
    ("core_market", "CHEAP"),
    ("core_instance_count", "-1"),
    ("master_instance_count", "2"),
    ("bootstrap_actions", '["/home/me/script.sh"]'),
    ("step_concurrency", "0"),
    ("poll_seconds", "0"),
    ("poll_seconds", "a minute"),
    ("poll_seconds", "nan"),
    ("no_such_setting", "1"),
])
def test_bad_settings_fail_in_one_line(key, value):
    with pytest.raises(PipelineError) as err:
        EmrSettings.from_mapping({key: value})
    message = str(err.value)
    assert "\n" not in message and message.startswith(f"[emr] {key}:")
