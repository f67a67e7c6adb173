"""The action pass's budget: shared by the partitions in proportion to the targets each acts on."""
from __future__ import annotations

import pytest

from spark import events as ev
from spark.passes import MODES, PassConfig, budget_shares, count_targets, partition_work

NOW = 1_800_000_000.0
CONFIG = PassConfig(ttl_days=180, now=NOW, write_expired=False, endpoints={})
FRESH, OLD = int(NOW) - 86400, int(NOW) - 200 * 86400  # etlTimes whose ttl is ahead and past


def keys(*copies_per_key):
    return [((f"e{i}", "f"), copies) for i, copies in enumerate(copies_per_key)]


def test_shares_follow_the_work_and_add_up_to_the_budget():
    shares = budget_shares(40.0, [1215, 1218, 0, 2430])
    assert shares[0] == pytest.approx(40 * 1215 / 4863) and shares[3] == pytest.approx(40 * 2430 / 4863)
    assert sum(s for s, n in zip(shares, [1215, 1218, 0, 2430]) if n) == pytest.approx(40.0)
    assert shares[2] == 10.0  # nothing to do: an even share, never taken
    assert budget_shares(40.0, [0, 0]) == (20.0, 20.0)


def test_each_mode_counts_the_targets_its_partitions_act_on():
    part = keys(ev.first_copy(FRESH, "r1"),  # one item
                ev.merge_copies(ev.first_copy(FRESH, "r1"), ev.first_copy(FRESH + 5, "r2")),  # a winner, two copies
                ev.first_copy(OLD, "r0"))  # expired
    counted = {name: next(count_targets(3, iter(part), CONFIG, MODES[name].split)) for name in MODES}
    assert counted == {"populate": (3, 2), "import": (3, 2), "clean": (3, 4), "verify": (3, 3)}


def test_partition_work_counts_every_partition_in_order(spark_session):
    part = keys(*[ev.first_copy(FRESH, "r1")] * 5)
    rdd = spark_session.sparkContext.parallelize(part, 3)
    assert partition_work(rdd, CONFIG, MODES["populate"], 3) == [1, 2, 2]
