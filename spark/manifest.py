"""The manifest item, exactly as Snowplow's shredders write it, and the table's key schema.

One item per (eventId, fingerprint): `etlTime` is the epoch seconds of the run that first holds the event and `ttl`
the epoch seconds DynamoDB deletes it at. The job writes, deletes, reads and stages items through these shapes
only, and the pipeline creates and checks the table with the same key schema.
"""
from __future__ import annotations

import json
from typing import Dict, List, NamedTuple, Tuple

EVENT_ID, FINGERPRINT, ETL_TIME, TTL = "eventId", "fingerprint", "etlTime", "ttl"
KEY_SCHEMA = [
    {"AttributeName": EVENT_ID, "KeyType": "HASH"},
    {"AttributeName": FINGERPRINT, "KeyType": "RANGE"},
]
ATTRIBUTES = [  # the table's AttributeDefinitions: its two key attributes, both strings
    {"AttributeName": EVENT_ID, "AttributeType": "S"},
    {"AttributeName": FINGERPRINT, "AttributeType": "S"},
]
TTL_ATTRIBUTE = TTL  # the table's TimeToLive attribute

Key = Tuple[str, str]  # (event_id, fingerprint)


class ManifestItem(NamedTuple):
    event_id: str
    fingerprint: str
    etl_time: int  # epoch seconds
    ttl: int  # epoch seconds
    run: str  # the run the item is counted for (not stored)


def item_attributes(item: ManifestItem) -> Dict[str, dict]:
    """The item exactly as the shredders write it."""
    return {
        EVENT_ID: {"S": item.event_id},
        FINGERPRINT: {"S": item.fingerprint},
        ETL_TIME: {"N": str(item.etl_time)},
        TTL: {"N": str(item.ttl)},
    }


def key_attributes(event_id: str, fingerprint: str) -> Dict[str, dict]:
    """The item's primary key as DynamoDB takes it."""
    return {EVENT_ID: {"S": event_id}, FINGERPRINT: {"S": fingerprint}}


def key_of(attributes: Dict[str, dict]) -> Key:
    """(event_id, fingerprint) of an item or key as DynamoDB returns it."""
    return attributes[EVENT_ID]["S"], attributes[FINGERPRINT]["S"]


def key_shape(schema: List[dict], definitions: List[dict]) -> List[Tuple[str, str, str]]:
    """(name, type, key type) of each key attribute of a described table, '?' for a type it does not define."""
    types = {a["AttributeName"]: a["AttributeType"] for a in definitions}
    return [(k["AttributeName"], types.get(k["AttributeName"], "?"), k["KeyType"]) for k in schema]


MANIFEST_KEY_SHAPE = key_shape(KEY_SCHEMA, ATTRIBUTES)


def import_line(item: ManifestItem) -> bytes:
    """The item as ImportTable's DYNAMODB_JSON input format reads it: {"Item": {...}} on a line."""
    return json.dumps({"Item": item_attributes(item)}, separators=(",", ":")).encode("utf-8") + b"\n"
