"""Config loading: TOML + overrides, types, ranges, impossible combinations; each error one line naming the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from scaling.core.config import ConfigError
from scaling.models.factory import load_config
from scaling.core.config.loader import dump_toml, parse_overrides, read_toml, shipped_configs


def test_shipped_tiny_loads_by_name_and_overrides_apply() -> None:
    cfg = load_config("tiny", ["--optim.lr", "3e-4", "--train.steps=70", "--model.channel_mult", "[1, 2]"])
    assert cfg.optim.lr == 3e-4
    assert cfg.train.steps == 70
    assert cfg.model.channel_mult == (1, 2)
    assert "tiny" in shipped_configs()


def test_every_shipped_config_validates() -> None:
    for name in shipped_configs():
        load_config(name)


def test_resolved_config_round_trips_through_toml(tmp_path: Path) -> None:
    cfg = load_config("tiny", ["--loss.recon", "l1"])
    path = tmp_path / "c.toml"
    path.write_text(dump_toml(cfg))
    assert load_config(str(path)) == cfg


def test_int_is_accepted_for_float_but_not_the_reverse() -> None:
    assert load_config("tiny", {"optim": {"lr": 1}}).optim.lr == 1.0
    with pytest.raises(ConfigError, match=r"^train\.steps: expected int, got float"):
        load_config("tiny", {"train": {"steps": 1.5}})


@pytest.mark.parametrize(
    ("override", "pattern"),
    [
        (["--optim.lrr", "1e-3"], r"^optim\.lrr: unknown key \(did you mean optim\.'lr'\?\)$"),
        (["--nosuch.key", "1"], r"^nosuch: unknown key"),
        (["--optim.lr", "fast"], r"^optim\.lr: expected float, got str 'fast'$"),
        (["--optim.lr", "-1"], r"^optim\.lr: must be > 0"),
        (["--optim.betas", "[0.9]"], r"^optim\.betas: expected 2 values, got 1$"),
        (["--data.image_size", "30"], r"^data\.image_size: 30 is not divisible by the model's downsampling factor 4"),
        (["--loss.perceptual_weight", "1.0"], r"^loss\.vgg_weights: required when loss\.perceptual_weight > 0"),
        (["--train.device", "tpu"], r"^train\.device: must be auto, cpu or cuda"),
        (["--model.norm_groups", "5"], r"^model\.base_channels: 16 is not a multiple of model\.norm_groups 5"),
        (["--optim.lr"], r"^override --optim\.lr: missing value$"),
    ],
)
def test_bad_config_is_one_line_naming_the_key(override: list[str], pattern: str) -> None:
    with pytest.raises(ConfigError, match=pattern) as info:
        load_config("tiny", override)
    assert "\n" not in str(info.value)


def test_unknown_config_name_suggests_a_shipped_one() -> None:
    with pytest.raises(ConfigError, match=r"did you mean 'tiny'"):
        load_config("tiyn")


def test_invalid_toml_names_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[optim\nlr = 1")
    with pytest.raises(ConfigError, match=r"bad\.toml: invalid TOML"):
        read_toml(bad)


def test_override_values_parse_as_toml_literals() -> None:
    assert parse_overrides(["--a.b", "true", "--a.c", "hello", "--a.d", '"3"']) == {
        "a": {"b": True, "c": "hello", "d": "3"}}
