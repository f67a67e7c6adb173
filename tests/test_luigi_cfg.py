"""luigi.cfg is the documented source of every default: it must name each parameter with the code's value."""
import configparser

import luigi
import pytest

from pipeline.reports.estimate import Prices
from pipeline.tasks.maintenance import CleanManifest, VerifyManifest
from pipeline.tasks.populate import PopulateManifest
from tests.cli import ROOT

REQUIRED = {"enriched_archive", "storage_config", "resolver"}


def read_cfg():
    cfg = configparser.ConfigParser(interpolation=None)
    cfg.read(ROOT / "luigi.cfg")
    return cfg


@pytest.mark.parametrize("task", [PopulateManifest, CleanManifest, VerifyManifest])
def test_every_parameter_has_its_default_in_luigi_cfg(task):
    """A task's own section, or [PopulateManifest] for what it shares with it, names each default."""
    cfg = read_cfg()
    for name, param in task.get_params():
        if name in REQUIRED:
            continue
        section = cfg[task.__name__] if name in cfg[task.__name__] else cfg["PopulateManifest"]
        assert name in section, f"luigi.cfg has no default for {task.__name__} --{name.replace('_', '-')}"
        assert param.parse(section[name]) == param._default, name


def test_maintenance_tasks_read_shared_settings_from_populate_section():
    config = luigi.configuration.get_config()
    config.set("PopulateManifest", "markers", "s3://ops/elsewhere")
    try:
        task = CleanManifest(storage_config="s.json", resolver="r.json", runs="2026-05-01-00-00-00")
        assert task.markers == "s3://ops/elsewhere"
    finally:
        config.remove_option("PopulateManifest", "markers")


def test_retcodes_and_pricing_match_the_code():
    from pipeline.tasks.console import RETCODES

    cfg = read_cfg()
    assert {k: int(v) for k, v in cfg["retcode"].items()} == RETCODES
    assert Prices.from_mapping(dict(cfg["pricing"])) == Prices()
    assert (cfg["core"]["scheduler_host"], cfg["core"]["scheduler_port"]) == ("127.0.0.1", "8082")
    assert not any(name.startswith("default_scheduler") for name in cfg["core"])  # read with a warning


def test_batches_trust_the_scheduler_for_their_dependencies():
    """A batch luigid hands out may depend on validation another process ran (pipeline/__init__.py)."""
    cfg = read_cfg()
    assert cfg["worker"]["check_unfulfilled_deps"] == "false"
    assert luigi.worker.worker().check_unfulfilled_deps is False
