"""The generated IAM policies of PopulateManifest's write method (fast with --create-table, conditional), proven
against a moto server that enforces IAM: tests/iam_world.py says how, and what moto cannot prove."""
from __future__ import annotations

from tests.graph import FakeLauncher
from tests.iam_world import ARCHIVE_READ, POPULATE, backfill_exact


def test_write_fast_with_create_table(iam_world):
    world, fake = iam_world, FakeLauncher()
    table, args = "fast", ("--create-table",)
    policies = world.policies("PopulateManifest", table, *args)
    found = world.prove_each_action(policies, lambda: world.fresh(table),
                                    lambda: world.run("PopulateManifest", table, *args, fake=fake),
                                    lambda: world.run("PopulateManifest", table, *args))
    assert found == {
        "pipeline": POPULATE | {"storage-config ManifestTable dynamodb:CreateTable",
                                "storage-config ManifestTable dynamodb:UpdateTimeToLive"},
        "job": {"default-chain ReadArchive s3:GetObject", "storage-config ManifestTable dynamodb:BatchGetItem",
                "storage-config ManifestTable dynamodb:BatchWriteItem"},
        "not needed": set()}
    backfill_exact(world, table, *args)


def test_write_conditional(iam_world):
    world, fake = iam_world, FakeLauncher()
    table, args = "cond", ("--write-mode", "conditional")
    world.create_table(table)
    policies = world.policies("PopulateManifest", table, *args)
    found = world.prove_each_action(policies, lambda: world.clear_markers(table),
                                    lambda: world.run("PopulateManifest", table, *args, fake=fake),
                                    lambda: world.run("PopulateManifest", table, *args),
                                    {**ARCHIVE_READ, **dict.fromkeys(POPULATE, "pipeline")})
    assert found == {"pipeline": POPULATE,
                     "job": set(ARCHIVE_READ) | {"storage-config ManifestTable dynamodb:PutItem"}, "not needed": set()}
    assert world.items(table) == {}  # no dropped action let anything be written
    backfill_exact(world, table, *args)
