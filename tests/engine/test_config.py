from pathlib import Path

import pytest

from engine.config import load_config
from engine.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("name", ["training_config_v8.yaml", "demo.yaml"])
def test_shipped_configs_are_valid(name):
    cfg = load_config(ROOT / "config" / name)
    assert cfg.training.ensemble >= 2


def test_the_real_config_keeps_the_seed_lessons():
    cfg = load_config(ROOT / "config" / "training_config_v8.yaml")
    assert cfg.walk_forward.train_years == 5
    assert cfg.training.net_arch == [512, 512, 512]
    assert cfg.training.ent_coef == 0.01
    assert cfg.training.ensemble >= 5
    assert str(cfg.dataset_path) == "data/dataset_v8"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("dataset_path: x\ntrainig: {}\n", r"bad\.yaml:2: unknown key 'trainig'"),
        (
            "dataset_path: x\ntraining:\n  ent_coef: lots\n",
            r"bad\.yaml:3: key 'training\.ent_coef'.*'lots'",
        ),
        ("training: {}\n", r"missing required key 'dataset_path'"),
        ("dataset_path: x\ntraining: [1\n", r"bad\.yaml:\d+: not valid YAML"),
        (
            "dataset_path: x\ndata:\n  tickers: [A]\n  start: 2020-01-01\n  end: 2019-01-01\n",
            r"end 2019-01-01 must be after start 2020-01-01",
        ),
    ],
)
def test_bad_configs_name_the_file_line_and_key(tmp_path, text, expected):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=expected) as err:
        load_config(path)
    assert "\n" not in str(err.value)
