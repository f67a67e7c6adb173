"""The generated IAM policies of the import method, VerifyManifest and CleanManifest, proven against a moto server
that enforces IAM: tests/iam_world.py says how, and what moto cannot prove."""
from __future__ import annotations

import time

from pipeline.stores.records import cleaned_store, verified_store
from tests.graph import FakeLauncher
from tests.iam_world import (
    ARCHIVE_READ,
    NOT_NEEDED,
    PLANNING,
    POPULATE,
    TABLE_READ,
    backfill_exact,
    seed,
    stage_items,
)


def test_import(iam_world):
    world, fake = iam_world, FakeLauncher()
    table, args = "imported", ("--method", "import")
    policies = world.policies("PopulateManifest", table, *args)
    fake.before_reports = stage_items
    found = world.prove_each_action(policies, lambda: world.fresh(table),
                                    lambda: world.run("PopulateManifest", table, *args, fake=fake),
                                    lambda: world.run("PopulateManifest", table, *args), ARCHIVE_READ,
                                    NOT_NEEDED)
    assert found == {"pipeline": POPULATE | {"storage-config ManifestTable dynamodb:ImportTable",
                                             "storage-config ManifestTable dynamodb:UpdateTimeToLive",
                                             "storage-config DescribeImports dynamodb:DescribeImport"},
                     "job": set(ARCHIVE_READ), "not needed": NOT_NEEDED}
    backfill_exact(world, table, *args)


def test_verify_then_clean(iam_world):
    world, fake = iam_world, FakeLauncher()
    table = "maint"
    expected = seed(world, table)

    def restore():  # the populate markers back as seeded, nothing else under the table's folder
        world.clear_markers(table)
        for run in world.runs:
            world.store(table).mark(run, {"run": run})

    policies = world.policies("VerifyManifest", table)
    found = world.prove_each_action(policies, restore, lambda: world.run("VerifyManifest", table, fake=fake),
                                    lambda: world.run("VerifyManifest", table), {**ARCHIVE_READ, **TABLE_READ})
    assert found == {"pipeline": PLANNING, "not needed": set(),
                     "job": set(ARCHIVE_READ) | {"storage-config ManifestTable dynamodb:BatchGetItem"}}
    done = world.run("VerifyManifest", table)
    assert done.returncode == 0, done.stderr[-3000:]
    verified = verified_store(world.store(table))
    for run in world.runs:  # every key of the run found, none missing
        counts = verified.read_marker(run)["report"]["counts"]
        assert (counts["found"], counts["missing"]) == (len(world.truth.expected_items(now=time.time(), runs=[run])), 0)

    runs = ("--runs", ",".join(world.runs))
    policies = world.policies("CleanManifest", table, *runs)
    # planning (maintenance_plan.py) and the batch's specs and reports (lifecycle.py) are the verify's code, just shown
    shown = {**ARCHIVE_READ, **dict.fromkeys(PLANNING, "pipeline")}
    found = world.prove_each_action(policies, restore, lambda: world.run("CleanManifest", table, *runs, fake=fake),
                                    lambda: world.run("CleanManifest", table, *runs), shown)
    assert found == {"pipeline": PLANNING | {"default-chain MarkersLeasesReports s3:DeleteObject"}, "not needed": set(),
                     "job": set(ARCHIVE_READ) | {"storage-config ManifestTable dynamodb:DeleteItem"}}
    assert world.items(table) == expected  # no dropped action let anything be deleted
    done = world.run("CleanManifest", table, *runs)
    assert done.returncode == 0, done.stderr[-3000:]
    assert world.items(table) == {}
    assert world.store(table).done_runs() == set() and cleaned_store(world.store(table)).done_runs() == set(world.runs)
