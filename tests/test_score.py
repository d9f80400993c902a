"""Scoring an exp dir (results.json, RESULTS.md, PNGs) on hand-made exp dirs (comparing them: test_compare.py)."""

from __future__ import annotations

import io
import json
import math
from pathlib import Path

import matplotlib.image
import numpy as np
import pytest
from rich.console import Console

import sertk.evaluate.compare as compare_module
import sertk.evaluate.score as score_module
from sertk.errors import SertkError
from sertk.evaluate.posteriors import write_posteriors as write_posterior_table
from sertk.evaluate.score import SYNTHETIC_BANNER, score_experiment, summary_line

CLASSES = ["neu", "hap", "sad", "ang"]
# (label, pred) per test utterance. Hand-computed below:
# fold1 cm rows neu [1,1,0,0] hap [0,1,0,0] sad [0,0,1,0] ang [0,0,1,1]: WA 4/6, UA (.5+1+1+.5)/4 = .75,
#   F1 per class all 2/3 -> macro 2/3.
# fold2 cm rows neu [1,0,0,0] hap [1,0,0,0] sad [0,0,2,0], no ang: WA 3/4, UA (1+0+1)/3 = 2/3,
#   F1 neu 2/3, hap 0, sad 1 (ang absent, left out) -> macro 5/9.
FOLD1 = [("neu", "neu"), ("neu", "hap"), ("hap", "hap"), ("sad", "sad"), ("ang", "ang"), ("ang", "sad")]
FOLD2 = [("neu", "neu"), ("hap", "neu"), ("sad", "sad"), ("sad", "sad")]
METRICS_CSV = (
    "epoch,train_loss,train_acc,valid_loss,valid_wa,valid_ua,lr,seconds\n"
    "1,1.30,0.40,1.25,0.45,0.42,0.0001,3.1\n"
    "2,1.10,0.52,1.15,0.55,0.51,0.0001,3.0\n"
)
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(autouse=True)
def wide_console(monkeypatch):
    """Capture console output without line wrapping, so messages can be matched whole."""
    buffer = io.StringIO()
    quiet = Console(file=buffer, width=500, highlight=False)
    monkeypatch.setattr(score_module, "console", quiet)
    monkeypatch.setattr(compare_module, "console", quiet)
    return buffer


def write_posteriors(path: Path, pairs: list[tuple[str, str]], prefix: str) -> None:
    lines = ["\t".join(["utt", "label", "pred", *CLASSES])]
    for k, (label, pred) in enumerate(pairs):
        post = ["0.700000" if c == pred else "0.100000" for c in CLASSES]
        lines.append("\t".join([f"{prefix}{k:03d}", label, pred, *post]))
    path.write_text("\n".join(lines) + "\n")


def make_exp(
    root: Path,
    name: str = "crnn_discriminative",
    synthetic: bool = True,
    paper: dict | None = None,
    extra: dict | None = None,
    folds: dict[str, list[tuple[str, str]] | None] | None = None,
) -> Path:
    """An exp dir in the documented layout; a fold mapped to None has metrics.csv but no posteriors.tsv."""
    exp = root / name
    exp.mkdir(parents=True)
    folds = {"fold1": FOLD1, "fold2": FOLD2} if folds is None else folds
    folds_json = root / f"{name}_folds.json"
    folds_json.write_text(
        json.dumps(
            {
                "protocol": "random",
                "seed": 0,
                "folds": [
                    {"name": f, "train": [], "valid": [], "test": [], "test_speakers": [f"Ses0{k + 1}F"]}
                    for k, f in enumerate(folds)
                ],
            }
        )
    )
    experiment = {
        "system": "crnn_discriminative",
        "arch": "crnn-att",
        "data": "data/crnn_discriminative",
        "feats": "dump/crnn_discriminative/logmel40",
        "folds": str(folds_json),
        "protocol": "random",
        "classes": CLASSES,
        "synthetic": synthetic,
        "feat": "logmel40",
        **(extra or {}),
    }
    (exp / "experiment.json").write_text(json.dumps(experiment))
    config = "arch: crnn-att\nfeat: logmel40\nprotocol: random\n"
    if paper is not None:
        config += "paper: " + json.dumps(paper) + "\n"
    (exp / "config.yaml").write_text(config)
    for fold, pairs in folds.items():
        (exp / fold).mkdir()
        (exp / fold / "metrics.csv").write_text(METRICS_CSV)
        if pairs is not None:
            write_posteriors(exp / fold / "posteriors.tsv", pairs, prefix=f"{fold}_")
    return exp


