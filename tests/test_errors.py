"""Every sertk command against a table of broken inputs: one line naming the file and the problem, no traceback.

Each case runs the real console entry point (``sertk.cli.main``) in-process: a user error must end in
``SystemExit`` with status 1 (our errors) or 2 (usage), and one line on stderr; any other exception escaping
``main`` is the traceback a user would see, and fails the test.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
from helpers import make_feature_dir, make_recipe, run

from sertk.cli import main

pytestmark = pytest.mark.usefixtures("toy_arch")


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A trained and evaluated toy experiment plus a few damaged copies of its files."""
    import _pytest.monkeypatch
    from helpers import ToyModel

    from sertk.evaluate.inference import EvalOptions, evaluate
    from sertk.models import MODELS, SYSTEMS

    patch = _pytest.monkeypatch.MonkeyPatch()
    patch.setitem(MODELS, "toy", ToyModel)
    patch.setitem(SYSTEMS, "toy", "toy_system")
    root = tmp_path_factory.mktemp("world")
    recipe = make_recipe(root)
    run(recipe, root / "exp", fold="1", epochs=1)
    evaluate(root / "exp", EvalOptions(fold="1", device="cpu"))
    (root / "adir").mkdir()
    (root / "junk.bin").write_bytes(b"\x00garbage")
    (root / "bad.yaml").write_text("train: [unclosed\n")
    (root / "unknown_key.yaml").write_text("arch: toy\nfeat: toyfeat\ntrain: {lr: 0.1, colour: blue}\n")
    (root / "user_dir").mkdir()
    (root / "user_dir" / "notes.txt").write_text("mine")
    corrupt = make_feature_dir(root / "corrupt_feats", {"a": np.zeros((3, 6), np.float32)})
    (corrupt / "feats.h5").write_bytes(b"not hdf5 at all")
    no_key = root / "exp_nokey"
    no_key.mkdir()
    (no_key / "experiment.json").write_text(json.dumps({"classes": ["neu"], "data": str(recipe["data"])}))
    bad_json = root / "exp_badjson"
    bad_json.mkdir()
    (bad_json / "experiment.json").write_text("{")
    yield {"root": root, **recipe}
    patch.undo()


def sertk(monkeypatch, capsys, *args: str) -> tuple[int, str]:
    monkeypatch.setattr(sys, "argv", ["sertk", *map(str, args)])
    with pytest.raises(SystemExit) as exit_info:
        main()
    return exit_info.value.code, capsys.readouterr().err


CASES = [
    ("prep, missing root", ["prep", "iemocap", "{root}/nope", "{root}/d"], "IEMOCAP root not found"),
    ("prep, root is a file", ["prep", "iemocap", "{root}/junk.bin", "{root}/d"], "not a directory"),
    ("validate, missing", ["validate", "{root}/nope"], "data dir not found"),
    ("validate, not a data dir", ["validate", "{root}/adir"], "not a data dir"),
    ("folds, out is a dir", ["folds", "{data}", "{root}/adir", "--protocol", "kfold"], "is a directory"),
    ("folds, bad ratios", ["folds", "{data}", "{root}/f.json", "--ratios", "a,b"], "--ratios"),
    ("folds, bad protocol", ["folds", "{data}", "{root}/f.json", "--protocol", "loso"], "'--protocol'"),
    ("feats, unknown feat", ["feats", "{data}", "{root}/f", "--feat", "mfcc99"], "unknown feature"),
    ("feats, bad yaml", ["feats", "{data}", "{root}/f", "--feat-config", "{root}/bad.yaml"], "invalid YAML"),
    (
        "feats, out holds user files",
        ["feats", "{data}", "{root}/user_dir"],
        "holds files sertk did not write",
    ),
    ("train, unknown key", ["train", "--train-config", "{root}/unknown_key.yaml"], "unknown key(s) colour"),
    ("train, missing config", ["train", "--train-config", "{root}/nope.yaml"], "config file not found"),
    (
        "train, corrupt feats.h5",
        [
            "train",
            "--train-config",
            "{conf}",
            "--data",
            "{data}",
            "--folds",
            "{folds}",
            "--feats",
            "{root}/corrupt_feats",
        ],
        "corrupt_feats",
    ),
    ("train, bad precision", ["train", "--precision", "fp8"], "'--precision'"),
    ("eval, no exp", ["eval", "{root}/nope"], "experiment.json: not found"),
    ("eval, missing keys", ["eval", "{root}/exp_nokey"], "missing key(s) feats, folds"),
    ("eval, bad json", ["eval", "{root}/exp_badjson"], "invalid JSON"),
    ("eval, bad tta", ["eval", "{root}/exp", "--tta", "speed"], "'--tta'"),
    ("score, no exp", ["score", "{root}/nope"], "experiment dir not found"),
    ("score, bad json", ["score", "{root}/exp_badjson"], "invalid JSON"),
    ("analyze, bad json", ["analyze", "{root}/exp_badjson"], "invalid JSON"),
    ("package, missing model", ["package", "{root}/nope", "{root}/pkg"], "model not found"),
    ("package, garbage checkpoint", ["package", "{root}/junk.bin", "{root}/pkg"], "cannot load checkpoint"),
    (
        "package, into a user's dir",
        ["package", "{root}/exp/fold1", "{root}/user_dir"],
        "did not write (notes.txt)",
    ),
    ("infer, missing input", ["infer", "{root}/exp/fold1", "{root}/nope.wav"], "no such file or directory"),
    (
        "infer, out is a dir",
        ["infer", "{root}/exp/fold1", "{root}/junk.bin", "--out", "{root}/adir"],
        "is a directory",
    ),
    ("export, out is a dir", ["export", "{root}/exp/fold1", "{root}/adir"], "is a directory"),
    ("export, garbage model", ["export", "{root}/junk.bin", "{root}/m.pt"], "cannot load checkpoint"),
    ("unknown command", ["frobnicate"], "No such command"),
]


@pytest.mark.parametrize("name, args, message", CASES, ids=[c[0] for c in CASES])
def test_broken_inputs_give_one_line(world, monkeypatch, capsys, name, args, message):
    args = [a.format(**{k: str(v) for k, v in world.items()}) for a in args]
    code, err = sertk(monkeypatch, capsys, *args)
    lines = [line for line in err.splitlines() if line.strip()]
    assert code in (1, 2), err
    assert "Traceback" not in err
    assert len([line for line in lines if line.startswith("error:")]) == 1, err
    assert message in lines[-1], err


def test_a_locked_feature_dump_is_one_line(world, monkeypatch, capsys):
    """Another process writing feats.h5 (h5py's file lock) gives one line, not an HDF5 stack."""
    feats = Path(world["feats"])
    with h5py.File(feats / "feats.h5", "r+"):
        code, err = sertk(
            monkeypatch,
            capsys,
            "train",
            "--train-config",
            world["conf"],
            "--data",
            world["data"],
            "--folds",
            world["folds"],
            "--feats",
            feats,
            "--exp",
            world["root"] / "exp_locked",
        )
    assert code == 1 and "Traceback" not in err and "feats.h5" in err.strip().splitlines()[-1]
