"""The dry run's arithmetic, checked against figures computed by hand from the documented prices."""
from __future__ import annotations

import json

import pytest

from pipeline.reports import estimate
from pipeline.reports.estimate import InstanceGroup, Prices
from pipeline.rules import sizing
from pipeline.rules.errors import PipelineError

P = Prices()
CLUSTER = [InstanceGroup("master", "m5.xlarge", 1), InstanceGroup("core", "m5.xlarge", 2)]


def test_default_prices_are_the_documented_ones():
    assert (P.on_demand_write_per_million, P.on_demand_read_per_million) == (0.625, 0.125)
    assert (P.provisioned_wcu_hour, P.provisioned_rcu_hour, P.import_per_gb) == (0.00065, 0.00013, 0.15)
    assert (P.ec2_hourly["m5.xlarge"], P.emr_hourly["m5.xlarge"]) == (0.192, 0.048)
    assert set(P.ec2_hourly) == set(P.emr_hourly)


def test_prices_from_luigi_cfg_strings():
    prices = Prices.from_mapping({"on_demand_write_per_million": "1.25", "provisioned_wcu_hour": "",
                                  "ec2_hourly": '{"m6i.xlarge": 0.192}', "emr_hourly": '{"m6i.xlarge": "0.048"}'})
    assert prices.on_demand_write_per_million == 1.25
    assert prices.provisioned_wcu_hour == 0.00065  # empty keeps the default
    assert prices.ec2_hourly == {"m6i.xlarge": 0.192} and prices.emr_hourly == {"m6i.xlarge": 0.048}


@pytest.mark.parametrize("values, message", [
    ({"on_demand_writes": "1"}, "[pricing] on_demand_writes: unknown setting"),
    ({"import_per_gb": "cheap"}, "[pricing] import_per_gb: 'cheap' is not a price in USD"),
    ({"import_per_gb": "-1"}, "[pricing] import_per_gb: '-1' must be a price of zero or more USD"),
    ({"ec2_hourly": "{m5: 1}"}, "[pricing] ec2_hourly: not a JSON object"),
    ({"emr_hourly": '{"m5.xlarge": "x"}'}, "[pricing] emr_hourly m5.xlarge: 'x' is not a price in USD"),
])
def test_bad_prices_are_one_line_errors(values, message):
    with pytest.raises(PipelineError) as e:
        Prices.from_mapping(values)
    assert str(e.value).startswith(message) and "\n" not in str(e.value)