def assert_valid_png(path: Path) -> None:
    assert path.read_bytes()[:8] == PNG_MAGIC
    image = matplotlib.image.imread(path)
    assert image.ndim == 3 and image.shape[0] > 50 and image.shape[1] > 50


def test_results_equal_hand_computation(tmp_path):
    exp = make_exp(tmp_path, paper={"ua": 0.623, "wa": 0.610})
    results = score_experiment(exp)
    on_disk = json.loads((exp / "results.json").read_text())
    assert on_disk == results

    assert results["system"] == "crnn_discriminative"
    assert results["protocol"] == "random"
    assert results["classes"] == CLASSES
    assert results["synthetic"] is True
    assert results["arch"] == "crnn-att" and results["feat"] == "logmel40"
    assert results["n_folds"] == 2 and results["missing_folds"] == []
    assert results["paper"] == {"ua": 0.623, "wa": 0.610}

    fold1, fold2 = results["folds"]
    assert fold1["name"] == "fold1" and fold1["n"] == 6 and fold1["test_speakers"] == ["Ses01F"]
    assert fold1["wa"] == pytest.approx(4 / 6)
    assert fold1["ua"] == pytest.approx(0.75)
    assert fold1["macro_f1"] == pytest.approx(2 / 3)
    assert fold2["n"] == 4
    assert fold2["wa"] == pytest.approx(3 / 4)
    assert fold2["ua"] == pytest.approx(2 / 3)
    assert fold2["macro_f1"] == pytest.approx(5 / 9)

    # Sample std of two values a, b is |a - b| / sqrt(2).
    assert results["mean"]["wa"] == pytest.approx((4 / 6 + 3 / 4) / 2)
    assert results["std"]["wa"] == pytest.approx((3 / 4 - 4 / 6) / math.sqrt(2))
    assert results["mean"]["ua"] == pytest.approx((0.75 + 2 / 3) / 2)
    assert results["std"]["ua"] == pytest.approx((0.75 - 2 / 3) / math.sqrt(2))
    assert results["mean"]["macro_f1"] == pytest.approx((2 / 3 + 5 / 9) / 2)
    assert results["std"]["macro_f1"] == pytest.approx((2 / 3 - 5 / 9) / math.sqrt(2))
    assert results["std_ddof"] == 1

    pooled = results["pooled"]
    assert pooled["confusion"] == [[2, 1, 0, 0], [1, 1, 0, 0], [0, 0, 3, 0], [0, 0, 1, 1]]
    assert pooled["n"] == 10
    assert pooled["wa"] == pytest.approx(7 / 10)
    assert pooled["per_class_recall"] == pytest.approx({"neu": 2 / 3, "hap": 1 / 2, "sad": 1.0, "ang": 1 / 2})
    assert pooled["ua"] == pytest.approx((2 / 3 + 1 / 2 + 1 + 1 / 2) / 4)
    assert pooled["macro_f1"] == pytest.approx((2 / 3 + 1 / 2 + 6 / 7 + 2 / 3) / 4)

    for png in ("confusion.png", "learning_curves.png"):
        assert_valid_png(exp / png)
    # Atomic writes leave no temporary siblings behind.
    assert not [p for p in exp.iterdir() if p.name.startswith(".")]


def test_single_fold_std_is_zero_and_absent_class_is_null(tmp_path):
    exp = make_exp(tmp_path, folds={"fold1": FOLD2})
    results = score_experiment(exp)
    assert results["std"] == {"wa": 0.0, "ua": 0.0, "macro_f1": 0.0}
    assert results["std_ddof"] == 0
    # ang never occurs in the reference: its recall is undefined, written as JSON null (not NaN).
    assert results["pooled"]["per_class_recall"]["ang"] is None
    assert "NaN" not in (exp / "results.json").read_text()
    assert "a single fold has no spread" in (exp / "RESULTS.md").read_text()


