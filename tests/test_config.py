"""sertk.config: YAML into dataclasses, with unknown keys and wrong types reported by name."""

from dataclasses import dataclass, field

import pytest

from sertk.config import from_dict, load_config, to_dict, write_yaml
from sertk.errors import SertkError


@dataclass
class Inner:
    lr: float = 0.1
    milestones: list[int] = field(default_factory=list)


@dataclass
class Outer:
    name: str = "x"
    epochs: int = 3
    amp: bool = True
    extra: str | None = None
    inner: Inner = field(default_factory=Inner)
    paper: dict[str, float] = field(default_factory=dict)


def test_nested_values_and_int_to_float():
    cfg = from_dict(Outer, {"epochs": 5, "inner": {"lr": 1, "milestones": [21, 31]}, "paper": {"ua": 0.6}})
    assert cfg.epochs == 5
    assert cfg.inner.lr == 1.0 and isinstance(cfg.inner.lr, float)
    assert cfg.inner.milestones == [21, 31]
    assert cfg.paper == {"ua": 0.6}
    assert cfg.extra is None


def test_unknown_key_is_named():
    with pytest.raises(SertkError, match=r"config\.inner: unknown key\(s\) lrr"):
        from_dict(Outer, {"inner": {"lrr": 0.1}})


@pytest.mark.parametrize(
    "data, where",
    [
        ({"epochs": "5"}, "config.epochs: expected an integer"),
        ({"epochs": 2.5}, "config.epochs: expected an integer"),
        ({"amp": 1}, "config.amp: expected true or false"),
        ({"inner": {"milestones": [1, "b"]}}, r"config.inner.milestones\[1\]: expected an integer"),
        ({"inner": 3}, "config.inner: expected a mapping"),
    ],
)
def test_wrong_types_are_named(data, where):
    with pytest.raises(SertkError, match=where):
        from_dict(Outer, data)


def test_yaml_round_trip_and_errors(tmp_path):
    cfg = from_dict(Outer, {"name": "crnn", "inner": {"milestones": [1]}})
    path = tmp_path / "c.yaml"
    write_yaml(path, cfg)
    assert load_config(Outer, path) == cfg
    assert to_dict(load_config(Outer, path, overrides={"epochs": 9}))["epochs"] == 9
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    with pytest.raises(SertkError, match=r"bad.yaml: line \d+ invalid YAML"):
        load_config(Outer, bad)
    with pytest.raises(SertkError, match="config file not found"):
        load_config(Outer, tmp_path / "missing.yaml")
    listing = tmp_path / "list.yaml"
    listing.write_text("- 1\n- 2\n")
    with pytest.raises(SertkError, match="expected a YAML mapping"):
        load_config(Outer, listing)
