"""The manifest table: checking its shape before any write, creating it on request, and the write budget."""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Optional

from botocore.exceptions import ClientError

from pipeline.rules.errors import PipelineError
from spark.manifest import ATTRIBUTES, KEY_SCHEMA, MANIFEST_KEY_SHAPE, TTL_ATTRIBUTE, key_shape

log = logging.getLogger("manifest.table")


@dataclass
class TableInfo:
    name: str
    region: str
    billing_mode: str  # PROVISIONED or PAY_PER_REQUEST
    write_capacity: int  # provisioned WCU; 0 on-demand
    ttl_enabled: bool


def describe_table(client, table: str, region: str) -> Optional[TableInfo]:
    """The table's shape, or None when it does not exist. Raises on a wrong key schema."""
    try:
        desc = client.describe_table(TableName=table)["Table"]
    except ClientError as e:  # any other error is AWS's to tell (rules.errors.aws_errors)
        if e.response["Error"]["Code"] == "ResourceNotFoundException":
            return None
        raise
    shape = key_shape(desc["KeySchema"], desc.get("AttributeDefinitions", []))
    if shape != MANIFEST_KEY_SHAPE:
        raise PipelineError(
            f"DynamoDB table '{table}' in {region} has key schema [{_shown(shape)}], "
            f"expected [{_shown(MANIFEST_KEY_SHAPE)}]: nothing was written"
        )
    billing = desc.get("BillingModeSummary", {}).get("BillingMode", "PROVISIONED")
    wcu = int(desc.get("ProvisionedThroughput", {}).get("WriteCapacityUnits") or 0)
    if billing == "PAY_PER_REQUEST":
        wcu = 0
    return TableInfo(table, region, billing, wcu, ttl_enabled(client, table))


def _shown(shape) -> str:
    return ", ".join(" ".join(attribute) for attribute in shape)


def ttl_enabled(client, table: str) -> bool:
    ttl = client.describe_time_to_live(TableName=table).get("TimeToLiveDescription", {})
    return ttl.get("TimeToLiveStatus") in ("ENABLED", "ENABLING") and ttl.get("AttributeName") == TTL_ATTRIBUTE


def ensure_table(client, table: str, region: str, create: bool) -> TableInfo:
    """The existing table, checked; or a new on-demand one with TTL on `ttl` when `create` is set."""
    info = describe_table(client, table, region)
    if info is None:
        if not create:
            raise PipelineError(
                f"DynamoDB table '{table}' does not exist in {region} (pass --create-table to create it)"
            )
        info = create_table(client, table, region)
    if not info.ttl_enabled:
        log.warning("TTL is not enabled on attribute 'ttl' of table '%s': manifest items will never expire", table)
    return info


def create_table(client, table: str, region: str, timeout: float = 300.0) -> TableInfo:
    log.info("creating DynamoDB table '%s' in %s (on-demand, TTL on 'ttl')", table, region)
    try:
        client.create_table(
            TableName=table, KeySchema=KEY_SCHEMA, AttributeDefinitions=ATTRIBUTES, BillingMode="PAY_PER_REQUEST"
        )
    except ClientError as e:  # another backfill started at the same moment is creating it: wait for that one
        if e.response["Error"]["Code"] != "ResourceInUseException":
            raise
        log.info("table '%s' is being created by another process; waiting for it", table)
    enable_ttl(client, table, region, timeout)
    return describe_table(client, table, region)


def enable_ttl(client, table: str, region: str, timeout: float = 300.0) -> None:
    """TTL on `ttl` once the table is ACTIVE; already on (a concurrent creator, a resumed import) is fine."""
    deadline = time.monotonic() + timeout
    while client.describe_table(TableName=table)["Table"]["TableStatus"] != "ACTIVE":
        if time.monotonic() > deadline:
            raise PipelineError(f"DynamoDB table '{table}' in {region} did not become ACTIVE in {timeout:.0f} s")
        time.sleep(2)
    if ttl_enabled(client, table):
        return
    try:
        client.update_time_to_live(TableName=table,
                                   TimeToLiveSpecification={"Enabled": True, "AttributeName": TTL_ATTRIBUTE})
    except ClientError as e:
        if "already enabled" not in str(e).lower():
            raise


def write_budget(info: TableInfo, requested: float, fraction: float, on_demand_cap: float) -> float:
    """WCU/s the whole backfill may use: what was asked, else a share of provisioned WCU, else the on-demand cap."""
    if requested > 0:
        return float(requested)
    if info.billing_mode == "PAY_PER_REQUEST":
        return float(on_demand_cap)
    if info.write_capacity <= 0:
        raise PipelineError(f"table '{info.name}' reports no provisioned write capacity: pass --max-write-capacity")
    return max(1.0, info.write_capacity * fraction)
