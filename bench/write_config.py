"""The write benchmark's sizes and targets: each strategy's capacity and items, and the run's other settings."""
from __future__ import annotations

import os
from dataclasses import dataclass, field

# The shredders' condition in Snowplow's DynamoDbStorage, which the original populator reused: the first writer wins.
ORIGINAL_CONDITION = "(attribute_not_exists(eventId) AND attribute_not_exists(fingerprint)) OR etlTime = :tst"
STRATEGIES = ("conditional", "fast", "original")
TARGET_UTILISATION = 0.9
TARGET_WCU_PER_ITEM = 1.05
TARGET_FAST_CPU_MS = 0.3


@dataclass(frozen=True)
class Setup:
    """One strategy's share of a run: its table capacity and how many unique items it writes."""
    capacity: float  # WCU/s of the stand-in and budget of the writer
    items: int  # unique items; the events written hold `duplicates` more


@dataclass(frozen=True)
class Config:
    conditional: Setup
    fast: Setup
    original: Setup
    duplicates: float = 0.03  # extra copies of events, as a fraction of the unique items
    runs: int = 4  # archive runs the events are spread over (an hour apart)
    latency_ms: float = 5.0
    threads: int = 8  # write_items concurrency, as the job's default
    tasks: int = field(default_factory=lambda: os.cpu_count() or 1)  # the original's concurrent tasks
    cpu_rounds: int = 7  # interleaved rounds comparing conditional mode's client CPU with boto3's own per call
    cpu_calls: int = 150  # items (calls) of each measurement in a round
    fast_cpu_items: int = 1000  # items of each fast-mode and boto3 batch_write_item measurement in a round
    seed: int = 1


DEFAULTS = {
    # Measured here (2 busy cores, 5 ms latency): moto serves ~140 conditional puts/s and ~1,700 batched items/s,
    # and the original's two sequential tasks offer ~80 puts/s. 50 WCU/s for the single-put strategies and
    # 1,000 WCU/s for fast mode leave moto headroom, so the budget is what limits, while the original still asks
    # for more than the table has, as it did in production.
    "full": Config(conditional=Setup(50, 1800), fast=Setup(1000, 20000), original=Setup(50, 1800)),
    "quick": Config(conditional=Setup(50, 500), fast=Setup(1000, 4000), original=Setup(50, 500),
                    cpu_rounds=3, cpu_calls=80, fast_cpu_items=500),
}
