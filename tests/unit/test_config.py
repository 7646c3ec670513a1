"""params.yaml: defaults, and errors that name the key and what it accepts."""

from __future__ import annotations

from pathlib import Path

import pytest

from transferpilot.config import Params, load_params, parse_params
from transferpilot.errors import ConfigError


def test_empty_file_gives_all_defaults(tmp_path: Path) -> None:
    (tmp_path / "params.yaml").write_text("")
    params = load_params(tmp_path / "params.yaml")
    assert params == Params()
    assert params.model.name == "efficientnet_lite0"
    assert params.prepare.source == Path("data/digits")


def test_project_params_file_is_valid(project_root: Path) -> None:
    params = load_params(project_root / "params.yaml")
    assert params.prepare.val_fraction == pytest.approx(0.2)


def test_unknown_key_names_the_key_and_the_allowed_ones() -> None:
    with pytest.raises(ConfigError) as err:
        parse_params({"prepare": {"val_fractoin": 0.1}}, "params.yaml")
    msg = str(err.value)
    assert "prepare.val_fractoin" in msg
    assert "val_fraction" in msg and "seed" in msg


def test_unknown_section_lists_the_sections() -> None:
    with pytest.raises(ConfigError, match=r"unknown key `trian`.*model, prepare"):
        parse_params({"trian": {}}, "params.yaml")


def test_bad_choice_lists_the_allowed_values() -> None:
    with pytest.raises(ConfigError, match=r"prepare.cross_split_duplicates.*'drop' or 'keep'"):
        parse_params({"prepare": {"cross_split_duplicates": "sometimes"}})


@pytest.mark.parametrize(
    ("section", "match"),
    [
        ({"val_fraction": 1.5}, r"prepare.val_fraction.*less than 1"),
        ({"val_fraction": "lots"}, r"prepare.val_fraction.*valid number"),
        ({"seed": 1.5}, r"prepare.seed"),
        ({"val_fraction": 0.6, "test_fraction": 0.5}, r"must be below 1"),
        ({"min_images_per_class": 1}, r"prepare.min_images_per_class.*greater than or equal to 2"),
    ],
)
def test_bad_values_name_the_key(section: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        parse_params({"prepare": section})


def test_file_models_need_an_arch() -> None:
    with pytest.raises(ConfigError, match="arch"):
        parse_params({"model": {"name": "file:my.safetensors"}})
    ok = parse_params({"model": {"name": "file:my.safetensors", "arch": "timm:resnet18"}})
    assert ok.model.arch == "timm:resnet18"


def test_params_are_frozen() -> None:
    with pytest.raises(ValueError):
        Params().prepare.seed = 3  # type: ignore[misc]


def test_yaml_syntax_error_and_missing_file(tmp_path: Path) -> None:
    (tmp_path / "p.yaml").write_text("prepare: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_params(tmp_path / "p.yaml")
    with pytest.raises(ConfigError, match="not found"):
        load_params(tmp_path / "missing.yaml")
