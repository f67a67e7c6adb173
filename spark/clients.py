"""boto3 clients in Spark tasks: one per service, endpoint and credentials for the life of a Python worker.

Creating a client costs ~0.5 s of CPU here and clients cannot be pickled, so tasks take them from this cache. The
endpoint overrides boto3 reads itself (AWS_ENDPOINT_URL...) travel from the driver with the task: executor
processes may have been started before the driver set them.
"""
from __future__ import annotations

import os
from typing import Dict, Optional

from spark.dynamo import dynamodb_client
from spark.refusals import DEFAULT_CHAIN
from spark.storage import s3_client

ENDPOINT_VARIABLES = ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL_DYNAMODB")

_CLIENTS: Dict[tuple, object] = {}


def endpoints() -> Dict[str, str]:
    """The driver's endpoint overrides, for its tasks."""
    return {name: os.environ[name] for name in ENDPOINT_VARIABLES if os.environ.get(name)}


def use_endpoints(overrides: Dict[str, str]) -> None:
    """Make this executor process's endpoint variables the driver's."""
    for name in ENDPOINT_VARIABLES:
        if name in overrides:
            os.environ[name] = overrides[name]
        else:
            os.environ.pop(name, None)


def task_client(service: str, overrides: Dict[str, str], region: Optional[str] = None,
                credentials: Optional[dict] = None, identity: str = DEFAULT_CHAIN):
    """The worker's S3 or DynamoDB client for these endpoints (and, for DynamoDB, region and credentials), sending
    as `identity` (its label, for the one line a refusal is told in)."""
    use_endpoints(overrides)
    key = (service, tuple(sorted(overrides.items())), region, tuple(sorted((credentials or {}).items())), identity)
    client = _CLIENTS.get(key)
    if client is None:
        client = (s3_client(identity=identity) if service == "s3"
                  else dynamodb_client(region, credentials, identity=identity))
        _CLIENTS[key] = client
    return client
