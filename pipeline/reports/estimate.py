"""What a backfill will consume, how long it takes and what it costs, from the plan's figures alone (no AWS call).

The figures are for operators deciding whether and how to start, so every assumption is a named constant or a
price in luigi.cfg's `[pricing]`, and every figure derived from bytes rather than counted events says so.
Default prices are AWS list prices in us-east-1 (2025): set `[pricing]` for another region or a new price list.

Assumptions (each an upper bound or a rough average, never a measurement of the archive at hand):
- A manifest item is ~110 bytes in DynamoDB (eventId 36 chars, fingerprint 32 hex, two numbers, attribute names),
  so every write costs 1 WCU; a conditional put costs 1 WCU also when its condition fails.
- Every valid event is written once: duplicates collapsing in a batch and expired events only make it cheaper.
- The fast mode reads every key first with BatchGetItem, strongly consistent (spark/writer.py), which costs 1 RCU
  per key of up to 4 KB (an eventually consistent read would cost 0.5), then writes only keys not yet present;
  on a fresh backfill that is every key, which is what is assumed here.
- Reads are not in the write budget; the time is the write units over the budget (WCU/s).
- Without counted events, events = bytes / 1,300 (an enriched line of 131 fields) after inflating objects named
  *.gz or *.gzip by 6x (bench/archive.py's lines compress 6.4-6.6x; real archives vary): rough.
"""
from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field, fields
from typing import Any, Dict, List, Mapping, Optional, Tuple

from pipeline.configs.emr_settings import EmrSettings
from pipeline.rules.errors import PipelineError
from pipeline.rules.sizing import AVG_LINE_BYTES, GZIP_RATIO
from spark.manifest import ManifestItem, item_attributes

ITEM_BYTES = 110  # one manifest item as DynamoDB sizes it: well under the 1 KB of one WCU
WCU_PER_ITEM = math.ceil(ITEM_BYTES / 1024)
FAST_READ_RCU = 1.0  # strongly consistent BatchGetItem, per key up to 4 KB
# One item as a line of DynamoDB JSON, the uncompressed source ImportTable bills: 175 bytes with compact
# separators, 187 with json.dumps' default ones (see SAMPLE_IMPORT_ITEM); 190 covers either.
IMPORT_ITEM_BYTES = 190
SAMPLE_IMPORT_ITEM = {"Item": item_attributes(ManifestItem("c6ef3124-b53a-4b13-a233-0088f79dcbcb",
                                                            "3b6a27bcceb6a42d62a3a8d02a6f0d73", 1500000000,
                                                            1515552000, "2017-07-14-03-00-00"))}
GIB = 1 << 30  # AWS bills data in GB of 2^30 bytes
EMR_STARTUP_HOURS = 0.25  # provisioning and bootstrap of a new cluster before its first step runs
EXTRACT_EVENTS_PER_VCPU_SECOND = 50_000  # half issue 6's parse target per core: S3 reads, shuffle, Spark overhead

# On-demand Linux prices in us-east-1, USD per instance-hour: EC2, and EMR's own charge on top of it.
EC2_HOURLY = {"m5.xlarge": 0.192, "m5.2xlarge": 0.384, "m5.4xlarge": 0.768, "m6g.xlarge": 0.154,
              "m6g.2xlarge": 0.308, "m7g.xlarge": 0.1632, "r5.xlarge": 0.252, "r5.2xlarge": 0.504, "c5.xlarge": 0.17,
              "c5.2xlarge": 0.34}
EMR_HOURLY = {"m5.xlarge": 0.048, "m5.2xlarge": 0.096, "m5.4xlarge": 0.192, "m6g.xlarge": 0.0385,
              "m6g.2xlarge": 0.077, "m7g.xlarge": 0.0408, "r5.xlarge": 0.063, "r5.2xlarge": 0.126, "c5.xlarge": 0.043,
              "c5.2xlarge": 0.085}

COUNTED, FROM_BYTES, MIXED = "counted", "estimated from bytes", "partly estimated from bytes"


@dataclass
class Prices:
    """USD prices; the field names are the keys of luigi.cfg's [pricing] section."""

    on_demand_write_per_million: float = 0.625  # write request units, on-demand table
    on_demand_read_per_million: float = 0.125  # read request units, on-demand table
    provisioned_wcu_hour: float = 0.00065
    provisioned_rcu_hour: float = 0.00013
    import_per_gb: float = 0.15  # DynamoDB import from S3, per GB of uncompressed source data
    ec2_hourly: Dict[str, float] = field(default_factory=lambda: dict(EC2_HOURLY))
    emr_hourly: Dict[str, float] = field(default_factory=lambda: dict(EMR_HOURLY))

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> Prices:
        """From luigi.cfg's strings (the hourly tables as JSON objects); an empty value keeps the default."""
        kinds = {f.name: f for f in fields(cls)}
        parsed: Dict[str, Any] = {}
        for key, value in values.items():
            if key not in kinds:
                raise PipelineError(f"[pricing] {key}: unknown setting (known: {', '.join(sorted(kinds))})")
            if value is None or (isinstance(value, str) and not value.strip()):
                continue
            parsed[key] = _price_table(key, value) if key.endswith("_hourly") else _price(key, value)
        return cls(**parsed)