def test_item_sizes_hold_for_a_real_item():
    compact = len(json.dumps(estimate.SAMPLE_IMPORT_ITEM, separators=(",", ":"))) + 1
    spaced = len(json.dumps(estimate.SAMPLE_IMPORT_ITEM)) + 1
    assert compact <= spaced <= estimate.IMPORT_ITEM_BYTES < spaced + 10
    item = estimate.SAMPLE_IMPORT_ITEM["Item"]
    # DynamoDB sizes an item as its names plus values; a number takes about one byte per two digits plus one.
    size = sum(len(k) + (len(v["S"]) if "S" in v else len(v["N"]) // 2 + 1) for k, v in item.items())
    assert abs(size - estimate.ITEM_BYTES) <= 5 and estimate.WCU_PER_ITEM == 1


def test_events_from_bytes_inflates_gzip_names_only():
    assert sizing.events_from_bytes([("part-0.gz", 1300), ("part-1", 2600), ("part-2.GZIP", 650)]) == 6 + 2 + 3
    assert sizing.events_from_bytes([]) == 0


def test_events_source():
    assert estimate.events_source(3, 3) == estimate.COUNTED
    assert estimate.events_source(0, 3) == estimate.FROM_BYTES
    assert estimate.events_source(1, 3) == estimate.MIXED


def test_write_units_per_mode():
    assert estimate.write_units(1000, "conditional") == (1000, 0.0)
    assert estimate.write_units(1000, "fast") == (1000, 1000.0)  # strongly consistent reads: 1 RCU per key
    with pytest.raises(PipelineError, match="write mode 'batch'"):
        estimate.write_units(1, "batch")


def test_dynamodb_costs():
    assert estimate.on_demand_usd(2_000_000, 0, P) == pytest.approx(1.25)
    assert estimate.on_demand_usd(2_000_000, 2_000_000, P) == pytest.approx(1.25 + 0.25)
    # 500 WCU held for two hours, and 250 RCU alongside
    assert estimate.provisioned_usd(500, 0, 7200, P) == pytest.approx(0.65)
    assert estimate.provisioned_usd(500, 250, 7200, P) == pytest.approx(0.65 + 0.065)
    assert estimate.provisioned_usd(500, 0, None, P) is None
    assert estimate.write_seconds(1_800_000, 500) == 3600
    assert estimate.write_seconds(10, 0) is None


def test_import_cost_per_gib_of_dynamodb_json():
    assert estimate.import_gb(1_000_000) == pytest.approx(190e6 / 2**30)
    assert estimate.import_usd(1_000_000, P) == pytest.approx(0.15 * 190e6 / 2**30)  # ~ $0.0265


@pytest.mark.parametrize("name, cpus", [("m5.xlarge", 4), ("m5.2xlarge", 8), ("c5.large", 2), ("r5.24xlarge", 96),
                                        ("m5.metal", None), ("m5.2large", None), ("nonsense", None)])
def test_vcpus_from_the_size_name(name, cpus):
    assert estimate.vcpus(name) == cpus


def test_emr_cost_and_unknown_prices():
    cost = estimate.emr_usd(CLUSTER, 2.0, P)
    assert cost["usd"] == pytest.approx(3 * 2.0 * (0.192 + 0.048))  # $1.44
    assert [g["usd"] for g in cost["groups"]] == pytest.approx([0.48, 0.96])
    odd = estimate.emr_usd([InstanceGroup("master", "m5.xlarge", 1), InstanceGroup("core", "x9.huge", 2)], 1.0, P)
    assert odd["usd"] is None and odd["groups"][0]["usd"] == pytest.approx(0.24) and odd["groups"][1]["usd"] is None
    assert any("unknown price for x9.huge" in n for n in odd["notes"])
    spot = estimate.emr_usd([InstanceGroup("core", "m5.xlarge", 1, "SPOT")], 1.0, P)
    assert spot["usd"] == pytest.approx(0.24) and any("SPOT" in n for n in spot["notes"])


def test_emr_groups_from_settings():
    assert estimate.emr_groups({}) == CLUSTER  # EmrSettings' defaults
    assert estimate.emr_groups({"core_instance_count": "0", "master_instance_type": "r5.xlarge"}) == [
        InstanceGroup("master", "r5.xlarge", 1)]
    assert estimate.emr_groups({"core_bid_price": "0.1", "cluster_id": "j-ABC"})[1].market == "SPOT"
    with pytest.raises(PipelineError, match="master_instance_count"):
        estimate.emr_groups({"master_instance_count": "2"})


def test_estimates_side_by_side_write_bound():
    # 3.6M events at 1,000 WCU/s: one hour of writing; reading on 8 vCPUs takes 3.6M / 400,000 s = 9 s.
    est = estimate.estimates(3_600_000, estimate.COUNTED, 1000.0, "PROVISIONED", "conditional", P, CLUSTER)
    cond, fast, imp = (est["methods"][k] for k in ("conditional", "fast", "import"))
    assert (cond["wcu"], cond["rcu"], cond["seconds"]) == (3_600_000, 0.0, 3600.0)
    assert cond["on_demand_usd"] == pytest.approx(2.25)
    assert cond["provisioned_usd"] == pytest.approx(0.65)  # 1,000 WCU for one hour
    assert fast["provisioned_usd"] == pytest.approx(0.65 + 0.13)  # and 1,000 RCU/s alongside
    assert fast["on_demand_usd"] == pytest.approx(2.25 + 0.45)
    assert cond["emr"]["hours"] == pytest.approx(1.25)  # startup + writing
    assert cond["total_usd"] == pytest.approx(0.65 + 3 * 1.25 * 0.24)
    assert imp["wcu"] == 0 and imp["seconds"] is None
    assert imp["emr"]["hours"] == pytest.approx(0.25 + 9 / 3600)
    assert imp["total_usd"] == pytest.approx(0.15 * 3_600_000 * 190 / 2**30 + 3 * imp["emr"]["hours"] * 0.24)
    assert not any("rough" in n for n in est["notes"])


def test_estimates_read_bound_on_demand_without_emr():
    # 1.44e9 events on 8 vCPUs read in one hour, written in 144 s at 10M WCU/s
    est = estimate.estimates(1_440_000_000, estimate.FROM_BYTES, 1e7, "PAY_PER_REQUEST", "fast", P, CLUSTER,
                             new_cluster=False)
    cond = est["methods"]["conditional"]
    assert cond["emr"]["hours"] == pytest.approx(1.0)  # existing cluster: no startup
    assert cond["dynamodb_usd"] == cond["on_demand_usd"] == pytest.approx(1440 * 0.625)
    assert any("rough" in n for n in est["notes"])
    local = estimate.estimates(100, estimate.COUNTED, 10.0, None, "conditional", P)
    assert "emr" not in local["methods"]["conditional"] and local["methods"]["conditional"]["total_usd"] == \
        pytest.approx(100 * 0.625 / 1e6)


def test_unknown_instance_price_makes_totals_unknown():
    est = estimate.estimates(1000, estimate.COUNTED, 100.0, "PROVISIONED", "conditional", P,
                             [InstanceGroup("master", "x9.huge", 1)])
    assert all(est["methods"][k]["total_usd"] is None for k in ("conditional", "fast", "import"))
    assert any("reading time" in n for n in est["notes"])