@pytest.mark.parametrize("synthetic", [True, False])
def test_results_md_banner_only_when_synthetic(tmp_path, synthetic):
    exp = make_exp(tmp_path, synthetic=synthetic, paper={"ua": 0.623, "wa": 0.610, "hap": 0.5})
    results = score_experiment(exp)
    md = (exp / "RESULTS.md").read_text()
    assert (SYNTHETIC_BANNER in md) is synthetic
    assert ("SYNTHETIC" in md.splitlines()[0]) is synthetic
    assert md.startswith("# crnn_discriminative — protocol random")
    assert "| fold1 | Ses01F | 6 | 66.7 | 75.0 | 66.7 |" in md
    assert "| **mean ± std** |  |  | 70.8 ± 5.9 | 70.8 ± 5.9 | 61.1 ± 7.9 |" in md
    assert "sample standard deviation over folds (ddof = 1)" in md
    # Paper beside sertk: UA row and a per-class row (pooled hap recall 1/2).
    assert "| UA | 62.3 | 70.8 ± 5.9 |" in md
    assert "| hap | 50.0 | 50.0 |" in md
    assert "| **neu** | 2 (66.7%) | 1 (33.3%) | 0 (0.0%) | 0 (0.0%) | 66.7 |" in md
    assert "![confusion matrix](confusion.png)" in md and "(learning_curves.png)" in md
    assert summary_line(results) == "UA 0.71 ± 0.06  WA 0.71 ± 0.06" + (
        " (SYNTHETIC data)" if synthetic else ""
    )


def test_missing_fold_warns_and_is_left_out(tmp_path, wide_console):
    exp = make_exp(tmp_path, folds={"fold1": FOLD1, "fold2": FOLD2, "fold3": None})
    results = score_experiment(exp)
    assert [f["name"] for f in results["folds"]] == ["fold1", "fold2"]
    assert results["missing_folds"] == ["fold3"]
    assert (
        f"warning: {exp / 'fold3'}: no posteriors.tsv, fold left out of the results"
        in wide_console.getvalue()
    )
    assert "Missing (no posteriors.tsv, left out): fold3." in (exp / "RESULTS.md").read_text()


def test_no_posteriors_is_an_error(tmp_path):
    exp = make_exp(tmp_path, folds={"fold1": None})
    with pytest.raises(SertkError, match=r"no posteriors\.tsv: run stage 6 \(sertk eval\) first$"):
        score_experiment(exp)
    assert not (exp / "results.json").exists()


def test_corrupt_posteriors_name_file_and_line(tmp_path):
    exp = make_exp(tmp_path)
    path = exp / "fold2" / "posteriors.tsv"
    path.write_text(path.read_text().replace("fold2_001\thap", "fold2_001\tjoy"))
    with pytest.raises(SertkError, match=r"posteriors\.tsv: line 3: unknown class 'joy'"):
        score_experiment(exp)
    path.write_text("utt\tlabel\tpred\tneu\thap\n")
    with pytest.raises(SertkError, match=r"posteriors\.tsv: line 1: header"):
        score_experiment(exp)


def test_reads_posteriors_written_by_inference(tmp_path):
    """Format agreement with the writer of stage 6: its posteriors.tsv scores to the same metrics."""
    exp = make_exp(tmp_path)
    labels = [CLASSES.index(label) for label, _ in FOLD1]
    posteriors = np.full((len(FOLD1), len(CLASSES)), 0.1)
    posteriors[np.arange(len(FOLD1)), [CLASSES.index(pred) for _, pred in FOLD1]] = 0.7
    utts = [f"u{k}" for k in range(len(FOLD1))]
    preds = posteriors.argmax(axis=1)
    write_posterior_table(exp / "fold1" / "posteriors.tsv", utts, labels, (preds, posteriors, None), CLASSES)
    fold1 = score_experiment(exp)["folds"][0]
    assert (fold1["n"], fold1["wa"], fold1["ua"]) == (6, pytest.approx(4 / 6), pytest.approx(0.75))


def test_synthetic_flag_falls_back_to_corpus_json(tmp_path):
    exp = make_exp(tmp_path)
    experiment = json.loads((exp / "experiment.json").read_text())
    del experiment["synthetic"]
    data = tmp_path / "data"
    data.mkdir()
    (data / "corpus.json").write_text(
        json.dumps({"corpus": "synthetic", "synthetic": True, "classes": CLASSES})
    )
    experiment["data"] = str(data)
    (exp / "experiment.json").write_text(json.dumps(experiment))
    assert score_experiment(exp)["synthetic"] is True
    assert SYNTHETIC_BANNER in (exp / "RESULTS.md").read_text()


def test_paper_numbers_follow_the_data_style_and_must_be_fractions(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "corpus.json").write_text(json.dumps({"synthetic": True, "classes": CLASSES, "style": "impro"}))
    paper = {"ua": 0.596, "wa": 0.625, "impro_ua": 0.637, "impro_wa": 0.688}
    exp = make_exp(tmp_path, paper=paper, extra={"data": str(data)})
    assert score_experiment(exp)["paper"] == {"ua": 0.637, "wa": 0.688}

    percent = make_exp(tmp_path, name="percent", paper={"ua": 62.3})
    with pytest.raises(SertkError, match=r"'paper' must map names to fractions"):
        score_experiment(percent)