def _price(key: str, value: Any) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise PipelineError(f"[pricing] {key}: {value!r} is not a price in USD") from None
    if not math.isfinite(number) or number < 0:
        raise PipelineError(f"[pricing] {key}: {value!r} must be a price of zero or more USD")
    return number


def _price_table(key: str, value: Any) -> Dict[str, float]:
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            raise PipelineError(f"[pricing] {key}: not a JSON object like {{\"m5.xlarge\": 0.192}}") from None
    if not isinstance(value, dict):
        raise PipelineError(f"[pricing] {key}: not a JSON object like {{\"m5.xlarge\": 0.192}}")
    return {str(k): _price(f"{key} {k}", v) for k, v in value.items()}


# --- events -------------------------------------------------------------------------------------------------

def events_source(counted_runs: int, total_runs: int) -> str:
    if counted_runs >= total_runs:
        return COUNTED
    return FROM_BYTES if counted_runs == 0 else MIXED


# --- DynamoDB -----------------------------------------------------------------------------------------------

def write_units(events: int, mode: str) -> Tuple[int, float]:
    """(WCU, RCU) to write `events` items in a write mode, on a fresh backfill (an upper bound)."""
    if mode == "conditional":
        return events * WCU_PER_ITEM, 0.0
    if mode == "fast":
        return events * WCU_PER_ITEM, events * FAST_READ_RCU
    raise PipelineError(f"write mode {mode!r} is not one of: conditional, fast")


def write_seconds(wcu: int, budget: float) -> Optional[float]:
    """Time to spend `wcu` at `budget` WCU/s; None without a budget."""
    return wcu / budget if budget > 0 else None


def on_demand_usd(wcu: float, rcu: float, prices: Prices) -> float:
    return (wcu * prices.on_demand_write_per_million + rcu * prices.on_demand_read_per_million) / 1e6


def provisioned_usd(wcu_per_second: float, rcu_per_second: float, seconds: Optional[float],
                    prices: Prices) -> Optional[float]:
    """Holding that much provisioned capacity for `seconds` (DynamoDB bills whole hours: ignored here)."""
    if seconds is None:
        return None
    hourly = wcu_per_second * prices.provisioned_wcu_hour + rcu_per_second * prices.provisioned_rcu_hour
    return hourly * seconds / 3600.0


def import_gb(events: int) -> float:
    return events * IMPORT_ITEM_BYTES / GIB


def import_usd(events: int, prices: Prices) -> float:
    return import_gb(events) * prices.import_per_gb


# --- EMR ----------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class InstanceGroup:
    role: str  # master or core
    instance_type: str
    count: int
    market: str = "ON_DEMAND"


def emr_groups(settings: Mapping[str, Any]) -> List[InstanceGroup]:
    """The cluster's instance groups from [emr] settings (missing keys take the defaults and validation of the
    EmrSettings the runner creates the cluster from)."""
    keys = ("master_instance_type", "master_instance_count", "core_instance_type", "core_instance_count",
            "core_market", "core_bid_price")
    s = EmrSettings.from_mapping({k: settings[k] for k in keys if k in settings})
    groups = [InstanceGroup("master", s.master_instance_type, s.master_instance_count)]
    if s.core_instance_count:
        groups.append(InstanceGroup("core", s.core_instance_type, s.core_instance_count, s.core_market))
    return groups


def vcpus(instance_type: str) -> Optional[int]:
    """vCPUs from the size name as in the m, c and r families (large 2, xlarge 4, Nxlarge 4N); None if unknown."""
    m = re.match(r"^[a-z][a-z0-9-]*\.(\d*)(x?)large$", instance_type or "")
    if not m:
        return None
    if not m.group(2):
        return 2 if not m.group(1) else None
    return 4 * int(m.group(1) or 1)


def extract_hours(events: int, groups: List[InstanceGroup]) -> Optional[float]:
    """Reading and parsing time on the executors' vCPUs (core nodes, or the master alone without them)."""
    workers = [g for g in groups if g.role == "core"] or groups
    cores = [vcpus(g.instance_type) for g in workers]
    if not workers or any(c is None for c in cores):
        return None
    total = sum(c * g.count for c, g in zip(cores, workers))
    return events / (total * EXTRACT_EVENTS_PER_VCPU_SECOND) / 3600.0


