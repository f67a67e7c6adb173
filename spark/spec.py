"""The batch spec: everything one Spark job needs, as a small JSON object the pipeline stages.

It travels as a file or S3 object, never as step arguments (EMR caps those at 10,240 characters), and it never
holds a secret: `credentials` only names where the staged credentials are.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import List, Optional

WRITE_MODES = ("conditional", "fast")
ETL_TIME_MODES = ("run", "event")
# populate: write the runs' items; clean: delete the items the runs wrote (etlTime equal to theirs); verify: read
# that every valid event has its item with an etlTime at or before its run's, writing nothing; import: write the final
# items of all the runs (collapsed across them) as gzip DynamoDB JSON to `staging`, for DynamoDB's ImportTable.
JOB_MODES = ("populate", "clean", "verify", "import")


@dataclass
class BatchSpec:
    batch_id: str
    archive: str  # s3://bucket/prefix or a local directory holding run=... folders
    runs: List[str]  # run ids, 'YYYY-MM-DD-HH-MM-SS', oldest first
    reports: str  # location where the job writes run=<id>.json reports
    table: str
    region: str
    credentials: Optional[str] = None  # location of {"accessKeyId", "secretAccessKey"}; None = default chain
    ttl_days: int = 180
    etl_time: str = "run"  # 'run': the run's earliest etl_tstamp for all its events (RDB Shredder 0.18+)
    write_mode: str = "conditional"
    max_write_capacity: float = 100.0  # WCU/s for this job, shared by all its writing tasks
    write_parallelism: int = 0  # concurrent writing tasks; 0 = Spark's default parallelism
    max_malformed_fraction: float = 0.01
    write_expired: bool = False
    max_retry_seconds: float = 600.0  # how long one item may keep being throttled before its run fails
    count_only: bool = False  # parse and count, write nothing (the dry run's --count-events)
    now: Optional[float] = None  # epoch seconds used for expiry; None = the job's clock
    mode: str = "populate"  # one of JOB_MODES; clean writes at max_write_capacity (1 WCU per DeleteItem)
    max_read_capacity: float = 0.0  # RCU/s for the verify mode's reads, shared by all its reading tasks
    sample: int = 0  # verify: check this many keys per run, a deterministic random sample; 0 = every key
    sample_seed: int = 0  # verify: another seed draws another sample
    staging: str = ""  # import: the prefix the job writes its part-NNNNN.json.gz objects under
    # Who the job's requests go as, by service ("s3", "dynamodb"): labels for its one-line refusals, never secrets.
    identities: dict = field(default_factory=dict)
    extra: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.mode not in JOB_MODES:
            raise ValueError(f"mode must be one of {JOB_MODES}, not {self.mode!r}")
        if not isinstance(self.sample, int) or self.sample < 0:
            raise ValueError(f"sample must be a whole number of keys, 0 or more, not {self.sample!r}")
        if self.write_mode not in WRITE_MODES:
            raise ValueError(f"write_mode must be one of {WRITE_MODES}, not {self.write_mode!r}")
        if self.etl_time not in ETL_TIME_MODES:
            raise ValueError(f"etl_time must be one of {ETL_TIME_MODES}, not {self.etl_time!r}")

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> BatchSpec:
        return cls(**json.loads(text))
