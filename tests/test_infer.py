"""``sertk infer``: posteriors as computed by hand, any audio format, error records, ensembles, windows.

Also the batched prediction under it (``sertk.models.predict``): length-sorted batches, row caps, precisions.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from test_package import CLASSES, FEAT_CONFIG, write_checkpoint, write_wave
from typer.testing import CliRunner

import sertk.deploy.infer as infer_module
from sertk.augment.vtlp import FixedVtlp
from sertk.cli import app
from sertk.deploy.infer import InferOptions, Predictor, collect_inputs, format_record, infer, tsv_header
from sertk.deploy.package import load_models
from sertk.errors import SertkError
from sertk.features import build_feature
from sertk.inputs.config import InputConfig
from sertk.inputs.featureset import MemoryFrames, build_feature_set
from sertk.models.predict import autocast, rows_per_batch, utterance_posteriors

CPU = InferOptions(device="cpu")


def by_hand(fold_dir, wave, start=0, frames=None):
    """Posteriors of one mono 16 kHz wave (or a frame window of it) computed alone from best.pt."""
    package = load_models(fold_dir)[0]
    feats = build_feature("logmel40", FEAT_CONFIG).compute(
        torch.from_numpy(wave)[None], torch.tensor([len(wave)])
    )
    feats = feats[:, start : None if frames is None else start + frames]
    x = (feats - package.norm_mean) / package.norm_std
    with torch.no_grad():
        return package.build()(x, torch.tensor([x.shape[1]])).softmax(-1)[0].numpy()


def posteriors(record):
    return np.array([record["posteriors"][c] for c in CLASSES])


def test_records_match_a_hand_computation_and_survive_bad_files(tmp_path):
    write_checkpoint(tmp_path / "fold1")
    clips = tmp_path / "clips"
    (clips / "sub").mkdir(parents=True)
    mono = write_wave(clips / "a.wav", 1.3, seed=1)
    write_wave(clips / "sub" / "b.flac", 0.8, seed=2)
    # Same samples in two identical channels: the downmix must give exactly the mono result.
    write_wave(tmp_path / "stereo.wav", 1.3, channels=2, seed=1)
    write_wave(tmp_path / "rate8k.wav", 1.0, rate=8000, seed=3)
    (tmp_path / "corrupt.wav").write_bytes(b"RIFF....WAVEjunk")
    write_wave(tmp_path / "empty.wav", 0.0)
    inputs = [
        clips,
        tmp_path / "stereo.wav",
        tmp_path / "corrupt.wav",
        tmp_path / "empty.wav",
        tmp_path / "rate8k.wav",
    ]
    stream = io.StringIO()
    records = infer(tmp_path / "fold1", inputs, None, InferOptions(device="cpu", batch_size=2), stream=stream)
    assert [json.loads(line) for line in stream.getvalue().splitlines()] == records
    assert [r["utt"] for r in records] == ["a", "sub/b", "stereo", "corrupt", "empty", "rate8k"]
    by_utt = {r["utt"]: r for r in records}
    np.testing.assert_allclose(posteriors(by_utt["a"]), by_hand(tmp_path / "fold1", mono), atol=2e-6)
    np.testing.assert_allclose(posteriors(by_utt["stereo"]), posteriors(by_utt["a"]), atol=2e-6)
    assert by_utt["a"]["label"] == CLASSES[int(np.argmax(posteriors(by_utt["a"])))]
    assert "cannot read audio" in by_utt["corrupt"]["error"] and "label" not in by_utt["corrupt"]
    assert "empty audio file" in by_utt["empty"]["error"]
    assert abs(sum(by_utt["rate8k"]["posteriors"].values()) - 1) < 1e-5


def test_ensemble_of_folds_averages_posteriors_and_tsv_output(tmp_path):
    for k in (1, 2):
        write_checkpoint(tmp_path / "exp" / f"fold{k}", seed=k)
    wave = write_wave(tmp_path / "x.wav", 1.1)
    (tmp_path / "wav.scp").write_text(f"utt1 {tmp_path / 'x.wav'}\nutt2 {tmp_path / 'missing.wav'}\n")
    assert collect_inputs([tmp_path / "wav.scp"]) == [
        ("utt1", str(tmp_path / "x.wav")),
        ("utt2", str(tmp_path / "missing.wav")),
    ]
    records = infer(tmp_path / "exp", [tmp_path / "wav.scp"], None, CPU, stream=io.StringIO())
    expected = (by_hand(tmp_path / "exp" / "fold1", wave) + by_hand(tmp_path / "exp" / "fold2", wave)) / 2
    np.testing.assert_allclose(posteriors(records[0]), expected, atol=2e-6)
    assert "error" in records[1]
    infer(
        tmp_path / "exp", [tmp_path / "wav.scp"], tmp_path / "out.tsv", InferOptions(fmt="tsv", device="cpu")
    )
    header, *rows = [line.split("\t") for line in (tmp_path / "out.tsv").read_text().splitlines()]
    assert header == ["utt", "kind", "start", "end", "label", *CLASSES, "error"]
    assert rows[0][:2] == ["utt1", "utt"] and rows[0][-1] == ""
    np.testing.assert_allclose([float(v) for v in rows[0][5:9]], expected, atol=2e-6)
    assert rows[1][:2] == ["utt2", "error"] and "missing.wav" in rows[1][-1]


def test_windows_give_a_track_of_window_posteriors(tmp_path):
    write_checkpoint(tmp_path / "fold1")
    wave = write_wave(tmp_path / "long.wav", 2.5, seed=4)
    write_wave(tmp_path / "short.wav", 0.5, seed=5)
    records = infer(
        tmp_path / "fold1",
        [tmp_path / "long.wav", tmp_path / "short.wav"],
        None,
        InferOptions(window=1.0, hop=0.5, device="cpu"),
        stream=io.StringIO(),
    )
    long, short = records
    # logmel40: 248 frames at 100 frames/s -> windows of 100 frames every 50: starts 0, 50, 100, 148 excluded.
    assert [(w["start"], w["end"]) for w in long["windows"]] == [(0.0, 1.0), (0.5, 1.5), (1.0, 2.0)]
    np.testing.assert_allclose(
        posteriors(long["windows"][1]), by_hand(tmp_path / "fold1", wave, 50, 100), atol=2e-6
    )
    np.testing.assert_allclose(posteriors(long), by_hand(tmp_path / "fold1", wave), atol=2e-6)
    assert [(w["start"], w["end"]) for w in short["windows"]] == [(0.0, 0.48)]


def test_segment_models_average_their_segments_inside_each_window(tmp_path):
    write_checkpoint(tmp_path / "fold1", arch="attn-pool", segment_frames=60, segment_shift_test=20)
    wave = write_wave(tmp_path / "a.wav", 1.5, seed=6)
    record = infer(
        tmp_path / "fold1",
        [tmp_path / "a.wav"],
        None,
        InferOptions(window=1.0, hop=1.0, device="cpu"),
        io.StringIO(),
    )[0]
    # The 1 s window (100 frames) holds segments at 0, 20, 40 of 60 frames.
    segments = [by_hand(tmp_path / "fold1", wave, s, 60) for s in (0, 20, 40)]
    np.testing.assert_allclose(posteriors(record["windows"][0]), np.mean(segments, axis=0), atol=2e-6)


def test_cli_help_and_one_line_errors(tmp_path):
    code = "import sys; from sertk.cli import main; sys.argv = ['sertk'] + sys.argv[1:]; main()"
    for command in ("package", "infer", "export"):
        out = CliRunner().invoke(app, [command, "--help"])
        assert out.exit_code == 0 and f"sertk {command}" in out.stdout
    out = subprocess.run(
        [sys.executable, "-c", code, "infer", str(tmp_path / "none"), "x.wav"], capture_output=True, text=True
    )
    assert out.returncode == 1
    assert [line for line in out.stderr.splitlines() if line] == [
        f"error: {tmp_path / 'none'}: model not found (expected a package, a best.pt, a fold or an exp dir)"
    ]


def test_window_options_are_checked(tmp_path):
    write_checkpoint(tmp_path / "fold1")
    write_wave(tmp_path / "a.wav", 0.5)
    from sertk.errors import SertkError

    with pytest.raises(SertkError, match="--window and --hop"):
        infer(tmp_path / "fold1", [tmp_path / "a.wav"], None, InferOptions(window=1.0, device="cpu"))


@pytest.mark.parametrize("arch", ["crnn-att", "attn-pool"])
def test_length_sorted_batches_give_the_one_by_one_posteriors_in_input_order(tmp_path, arch):
    write_checkpoint(tmp_path / "fold1", arch=arch)
    seconds = [1.7, 0.6, 2.4, 0.9, 1.3, 2.0, 0.75]  # not sorted: chunks of 3 regroup them by length
    paths = [tmp_path / f"f{i}.wav" for i in range(len(seconds))]
    for i, (path, length) in enumerate(zip(paths, seconds, strict=True)):
        write_wave(path, length, seed=i)
    batched = infer(tmp_path / "fold1", paths, None, InferOptions(device="cpu", batch_size=3), io.StringIO())
    alone = infer(tmp_path / "fold1", paths, None, InferOptions(device="cpu", batch_size=1), io.StringIO())
    assert [r["utt"] for r in batched] == [p.stem for p in paths] == [r["utt"] for r in alone]
    for one, other in zip(batched, alone, strict=True):
        np.testing.assert_allclose(posteriors(one), posteriors(other), atol=2e-6)


def test_infer_passes_the_models_own_vtlp_copies_and_boundary(tmp_path, monkeypatch):
    write_checkpoint(tmp_path / "fold1", tta="vtlp", vtlp_boundary=0.8)
    write_wave(tmp_path / "a.wav", 1.2, seed=4)
    seen = []
    real = infer_module.utterance_posteriors

    def spy(model, fset, device, batch_size, normalizer, transforms, vote):
        seen.append(([t.alpha for t in transforms], {t.boundary for t in transforms}, vote))
        return real(model, fset, device, batch_size, normalizer, transforms, vote=vote)

    monkeypatch.setattr(infer_module, "utterance_posteriors", spy)
    infer(tmp_path / "fold1", [tmp_path / "a.wav"], None, CPU, stream=io.StringIO())
    ((alphas, boundaries, vote),) = seen
    np.testing.assert_allclose(alphas, [0.90 + 0.02 * i for i in range(11)])
    assert boundaries == {0.8} and vote


def test_a_model_trained_with_vtlp_voting_is_scored_by_its_vote(tmp_path):
    """input.tta vtlp (cnn_blstm_vtlp.txt §3.4): infer scores 11 VTLP copies by majority vote, as eval does."""
    write_checkpoint(tmp_path / "fold1", tta="vtlp")
    wave = write_wave(tmp_path / "a.wav", 1.2, seed=4)
    (record,) = infer(tmp_path / "fold1", [tmp_path / "a.wav"], None, CPU, stream=io.StringIO())
    package = load_models(tmp_path / "fold1")[0]
    feats = build_feature("logmel40", FEAT_CONFIG).compute(
        torch.from_numpy(wave)[None], torch.tensor([len(wave)])
    )
    votes = np.zeros(len(CLASSES))
    for alpha in [0.90 + 0.02 * i for i in range(11)]:
        warped, _ = FixedVtlp(alpha, package.input.vtlp_boundary)(feats, torch.tensor([feats.shape[1]]))
        x = (warped - package.norm_mean) / package.norm_std
        with torch.no_grad():
            votes[int(package.build()(x, torch.tensor([x.shape[1]])).argmax())] += 1 / 11
    np.testing.assert_allclose(posteriors(record), votes, atol=1e-9)


def test_collect_inputs_ids_for_upper_case_suffixes_and_repeated_or_clashing_names(tmp_path):
    """Upper-case suffixes count as audio; the same file twice is one item; a second file with a taken
    id is named by its path."""
    (tmp_path / "dir").mkdir()
    write_wave(tmp_path / "dir" / "A.WAV", 0.1)
    write_wave(tmp_path / "dir" / "b.wav", 0.1)
    for sub in ("x", "y"):
        (tmp_path / sub).mkdir()
        write_wave(tmp_path / sub / "c.wav", 0.1)
    first, second = str(tmp_path / "x" / "c.wav"), str(tmp_path / "y" / "c.wav")
    items = collect_inputs([tmp_path / "dir", tmp_path / "x" / "c.wav", tmp_path / "x" / "c.wav", second])
    assert items == [
        ("A", str(tmp_path / "dir" / "A.WAV")),
        ("b", str(tmp_path / "dir" / "b.wav")),
        ("c", first),
        (second, second),
    ]


def test_length_chunks_go_from_shortest_to_longest_in_chunks_of_batch_size(tmp_path):
    seconds = [1.7, 0.6, 2.4, 0.9]
    items = [(f"f{i}", str(tmp_path / f"f{i}.wav")) for i in range(len(seconds))]
    for (_, path), length in zip(items, seconds, strict=True):
        write_wave(path, length)
    items.insert(2, ("gone", str(tmp_path / "gone.wav")))
    chunks, errors = infer_module.length_chunks(items, 16000, 3)
    # Indices after the insert: 0 -> 1.7 s, 1 -> 0.6 s, 2 -> missing, 3 -> 2.4 s, 4 -> 0.9 s.
    assert chunks == [[1, 4, 0], [3]]
    assert list(errors) == [2] and "gone.wav" in errors[2]


def respell_features(ckpt, feat_config: dict) -> None:
    """Rewrite a checkpoint with another recorded feature config (its weights unchanged)."""
    torch.save({**torch.load(ckpt, weights_only=True), "feat_config": feat_config}, ckpt)


def test_ensemble_across_feature_configs_averages_files_and_windows_over_all_models(tmp_path):
    """Two folds whose feature configs are spelled differently (two feature groups of one model each):
    the file's and each window's posteriors are the mean over both models, not a sum over groups.
    (2 s: 198 frames, windows of 100 frames start at 0 and 50.)"""
    write_checkpoint(tmp_path / "exp" / "fold1", seed=1)
    ckpt = write_checkpoint(tmp_path / "exp" / "fold2", seed=2)
    respell_features(ckpt, {**FEAT_CONFIG, "dither": 0.0})  # same features, other key
    wave = write_wave(tmp_path / "long.wav", 2.0, seed=4)
    (record,) = infer(
        tmp_path / "exp",
        [tmp_path / "long.wav"],
        None,
        InferOptions(window=1.0, hop=0.5, device="cpu"),
        stream=io.StringIO(),
    )
    folds = [tmp_path / "exp" / "fold1", tmp_path / "exp" / "fold2"]
    np.testing.assert_allclose(
        posteriors(record), np.mean([by_hand(f, wave) for f in folds], axis=0), atol=2e-6
    )
    np.testing.assert_allclose(
        posteriors(record["windows"][1]),
        np.mean([by_hand(f, wave, 50, 100) for f in folds], axis=0),
        atol=2e-6,
    )


def test_window_tracks_of_models_with_different_frame_rates_are_refused(tmp_path):
    write_checkpoint(tmp_path / "exp" / "fold1")
    ckpt = write_checkpoint(tmp_path / "exp" / "fold2")
    respell_features(ckpt, {**FEAT_CONFIG, "frame_shift_ms": 20.0})
    write_wave(tmp_path / "a.wav", 1.05)
    # 16800 samples: 100 frames/s gives 103 frames, windows of 100 every 2 start at 0, 2 (two windows);
    # 50 frames/s gives 52 frames, windows of 50 every 1 start at 0, 1, 2 (three).
    with pytest.raises(SertkError, match="different frame rates"):
        infer(
            tmp_path / "exp",
            [tmp_path / "a.wav"],
            None,
            InferOptions(window=1.0, hop=0.02, device="cpu"),
            stream=io.StringIO(),
        )


def test_bad_option_values_and_mismatched_features_are_refused(tmp_path):
    ckpt = write_checkpoint(tmp_path / "fold1")
    packages = load_models(tmp_path / "fold1")
    with pytest.raises(SertkError, match="--batch-size must be >= 1, got 0"):
        Predictor(packages, "cpu", batch_size=0)
    for window, hop in ((0.0, 0.5), (1.0, 0.0), (-1.0, 0.5)):
        with pytest.raises(SertkError, match="--window and --hop"):
            Predictor(packages, "cpu", window=window, hop=hop)
    write_wave(tmp_path / "a.wav", 0.5)
    with pytest.raises(SertkError, match="--format csv: expected one of jsonl, tsv"):
        infer(tmp_path / "fold1", [tmp_path / "a.wav"], None, InferOptions(fmt="csv", device="cpu"))
    # A model trained on 40 mel bins given a 64-bin feature config: refused before any audio is read.
    respell_features(ckpt, {"num_mel_bins": 64})
    with pytest.raises(SertkError, match="model expects 40-dim features, logmel40 gives 64"):
        Predictor(load_models(tmp_path / "fold1"), "cpu")


def test_tsv_rows_have_the_headers_columns_and_window_rows_their_bounds():
    header = tsv_header(CLASSES).split("\t")
    error = format_record({"utt": "u", "path": "p.wav", "error": "p.wav: bad"}, "tsv", CLASSES)
    assert [row.split("\t") for row in error] == [["u", "error", "", "", "", "", "", "", "", "p.wav: bad"]]
    probs = dict(zip(CLASSES, [0.1, 0.2, 0.3, 0.4], strict=True))
    window = {"start": 0.5, "end": 1.25, "label": "sad", "posteriors": probs}
    record = {"utt": "u", "path": "p.wav", "label": "sad", "posteriors": probs, "windows": [window]}
    rows = [row.split("\t") for row in format_record(record, "tsv", CLASSES)]
    assert all(len(row) == len(header) for row in rows)
    assert rows[1] == [
        "u",
        "window",
        "0.500",
        "1.250",
        "sad",
        "0.100000",
        "0.200000",
        "0.300000",
        "0.400000",
        "",
    ]


def test_autocast_precisions_on_cpu():
    cpu = torch.device("cpu")
    with autocast(cpu, "bf16"):
        assert torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16
    with autocast(cpu, "fp32"):
        assert not torch.is_autocast_enabled("cpu")
    with pytest.raises(SertkError, match="fp16 needs a CUDA device"):
        autocast(cpu, "fp16")
    with pytest.raises(SertkError, match="precision 'fp8'"):
        autocast(cpu, "fp8")


def test_rows_per_batch_is_the_smaller_of_batch_size_and_cpu_cap_shared_by_the_copies():
    model = torch.nn.Linear(1, 1)
    cpu = torch.device("cpu")
    assert rows_per_batch(model, cpu, 6, 2) == 3  # no cap: 6 model rows, 2 copies each
    model.cpu_batch_rows = 4
    assert rows_per_batch(model, cpu, 2, 1) == 2  # a batch smaller than the cap is not raised to it
    assert rows_per_batch(model, cpu, 32, 3) == 1  # cap 4 // 3 copies


class WidthRecorder(torch.nn.Module):
    """Logits: a linear map of the frame sum (zero padding adds nothing); records each batch's widths."""

    def __init__(self):
        super().__init__()
        self.out = torch.nn.Linear(2, 3)
        self.seen = []

    def forward(self, feats, lengths):
        self.seen.append((feats.shape[1], lengths.tolist()))
        return self.out(feats.sum(1))


def test_rows_are_batched_shortest_first_and_come_back_in_row_order():
    torch.manual_seed(0)
    model = WidthRecorder()
    arrays = [
        np.random.default_rng(i).normal(size=(n, 2)).astype(np.float32) for i, n in enumerate([6, 2, 5, 3])
    ]
    fset = build_feature_set(MemoryFrames(arrays), list("abcd"), [0, 1, 2, 0], InputConfig(), training=False)
    post = utterance_posteriors(model, fset, torch.device("cpu"), 2)
    # Sorted lengths 2, 3 | 5, 6: each batch pads to its own longest row.
    assert model.seen == [(3, [2, 3]), (6, [5, 6])]
    with torch.no_grad():
        expected = [model.out(torch.from_numpy(x).sum(0)).softmax(-1) for x in arrays]
    torch.testing.assert_close(post.scores, torch.stack(expected))
