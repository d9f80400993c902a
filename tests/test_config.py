"""sertk.config: YAML into dataclasses, with unknown keys and wrong types reported by name."""

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

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
    inner = Inner(lr=0.5)
    assert from_dict(Outer, {"inner": inner}).inner is inner  # a built dataclass passes as it is


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
        ({"epochs": True}, "config.epochs: expected an integer, got True"),
        ({"paper": {"ua": "high"}}, "config.paper.ua: expected a number, got 'high'"),
        ({"name": None}, "config.name: expected a string, got None"),
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


@dataclass
class Typed:
    pooling: Literal["gap", "attention"] = "gap"
    pair: tuple[int, float] = (1, 2.0)
    sizes: tuple[int, ...] = ()
    either: int | str = 0
    rate: float = 1.0
    path: Path | None = None
    derived: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        if self.rate <= 0:
            raise ValueError(f"rate must be positive, got {self.rate}")


def test_literals_tuples_unions_and_checks():
    cfg = from_dict(Typed, {"pooling": "attention", "pair": [3, 4], "sizes": [5, 6], "either": "x"})
    assert cfg.pooling == "attention" and cfg.pair == (3, 4.0) and isinstance(cfg.pair[1], float)
    assert cfg.sizes == (5, 6) and cfg.either == "x" and from_dict(Typed, {"either": 7}).either == 7
    assert from_dict(Typed, {"path": None}).path is None
    for data, message in [
        ({"pooling": "max"}, r"config.pooling: expected one of \['gap', 'attention'\], got 'max'"),
        ({"pair": [1, 2, 3]}, r"config.pair: expected 2 items, got 3"),
        ({"pair": [1, "a"]}, r"config.pair\[1\]: expected a number, got 'a'"),
        ({"sizes": 5}, r"config.sizes: expected a list, got 5"),
        ({"either": 1.5}, r"config.either: expected int or str, got 1.5"),
        ({"either": None}, r"config.either: expected int or str, got None"),
        ({"rate": True}, r"config.rate: expected a number, got True"),
        ({"rate": -1}, r"config: rate must be positive, got -1.0"),
        (
            {"derived": 3},
            r"config: unknown key\(s\) derived \(known: either, pair, path, pooling, rate, sizes\)",
        ),
        ([1], r"config: expected a mapping, got \[1\]"),
    ]:
        with pytest.raises(SertkError, match=message):
            from_dict(Typed, data)


def test_to_dict_gives_plain_yaml_data_and_empty_yaml_gives_defaults(tmp_path):
    plain = to_dict(Typed(pair=(1, 2.0), path=Path("/a/b")))
    assert plain["pair"] == [1, 2.0] and plain["path"] == "/a/b" and plain["derived"] == 0
    empty = tmp_path / "empty.yaml"
    empty.write_text("# nothing set\n")
    assert load_config(Typed, empty) == Typed()
    bad = tmp_path / "bad.yaml"
    bad.write_text("pooling: gap\nrate: [1\n")
    with pytest.raises(SertkError, match=r"bad.yaml: line 3 invalid YAML"):
        load_config(Typed, bad)
