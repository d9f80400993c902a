"""Recipe smoke tests: each one-system egs/iemocap/run_*.sh end to end on the demo's tiny synthetic
corpus (1 epoch, 1 fold, CPU), and offline augmentation inside a recipe."""

import json

import pytest
import yaml
from recipes import QUICK, RECIPES, RESULT_KEYS, run


@pytest.mark.parametrize(
    "script",
    [r for r in RECIPES if r not in ("run_crnn_discriminative.sh", "run_ssl.sh")],
)
def test_each_system_recipe_end_to_end(demo_run, script):
    recipe, _ = demo_run
    corpus = recipe / "corpus" / "iemocap"
    out = run(
        recipe,
        script,
        "--iemocap-root",
        str(corpus),
        *QUICK,
    )
    exp = next(
        line.split("score: ")[1].split(" ->")[0]
        for line in (out.stdout + out.stderr).splitlines()
        if "Stage 7: score: " in line
    )
    results = json.loads((recipe / exp / "results.json").read_text())
    assert RESULT_KEYS <= set(results)
    assert results["synthetic"] is True
    assert len(results["folds"]) == 1 and results["folds"][0]["n"] > 0


def test_augment_speed_and_specaug_train_on_copies_of_training_utterances_only(demo_run):
    recipe, _ = demo_run
    corpus = recipe / "corpus" / "iemocap"
    out = run(
        recipe, "run_lstm_attention.sh", "--iemocap-root", str(corpus), "--augment", "speed,specaug", *QUICK
    )
    assert "Stage 4: augment: data/lstm_attention -> data/lstm_attention_aug-speed-specaug" in out.stdout
    folds = json.loads((recipe / "data" / "lstm_attention_aug-speed-specaug" / "folds.json").read_text())
    original = json.loads((recipe / "data" / "lstm_attention" / "folds.json").read_text())
    for fold, base in zip(folds["folds"], original["folds"], strict=True):
        assert fold["valid"] == base["valid"] and fold["test"] == base["test"]
        copies = {u for u in fold["train"] if u.startswith("sp")}
        assert copies == {f"sp{f}-{u}" for f in ("0.9", "1.1") for u in base["train"]}
    exp = recipe / "exp" / "lstm_attention_aug-speed-specaug"
    config = yaml.safe_load((exp / "config.yaml").read_text())
    assert config["input"]["specaugment"]["freq_masks"] == 2
    assert json.loads((exp / "results.json").read_text())["folds"][0]["n"] == len(
        original["folds"][0]["test"]
    )
