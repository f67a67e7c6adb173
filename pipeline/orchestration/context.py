"""A backfill's checked parameters, validated configs and marker store: what every task of it needs.

The order is the contract: everything that needs no AWS call (parameters, configs) is checked first, so a bad
input fails before the pipeline touches AWS. Configs are validated once per process (an HTTP Iglu repository is
asked once, not once per task).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Dict, Optional, Tuple

from pipeline.configs.emr_settings import EmrSettings
from pipeline.configs.emretlrunner import backfill_archive, cluster_settings
from pipeline.configs.params import Params, backfill_id, check_params
from pipeline.configs.storage_config import StorageConfig
from pipeline.configs.storage_config import load_configs as load_config_files
from pipeline.stores.markers import MarkerStore
from spark.refusals import DEFAULT_CHAIN, instance_profile_identity
from spark.storage import Location


@dataclass
class Context:
    """What every task of one backfill needs: checked parameters, validated configs, the marker store."""

    params: Params
    config: StorageConfig
    archive: Location
    store: MarkerStore
    since: Optional[str]
    archive_origin: str = ""  # where the archive came from when not --enriched-archive, for messages
    emr: Optional[Dict[str, Any]] = None  # the EMR runner's checked cluster settings (emretlrunner.cluster_settings)

    @property
    def backfill_id(self) -> str:
        return backfill_id(self.archive, self.config.table, self.store.root)

    def job_identities(self) -> Dict[str, str]:
        """Who the job's requests go as, by service (labels for its one-line refusals): here, the default chain
        of this process and the storage config's identity; on EMR, the cluster's instance profile for S3, and for
        DynamoDB too unless the config has keys."""
        if self.params.runner != "emr":
            return {"s3": DEFAULT_CHAIN, "dynamodb": self.config.identity}
        cluster = instance_profile_identity(EmrSettings.from_mapping(self.emr or {}).job_flow_role)
        return {"s3": cluster, "dynamodb": self.config.identity if self.config.access_key_id else cluster}


_CONFIGS: Dict[Tuple, StorageConfig] = {}


def _file_key(path: str) -> Tuple:
    try:
        st = os.stat(path)
        return path, st.st_mtime_ns, st.st_size
    except OSError:
        return path, None, None


def load_configs(storage_path: str, resolver_path: str) -> StorageConfig:
    """Validated once per process for the same files (unchanged since): every task shares the result."""
    key = (_file_key(storage_path), _file_key(resolver_path))
    if key not in _CONFIGS:
        _CONFIGS[key] = load_config_files(storage_path, resolver_path)
    return _CONFIGS[key]


def load_context(p: Params) -> Context:
    """Parameters, then configs: no AWS call is made before both are valid. An archive the parameters leave out
    comes from config.yml, as do the EMR cluster's settings (under luigi.cfg's [emr] and the explicit ones)."""
    archive, origin = backfill_archive(p.enriched_archive, p.emretlrunner_config, p.runner)
    p = p.replace(enriched_archive=archive)
    checked = check_params(p)
    emr = None
    if p.runner == "emr":
        explicit = {"log_uri": p.log_path, "profile": p.profile, "job_code_uri": p.jar}
        emr = cluster_settings(dict(p.emr), p.emretlrunner_config, explicit)
    config = load_configs(p.storage_config, p.resolver)
    return Context(p, config, checked.archive, MarkerStore(checked.markers, config.table), checked.since, origin,
                   emr)