def emr_usd(groups: List[InstanceGroup], hours: float, prices: Prices) -> Dict[str, Any]:
    """EC2 plus EMR charges per group for `hours`; a type without both prices makes the total unknown."""
    rows, unknown, total = [], [], 0.0
    for g in groups:
        ec2, emr = prices.ec2_hourly.get(g.instance_type), prices.emr_hourly.get(g.instance_type)
        usd = None if ec2 is None or emr is None else g.count * hours * (ec2 + emr)
        if usd is None:
            unknown.append(g.instance_type)
        else:
            total += usd
        rows.append({"role": g.role, "instance_type": g.instance_type, "count": g.count, "market": g.market,
                     "usd": usd})
    notes = []
    if unknown:
        notes.append(f"unknown price for {', '.join(sorted(set(unknown)))}: add it to [pricing] ec2_hourly and "
                     "emr_hourly")
    if any(g.market == "SPOT" for g in groups):
        notes.append("SPOT core nodes priced at the on-demand EC2 price (an upper bound); the EMR charge is fixed")
    return {"hours": hours, "groups": rows, "usd": None if unknown else total, "notes": notes}


# --- both methods side by side ------------------------------------------------------------------------------

def estimates(events: int, source: str, budget: float, billing_mode: Optional[str], write_mode: str,
              prices: Prices, groups: Optional[List[InstanceGroup]] = None, new_cluster: bool = True) -> Dict:
    """The write method in both modes and the import method, for `events` valid events.

    `billing_mode` is the table's (None when it does not exist yet) and picks the DynamoDB cost counted in the
    totals; `groups` is the EMR cluster (None: local runner, no EMR cost).
    """
    extract = extract_hours(events, groups) if groups else None
    startup = EMR_STARTUP_HOURS if new_cluster else 0.0
    methods: Dict[str, Dict] = {}
    for mode in ("conditional", "fast"):
        wcu, rcu = write_units(events, mode)
        seconds = write_seconds(wcu, budget)
        rcu_rate = rcu / seconds if seconds else 0.0  # reads keep pace with the writes
        row = {"wcu": wcu, "rcu": rcu, "seconds": seconds, "on_demand_usd": on_demand_usd(wcu, rcu, prices),
               "provisioned_usd": provisioned_usd(budget, rcu_rate, seconds, prices)}
        row["dynamodb_usd"] = row["provisioned_usd"] if billing_mode == "PROVISIONED" else row["on_demand_usd"]
        if groups:
            row["emr"] = emr_usd(groups, startup + max((seconds or 0.0) / 3600.0, extract or 0.0), prices)
        methods[mode] = row
    imp = {"wcu": 0, "rcu": 0.0, "seconds": None, "gb": import_gb(events), "import_usd": import_usd(events, prices)}
    imp["dynamodb_usd"] = imp["import_usd"]
    if groups:
        imp["emr"] = emr_usd(groups, startup + (extract or 0.0), prices)
    methods["import"] = imp
    for row in methods.values():
        parts = [row["dynamodb_usd"]] + ([row["emr"]["usd"]] if "emr" in row else [])
        row["total_usd"] = None if any(p is None for p in parts) else sum(parts)
    notes = [
        f"{WCU_PER_ITEM} WCU per item (~{ITEM_BYTES} bytes), also for a failed condition; every valid event is "
        "assumed written once (an upper bound: duplicates and expired events are not written)",
        f"fast mode reads each key first, strongly consistent: {FAST_READ_RCU:g} RCU per key; on a re-run, keys "
        "already present cost no WCU in fast mode but 1 WCU each in conditional mode",
        f"import bills {IMPORT_ITEM_BYTES} bytes of DynamoDB JSON per item, uses no write capacity, and only "
        "creates a new table; its duration is not estimated",
        "provisioned cost: holding the budget's WCU (and the fast mode's RCU) for the duration",
    ]
    if source != COUNTED:
        notes.insert(0, f"events {source} ({AVG_LINE_BYTES:,} bytes a line, gzip {GZIP_RATIO:g}x): rough; "
                        "--count-events counts them")
    if groups:
        if extract is None:
            notes.append("EMR hours exclude reading time: vCPUs of the instance type unknown")
        notes.append(f"EMR hours: {'startup ' + str(startup) + ' h + ' if startup else ''}the longer of writing and "
                     f"reading at {EXTRACT_EVENTS_PER_VCPU_SECOND:,} events/s per vCPU; import also keeps the "
                     "cluster while ImportTable runs, not included")
    return {"events": events, "events_source": source, "budget_wcu_per_second": budget,
            "billing_mode": billing_mode, "configured_write_mode": write_mode, "methods": methods, "notes": notes}
