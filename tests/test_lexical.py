"""Lexical branch (rlc_gca_lstm.md §3.4): word2vec reader, lexical dump, rlc with words, train + eval."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from helpers import make_feature_dir, write_folds_file

from sertk.data.datadir import write_data_dir
from sertk.deploy.package import from_checkpoint
from sertk.errors import SertkError
from sertk.evaluate.inference import EvalOptions, evaluate
from sertk.features.dump import dump_features
from sertk.features.io import feature_info, load_features
from sertk.features.lexical import read_embeddings, sentence_vectors, tokenize
from sertk.models.rlc import Rlc
from sertk.train.run import TrainOptions
from sertk.train.run import train as run_training

VECTORS = {"happy": [1.0, 0.5, -2.0], "sad": [-1.0, 0.25, 3.5], "don't": [0.0, 2.0, 1.0]}


def write_text(path: Path, header: bool = True) -> Path:
    lines = [f"{len(VECTORS)} 3"] if header else []
    lines += [f"{w} " + " ".join(str(v) for v in vec) for w, vec in VECTORS.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


def write_binary(path: Path, newline: bool = True) -> Path:
    body = f"{len(VECTORS)} 3\n".encode()
    for word, vec in VECTORS.items():
        body += word.encode() + b" " + struct.pack("<3f", *vec) + (b"\n" if newline else b"")
    path.write_bytes(body)
    return path


@pytest.mark.parametrize(
    ("make", "fmt"),
    [
        (write_text, "text"),
        (lambda p: write_text(p, header=False), "text"),
        (write_binary, "binary"),
        (lambda p: write_binary(p, newline=False), "binary"),
    ],
)
def test_read_embeddings_text_and_binary(tmp_path, make, fmt):
    path = make(tmp_path / "vectors")
    vectors = read_embeddings(path, fmt)
    assert set(vectors) == {*VECTORS, ""}
    for word, vec in VECTORS.items():
        np.testing.assert_array_equal(vectors[word], np.array(vec, dtype=np.float32))
    assert vectors[""].tolist() == [0.0, 0.0, 0.0]
    kept = read_embeddings(path, fmt, vocab={"sad", "absent"})
    assert set(kept) == {"sad", ""}


def test_auto_format_follows_the_suffix(tmp_path):
    binary = write_binary(tmp_path / "v.bin")
    text = write_text(tmp_path / "v.txt")
    assert (
        read_embeddings(binary)["sad"].tolist() == read_embeddings(text)["sad"].tolist() == [-1.0, 0.25, 3.5]
    )


def test_tokenize_and_oov():
    assert tokenize("Happy?! I DON'T know... [LAUGHTER] sad-ish") == [
        "happy",
        "i",
        "don't",
        "know",
        "laughter",
        "sad",
        "ish",
    ]
    vectors = {k: np.array(v, dtype=np.float32) for k, v in VECTORS.items()} | {"": np.zeros(3, np.float32)}
    rows = sentence_vectors("So happy, don't be sad!", vectors)
    np.testing.assert_array_equal(rows, np.array([VECTORS["happy"], VECTORS["don't"], VECTORS["sad"]]))
    empty = sentence_vectors("Nothing known here.", vectors)
    assert empty.shape == (1, 3) and not empty.any()


def test_reader_errors_are_one_line(tmp_path):
    with pytest.raises(SertkError, match="embedding file not found"):
        read_embeddings(tmp_path / "missing.txt")
    (tmp_path / "empty.txt").write_text("")
    with pytest.raises(SertkError, match="empty.txt: empty embedding file"):
        read_embeddings(tmp_path / "empty.txt")
    bad = tmp_path / "bad.txt"
    bad.write_text("2 3\nhappy 1 2 3\nsad 1 2\n")
    with pytest.raises(SertkError, match=r"bad.txt:3: expected a word and 3 numbers"):
        read_embeddings(bad)
    bad.write_text("happy 1 x 3\n")
    with pytest.raises(SertkError, match="bad.txt:1: non-numeric"):
        read_embeddings(bad)
    truncated = tmp_path / "t.bin"
    truncated.write_bytes(write_binary(tmp_path / "ok.bin").read_bytes()[:-7])
    with pytest.raises(SertkError, match="truncated at word 3 of 3"):
        read_embeddings(truncated)
    (tmp_path / "nohead.bin").write_bytes(b"happy \x00\x00\x80?")
    with pytest.raises(SertkError, match="must start with a 'N D' header"):
        read_embeddings(tmp_path / "nohead.bin")


@pytest.mark.parametrize("fmt", ["hdf5", "ark"])
def test_lexical_dump_round_trip(tmp_path, fmt, capsys):
    texts = {"u1": "Happy happy!", "u2": "I am SAD, don't ask.", "u3": "[BREATHING]"}
    data = tmp_path / "data"
    tables = {
        "wav.scp": {u: f"/x/{u}.wav" for u in texts},
        "utt2spk": {u: "spk" for u in texts},
        "utt2emo": {u: "neu" for u in texts},
    }
    write_data_dir(data, {**tables, "text": texts})
    conf = tmp_path / "lexical.yaml"
    conf.write_text(yaml.safe_dump({"embeddings": str(write_binary(tmp_path / "w2v.bin"))}))
    out = tmp_path / "dump" / "lexical"
    summary = dump_features(data, out, feat="lexical", feat_config=conf, fmt=fmt)
    assert summary["utterances"] == 3 and summary["frames"] == 2 + 2 + 1
    feats = load_features(out)
    np.testing.assert_array_equal(feats["u1"], np.array([VECTORS["happy"]] * 2, dtype=np.float32))
    np.testing.assert_array_equal(feats["u2"], np.array([VECTORS["sad"], VECTORS["don't"]], dtype=np.float32))
    assert feats["u3"].shape == (1, 3) and not feats["u3"].any()
    assert feature_info(out)["feat"] == "lexical" and feature_info(out)["dim"] == 3
    assert (out / "utt2num_frames").read_text() == "u1 2\nu2 2\nu3 1\n"
    # u3 ([BREATHING], no word) is the one utterance without a known word.
    assert capsys.readouterr().err.rstrip().endswith(", 1 utterances without a known word")
    assert dump_features(data, out, feat="lexical", feat_config=conf, fmt=fmt)["reused"]
    # New vectors in the same embedding file (same config) are a new dump, not the old one reused.
    body = b"1 3\n" + b"happy " + struct.pack("<3f", 7.0, 7.0, 7.0) + b"\n"
    (tmp_path / "w2v.bin").write_bytes(body)
    assert not dump_features(data, out, feat="lexical", feat_config=conf, fmt=fmt)["reused"]
    assert load_features(out)["u1"].tolist() == [[7.0, 7.0, 7.0]] * 2
    with pytest.raises(SertkError, match="needs --feat-config"):
        dump_features(data, tmp_path / "other", feat="lexical", fmt=fmt)


def lexical_rlc(**overrides) -> Rlc:
    base = dict(residual_cnn=False, heads=0, lstm_units=8, iterations=2, dense=[8], dropout=0.0)
    return Rlc(Rlc.Config(**{**base, "lexical_dim": 3, "lexical_cells": 5, **overrides}), 4, 2)


def test_rlc_lexical_shapes_and_padding_invariance():
    torch.manual_seed(0)
    model = lexical_rlc().eval()
    assert model.classifier[0].in_features == 8 + 5
    feats, words = torch.randn(2, 9, 4), torch.randn(2, 6, 3)
    lengths, word_lengths = torch.tensor([9, 5]), torch.tensor([4, 6])
    logits = model(feats, lengths, words=words, word_lengths=word_lengths)
    assert logits.shape == (2, 2)
    # Row 0 alone, with its own padding garbage replaced: same logits.
    alone = model(feats[:1, :9], lengths[:1], words=words[:1, :4], word_lengths=word_lengths[:1])
    torch.testing.assert_close(logits[:1], alone)
    noisy_feats, noisy_words = feats.clone(), words.clone()
    noisy_feats[1, 5:] = 100.0
    noisy_words[0, 4:] = -50.0
    torch.testing.assert_close(
        model(noisy_feats, lengths, words=noisy_words, word_lengths=word_lengths), logits
    )
    with pytest.raises(SertkError, match="lexical_dim 3 needs word vectors"):
        model(feats, lengths)
    acoustic = Rlc(Rlc.Config(residual_cnn=False, heads=0, lstm_units=8, dense=[8]), 4, 2)
    with pytest.raises(SertkError, match="lexical_dim 0"):
        acoustic(feats, lengths, words=words, word_lengths=word_lengths)


def test_rlc_lexical_learns_from_words_alone():
    """Label = which of two word vectors the sentence holds; the acoustic input is pure noise."""
    torch.manual_seed(0)
    model = lexical_rlc(recurrent="lstm", lstm_layers=1)
    gen = torch.Generator().manual_seed(1)
    labels = torch.arange(32) % 2
    words = torch.randn(32, 5, 3, generator=gen) * 0.3
    word_lengths = torch.randint(2, 6, (32,), generator=gen)
    words[torch.arange(32), 0] = torch.tensor([[2.0, -2.0, 0.0], [-2.0, 2.0, 0.0]])[labels]
    feats, lengths = torch.randn(32, 7, 4, generator=gen), torch.full((32,), 7)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.05)
    for _ in range(15):
        loss = torch.nn.functional.cross_entropy(
            model(feats, lengths, words=words, word_lengths=word_lengths), labels
        )
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    accuracy = (
        (model(feats, lengths, words=words, word_lengths=word_lengths).argmax(-1) == labels).float().mean()
    )
    assert accuracy == 1.0


def test_lexical_train_and_eval_end_to_end(tmp_path):
    """A tiny rlc with words where only the transcript carries the label: trained and evaluated."""
    rng = np.random.default_rng(0)
    utts = [f"spk{i % 2}_u{i:03d}" for i in range(24)]
    emo = {u: ["hap", "sad"][i % 2] for i, u in enumerate(utts)}
    text = {u: ("so happy today" if emo[u] == "hap" else "i am sad") for u in utts}
    data = tmp_path / "data"
    tables = {"wav.scp": {u: f"/x/{u}.wav" for u in utts}, "utt2spk": {u: u[:4] for u in utts}}
    tables |= {"utt2emo": emo, "text": text}
    write_data_dir(data, tables, {"classes": ["hap", "sad"], "class_map": {}, "synthetic": True})
    folds = [{"name": "fold1", "train": utts[:16], "valid": utts[16:20], "test": utts[20:]}]
    write_folds_file(data, folds)
    arrays = {u: rng.normal(size=(int(rng.integers(6, 12)), 17)).astype(np.float32) for u in utts}
    acoustic = make_feature_dir(tmp_path / "dump" / "noise", arrays, feat="lld-rlc17")
    emb = tmp_path / "lexical.yaml"
    emb.write_text(yaml.safe_dump({"embeddings": str(write_text(tmp_path / "w2v.txt"))}))
    lexical = tmp_path / "dump" / "lexical"
    dump_features(data, lexical, feat="lexical", feat_config=emb)
    model = dict(residual_cnn=False, heads=0, lstm_units=8, iterations=1, dense=[8], dropout=0.0)
    config = {
        "arch": "rlc",
        "feat": "lld-rlc17",
        "model": {**model, "lexical_dim": 3, "lexical_cells": 8},
        "train": {"lr": 0.02, "batch_size": 8, "epochs": 12, "patience": 0, "select_metric": "valid_ua"},
    }
    conf = tmp_path / "lexical_rlc.yaml"
    conf.write_text(yaml.safe_dump(config))
    args = dict(train_config=conf, data=data, feats=acoustic, exp=tmp_path / "exp", device="cpu")

    def train(**kwargs):
        return run_training(TrainOptions(**kwargs))

    with pytest.raises(SertkError, match="pass --lexical-feats DIR"):
        train(**args)
    with pytest.raises(SertkError, match="holds lld-rlc17 of dim 17"):
        train(**args, lexical_feats=acoustic)
    summary = train(**args, lexical_feats=lexical)
    assert summary[0]["valid_ua"] == 1.0
    info = json.loads((tmp_path / "exp" / "experiment.json").read_text())
    assert info["lexical_feats"] == str(lexical.resolve())
    result = evaluate(tmp_path / "exp", EvalOptions(device="cpu"))
    assert result[0]["n"] == 4 and result[0]["ua"] == 1.0
    with pytest.raises(SertkError, match="support only acoustic models"):
        from_checkpoint(tmp_path / "exp" / "fold1" / "best.pt")
    acoustic_conf = tmp_path / "acoustic.yaml"
    acoustic_conf.write_text(yaml.safe_dump({**config, "model": model}))
    with pytest.raises(SertkError, match="has no lexical branch"):
        train(**{**args, "train_config": acoustic_conf, "exp": tmp_path / "exp2"}, lexical_feats=lexical)
