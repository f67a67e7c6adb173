"""The generated IAM policies of PopulateManifest's write method (fast with --create-table, conditional), proven
against a moto server that enforces IAM: tests/iam_world.py says how, and what moto cannot prove."""
from __future__ import annotations

import time
from typing import Iterator

import pytest

from tests.graph import FakeLauncher
from tests.iam_world import ARCHIVE_READ, POPULATE, World, enforcing, markers_exact


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Iterator[World]:
    with enforcing(tmp_path_factory.mktemp("iam")) as found:
        yield found


@pytest.fixture
def fake() -> FakeLauncher:
    return FakeLauncher()


def test_write_fast_with_create_table(world, fake):
    table, args = "fast", ("--create-table",)
    policies = world.policies("PopulateManifest", table, *args)

    def reset():
        world.drop_table(table)
        world.clear_markers(table)

    found = world.prove_each_action(policies, reset, lambda: world.run("PopulateManifest", table, *args, fake=fake),
                                    lambda: world.run("PopulateManifest", table, *args))
    assert found == {
        "pipeline": POPULATE | {"storage-config ManifestTable dynamodb:CreateTable",
                                "storage-config ManifestTable dynamodb:UpdateTimeToLive"},
        "job": {"default-chain ReadArchive s3:GetObject", "storage-config ManifestTable dynamodb:BatchGetItem",
                "storage-config ManifestTable dynamodb:BatchWriteItem"},
        "not needed": set()}
    done = world.run("PopulateManifest", table, *args)
    assert done.returncode == 0, done.stderr[-3000:]
    assert world.items(table) == world.truth.expected_items(now=time.time())
    markers_exact(world, table)


def test_write_conditional(world, fake):
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
    done = world.run("PopulateManifest", table, *args)
    assert done.returncode == 0, done.stderr[-3000:]
    assert world.items(table) == world.truth.expected_items(now=time.time())
    markers_exact(world, table)
