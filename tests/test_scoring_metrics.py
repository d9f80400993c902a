"""Gaps found by mutation testing in scoring and comparison: each test names one behaviour, checked by hand."""

from __future__ import annotations

import json
import statistics

import pytest
from test_compare import R, S, make_exp
from test_score import make_exp as make_scored_exp
from test_score import wide_console  # noqa: F401  (autouse: a quiet console for score and compare)

from sertk import provenance
from sertk.errors import SertkError
from sertk.evaluate.compare import CompareOptions, build_comparison
from sertk.evaluate.score import (
    check_fold_provenance,
    find_folds,
    fold_statistics,
    score_experiment,
    up_to_date,
)


def test_fold_statistics_are_the_mean_and_sample_std_over_three_folds():
    # Three folds, where the mean differs from the median (two folds cannot tell them apart).
    values = {"wa": [0.5, 0.6, 0.9], "ua": [0.4, 0.45, 0.8], "macro_f1": [0.3, 0.3, 0.6]}
    folds = [{m: v[k] for m, v in values.items()} for k in range(3)]
    mean, std, ddof = fold_statistics(folds)
    assert ddof == 1
    for metric, v in values.items():
        assert mean[metric] == pytest.approx(statistics.mean(v))
        assert std[metric] == pytest.approx(statistics.stdev(v))


def test_compare_seed_option_reaches_the_bootstrap(tmp_path):
    r, s = make_exp(tmp_path, "R", R), make_exp(tmp_path, "S", S)

    def intervals(seed):
        comp = build_comparison([r, s], options=CompareOptions(n_boot=200, seed=seed))
        return comp.systems[0].interval["ua"], comp.versus[0].pooled_difference["ua"]

    assert intervals(3) == intervals(3)
    assert intervals(3) != intervals(4)


def _stamp_fold(fold_dir, experiment_key: str, train_key: str | None = None) -> provenance.Record:
    """A fold's train record (of ``experiment_key``) and an eval record naming ``train_key`` (default: its own)."""
    train = provenance.Record(stage="train", inputs={"experiment": experiment_key})
    provenance.write_record(provenance.record_path(fold_dir, "train"), train)
    made_from = {"train": train_key or train.key}
    record = provenance.Record(stage="eval", inputs=made_from)
    provenance.write_record(provenance.record_path(fold_dir, "eval"), record, [fold_dir / "posteriors.tsv"])
    return record


def test_score_refuses_posteriors_made_from_another_fold_model(tmp_path):
    exp = make_scored_exp(tmp_path, extra={"provenance_key": "sha256:exp"})
    experiment = json.loads((exp / "experiment.json").read_text())
    keys = {f: _stamp_fold(exp / f, "sha256:exp").key for f in ("fold1", "fold2")}
    assert check_fold_provenance(exp, experiment, ["fold1", "fold2"]) == keys
    # fold2's posteriors name another training run's key than the fold's own train record.
    _stamp_fold(exp / "fold2", "sha256:exp", train_key="sha256:another-model")
    with pytest.raises(SertkError, match=r"fold2/posteriors.tsv: not made from this fold's model"):
        check_fold_provenance(exp, experiment, ["fold1", "fold2"])


def test_results_go_stale_when_a_folds_posteriors_are_remade(tmp_path):
    exp = make_scored_exp(tmp_path, extra={"provenance_key": "sha256:exp"})
    for fold in ("fold1", "fold2"):
        _stamp_fold(exp / fold, "sha256:exp")
    score_experiment(exp)
    assert up_to_date(exp) is not None
    # fold2 evaluated again under other options (another eval key, same training): results.json is stale.
    train_key = provenance.read_record(provenance.record_path(exp / "fold2", "train")).key
    again = provenance.Record(stage="eval", inputs={"train": train_key}, options={"tta": "vtlp"})
    provenance.write_record(
        provenance.record_path(exp / "fold2", "eval"), again, [exp / "fold2" / "posteriors.tsv"]
    )
    assert up_to_date(exp) is None


def test_folds_are_scored_in_folds_json_order_else_in_natural_order(tmp_path):
    exp = tmp_path / "exp"
    for name in ("fold10", "fold2", "fold1", "notes"):
        (exp / name).mkdir(parents=True)
    for name in ("fold10", "fold2", "fold1"):
        (exp / name / "metrics.csv").write_text("")
    assert find_folds(exp, {}) == ["fold1", "fold2", "fold10"]
    listed = {"folds": [{"name": "fold2"}, {"name": "fold10"}, {"name": "fold1"}]}
    assert find_folds(exp, listed) == ["fold2", "fold10", "fold1"]
