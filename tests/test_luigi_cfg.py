"""luigi.cfg is the documented source of every default: it must name each parameter with the code's value."""
import configparser

from pipeline.estimate import Prices
from pipeline.tasks import PopulateManifest
from tests.cli import ROOT

REQUIRED = {"enriched_archive", "storage_config", "resolver", "output_json"}


def read_cfg():
    cfg = configparser.ConfigParser(interpolation=None)
    cfg.read(ROOT / "luigi.cfg")
    return cfg


def test_every_parameter_has_its_default_in_luigi_cfg():
    section = read_cfg()["PopulateManifest"]
    for name, param in PopulateManifest.get_params():
        if name in REQUIRED:
            continue
        assert name in section, f"luigi.cfg [PopulateManifest] lacks {name}"
        assert param.parse(section[name]) == param._default, name


def test_retcodes_and_pricing_match_the_code():
    from pipeline import RETCODES

    cfg = read_cfg()
    assert {k: int(v) for k, v in cfg["retcode"].items()} == RETCODES
    assert Prices.from_mapping(dict(cfg["pricing"])) == Prices()
    assert cfg["core"]["default_scheduler_host"] == "127.0.0.1"
