"""``dump_features`` end to end: both formats, the reader, atomicity, skip-when-done, odd and corrupt audio."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import h5py
import kaldiio
import numpy as np
import pytest
import soundfile
import torch
import torchaudio.functional
import yaml

import sertk.features.dump as dump_module
from sertk.config import to_dict
from sertk.data.datadir import read_table, write_data_dir
from sertk.errors import SertkError
from sertk.features import build_feature
from sertk.features.dump import dump_features
from sertk.features.fbank import FbankConfig
from sertk.features.io import FeatureReader, encode_frames, feature_info, load_features

RATE = 16000


def _tone_mix(num_samples: int, rate: int, seed: int) -> np.ndarray:
    """Tones below 3 kHz over weak white noise, so every Mel bin holds energy well above rounding noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(num_samples) / rate
    freqs = rng.uniform(150, 3000, size=6)
    tones = sum(0.1 * np.sin(2 * np.pi * f * t + rng.uniform(0, 6)) for f in freqs)
    return (tones + 0.003 * rng.standard_normal(num_samples)).astype(np.float32)


def _data_dir(root: Path, waves: dict[str, tuple[np.ndarray, int]]) -> Path:
    wav_scp, utt2spk, utt2emo = {}, {}, {}
    for utt, (samples, rate) in waves.items():
        path = root / "wav" / f"{utt}.wav"
        path.parent.mkdir(parents=True, exist_ok=True)
        soundfile.write(path, samples, rate, subtype="FLOAT")
        wav_scp[utt], utt2spk[utt], utt2emo[utt] = str(path), utt.split("_")[0], "neu"
    data = root / "data"
    write_data_dir(data, {"wav.scp": wav_scp, "utt2spk": utt2spk, "utt2emo": utt2emo}, {"classes": ["neu"]})
    return data


@pytest.fixture
def data(tmp_path) -> Path:
    lengths = {"Ses01F_a": 16000, "Ses01F_b": 4000, "Ses01M_c": 23456, "Ses02F_d": 801}
    return _data_dir(tmp_path, {u: (_tone_mix(n, RATE, i), RATE) for i, (u, n) in enumerate(lengths.items())})


def _direct(data: Path, utt: str) -> np.ndarray:
    """Features of one utterance computed alone, straight from its wav."""
    wave, _ = soundfile.read(read_table(data / "wav.scp")[utt], dtype="float32")
    extractor = build_feature("logmel40")
    return extractor.compute(torch.from_numpy(wave)[None], torch.tensor([len(wave)]))[0].numpy()


@pytest.mark.parametrize("fmt", ["hdf5", "ark"])
def test_round_trip(data, tmp_path, fmt):
    out = tmp_path / "dump"
    summary = dump_features(data, out, fmt=fmt)
    assert summary["utterances"] == 4 and summary["skipped"] == 0 and not summary["reused"]
    assert summary["frames"] == 98 + 23 + 145 + 3
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["feats.provenance.json", "feat.yaml", "utt2num_frames"]
        + (["feats.h5"] if fmt == "hdf5" else ["feats.ark", "feats.scp"])
    )
    assert yaml.safe_load((out / "feat.yaml").read_text()) == {
        "feat": "logmel40",
        "config": to_dict(FbankConfig()),
    }
    assert read_table(out / "utt2num_frames") == {
        "Ses01F_a": "98",
        "Ses01F_b": "23",
        "Ses01M_c": "145",
        "Ses02F_d": "3",
    }

    feats = load_features(out)
    assert list(feats) == ["Ses01F_a", "Ses01F_b", "Ses01M_c", "Ses02F_d"]
    for utt, array in feats.items():
        assert array.dtype == np.float32 and array.shape[1] == 40
        np.testing.assert_allclose(array, _direct(data, utt), rtol=0, atol=1e-4)
    # The reader returns exactly what the writer stored.
    if fmt == "hdf5":
        with h5py.File(out / "feats.h5") as f:
            assert f.attrs["feat"] == "logmel40" and int(f.attrs["dim"]) == 40
            stored = {u: f[u][()] for u in f}
    else:
        stored = dict(kaldiio.load_scp(str(out / "feats.scp")))
    assert all(np.array_equal(stored[u], feats[u]) for u in feats)

    subset = load_features(out, ["Ses01M_c", "Ses01F_b"])
    assert list(subset) == ["Ses01M_c", "Ses01F_b"]
    assert np.array_equal(subset["Ses01M_c"], feats["Ses01M_c"])
    assert feature_info(out) == {
        "feat": "logmel40",
        "config": to_dict(FbankConfig()),
        "dim": 40,
        "format": fmt,
    }


def test_hdf5_and_ark_hold_identical_arrays(data, tmp_path):
    h5 = load_features(dump_features(data, tmp_path / "h5", fmt="hdf5")["out"])
    ark = load_features(dump_features(data, tmp_path / "ark", fmt="ark")["out"])
    assert h5.keys() == ark.keys()
    assert all(np.array_equal(h5[u], ark[u]) for u in h5)


def test_reader_errors(data, tmp_path):
    with pytest.raises(SertkError, match="feature dir not found .run sertk feats first"):
        load_features(tmp_path / "nowhere")
    out = tmp_path / "dump"
    dump_features(data, out)
    with pytest.raises(SertkError, match=r"1 utterance\(s\) not in the feature dump, first Ses09X_z"):
        load_features(out, ["Ses01F_a", "Ses09X_z"])
    (out / "feats.provenance.json").unlink()
    with pytest.raises(SertkError, match=r"incomplete \(no feats.provenance.json; run sertk feats first\)"):
        load_features(out)


def test_skip_when_done_and_redo_on_new_config(data, tmp_path):
    out = tmp_path / "dump"
    first = dump_features(data, out)
    mtime = (out / "feats.h5").stat().st_mtime_ns
    again = dump_features(data, out)
    assert (
        again["reused"] and again["utterances"] == first["utterances"] and again["frames"] == first["frames"]
    )
    assert (out / "feats.h5").stat().st_mtime_ns == mtime

    conf = tmp_path / "fb23.yaml"
    conf.write_text("num_mel_bins: 23\n")
    redone = dump_features(data, out, feat_config=conf)
    assert not redone["reused"]
    assert feature_info(out)["dim"] == 23 and feature_info(out)["config"]["num_mel_bins"] == 23
    assert not dump_features(data, out, fmt="ark")["reused"]
    assert feature_info(out)["format"] == "ark" and not (out / "feats.h5").exists()

    # Another corpus behind the same data dir path (e.g. synthetic, then real IEMOCAP) is recomputed.
    scp = data / "wav.scp"
    scp.write_text("".join(sorted(scp.read_text().splitlines(keepends=True))[:-1]))
    fewer = dump_features(data, out, fmt="ark")
    assert not fewer["reused"] and fewer["utterances"] == first["utterances"] - 1


def test_failure_mid_dump_leaves_nothing(data, tmp_path, monkeypatch):
    calls = []
    original = dump_module.compute_batch

    def fail_on_second_batch(extractor, items, device=None):
        calls.append(items)
        if len(calls) == 2:
            raise RuntimeError("disk on fire")
        return original(extractor, items, device)

    monkeypatch.setattr(dump_module, "compute_batch", fail_on_second_batch)
    monkeypatch.setattr(dump_module, "BATCH_SAMPLES", 20000)
    out = tmp_path / "dump"
    with pytest.raises(RuntimeError, match="disk on fire"):
        dump_module.dump_features(data, out, fmt="ark")
    assert len(calls) == 2
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "wav"]


def test_failure_keeps_previous_complete_dump(data, tmp_path, monkeypatch):
    out = tmp_path / "dump"
    dump_features(data, out)
    before = load_features(out)

    def broken(extractor, items, device=None):
        raise RuntimeError("interrupted")

    monkeypatch.setattr(dump_module, "compute_batch", broken)
    with pytest.raises(RuntimeError):
        dump_module.dump_features(data, out, fmt="ark")
    after = load_features(out)
    assert all(np.array_equal(before[u], after[u]) for u in before)


def test_corrupt_short_and_odd_audio(tmp_path, capsys):
    reference = _tone_mix(2 * RATE, RATE, 7)
    stereo = np.stack([reference + 0.05, reference - 0.05], axis=1)
    data = _data_dir(
        tmp_path,
        {
            "Ses01F_ref": (reference, RATE),
            "Ses01F_stereo": (stereo, RATE),
            "Ses01F_8k": (
                torchaudio.functional.resample(torch.from_numpy(reference), RATE, 8000).numpy(),
                8000,
            ),
            "Ses01F_short": (reference[:300], RATE),
        },
    )
    wav_dir = tmp_path / "wav"
    (wav_dir / "Ses01F_corrupt.wav").write_bytes(b"RIFF\x24\x00\x00\x00WAVEfmt garbage")
    scp = read_table(data / "wav.scp")
    scp["Ses01F_corrupt"] = str(wav_dir / "Ses01F_corrupt.wav")
    write_data_dir(
        data, {"wav.scp": scp, "utt2spk": dict.fromkeys(scp, "Ses01F"), "utt2emo": dict.fromkeys(scp, "neu")}
    )

    summary = dump_features(data, tmp_path / "dump")
    err = capsys.readouterr().err
    assert summary["utterances"] == 3 and summary["skipped"] == 2
    assert "Ses01F_corrupt.wav: cannot read audio" in err
    assert "Ses01F_short.wav: too short for one frame (300 samples)" in err
    assert "1 downmixed, 1 resampled" in err

    feats = load_features(tmp_path / "dump")
    assert sorted(feats) == ["Ses01F_8k", "Ses01F_ref", "Ses01F_stereo"]
    ref = feats["Ses01F_ref"]
    # The channels are ref +- 0.05 rounded to float32, so their mean is ref up to that rounding.
    np.testing.assert_allclose(feats["Ses01F_stereo"], ref, rtol=0, atol=1e-3)
    # The 8 kHz copy keeps everything below 4 kHz; compare the Mel bins below 2.5 kHz away from the edges.
    assert feats["Ses01F_8k"].shape == ref.shape
    low_bins = slice(0, 23)
    np.testing.assert_allclose(feats["Ses01F_8k"][5:-5, low_bins], ref[5:-5, low_bins], rtol=0, atol=0.05)


def test_every_file_failing_is_an_error(tmp_path):
    wav = tmp_path / "x.wav"
    wav.write_bytes(b"not audio")
    data = tmp_path / "data"
    write_data_dir(data, {"wav.scp": {"u1": str(wav)}, "utt2spk": {"u1": "s"}, "utt2emo": {"u1": "neu"}})
    with pytest.raises(
        SertkError, match=r"no utterance could be computed \(1 failed, first: .*x.wav: cannot read"
    ):
        dump_features(data, tmp_path / "dump")
    assert not (tmp_path / "dump").exists()


def test_bad_format_and_nj(data, tmp_path):
    with pytest.raises(SertkError, match=r"unknown feature format 'npz' \(known: hdf5, ark\)"):
        dump_features(data, tmp_path / "dump", fmt="npz")
    with pytest.raises(SertkError, match="--nj must be at least 1"):
        dump_features(data, tmp_path / "dump", nj=0)


def test_parallel_jobs_give_the_same_dump(data, tmp_path, monkeypatch):
    monkeypatch.setattr(dump_module, "BATCH_SAMPLES", 20000)
    threads = set()
    compute = dump_module.compute_batch

    def recording(extractor, items, device=None):
        threads.add(threading.current_thread().name)
        return compute(extractor, items, device)

    monkeypatch.setattr(dump_module, "compute_batch", recording)
    one = load_features(dump_features(data, tmp_path / "nj1")["out"])
    assert threads == {threading.main_thread().name}
    threads.clear()
    two = load_features(dump_module.dump_features(data, tmp_path / "nj2", nj=2)["out"])
    # Worker threads only (one or two: a thread that is free again takes the next batch)
    assert threads and all(name.startswith("sertk-feats") for name in threads) and len(threads) <= 2
    assert list(one) == list(two)  # the same utterances in the same order
    for utt in one:
        assert np.array_equal(one[utt], two[utt])


def test_pcm_storage_rounds_to_the_nearest_sample_and_clips():
    # rint(x * 32768), not a truncating cast: 0.7 and -0.7 of a step are 1 and -1; +1.0 is past int16's top.
    step = 1.0 / 32768
    values = np.array([0.7 * step, -0.7 * step, 3.2 * step, 1.0, -1.5], dtype=np.float32)
    assert encode_frames(values, "int16").tolist() == [1, -1, 3, 32767, -32768]
    assert encode_frames(values, "float16").dtype == np.float16


def test_a_pcm_dump_reads_back_as_sample_values(data, tmp_path):
    # feat wave stores int16 PCM; every reader path but read_into gives sample / 32768 as float32.
    out = dump_features(data, tmp_path / "wave", feat="wave")["out"]
    wave, _ = soundfile.read(read_table(data / "wav.scp")["Ses01F_b"], dtype="float32")
    pcm = np.clip(np.rint(wave.astype(np.float64) * 32768), -32768, 32767)
    reader = FeatureReader(out)
    assert reader.stored_dtype("Ses01F_b") == np.int16
    want = (pcm / 32768).astype(np.float32)[:, None]
    np.testing.assert_array_equal(reader.read("Ses01F_b"), want)
    np.testing.assert_array_equal(reader.read("Ses01F_b", 100, 200), want[100:200])
    raw = np.empty((len(pcm), 1), dtype=np.int16)
    reader.read_into("Ses01F_b", raw)
    assert raw[:, 0].tolist() == pcm.astype(np.int16).tolist()
    reader.close()
    np.testing.assert_array_equal(load_features(out, ["Ses01F_b"])["Ses01F_b"], want)


@pytest.mark.parametrize("fmt", ["hdf5", "ark"])
def test_the_reader_reads_exactly_the_asked_frames(data, tmp_path, fmt):
    out = dump_features(data, tmp_path / "dump", fmt=fmt)["out"]
    full = load_features(out)
    reader = FeatureReader(out)
    for utt in ("Ses01F_a", "Ses01M_c"):
        np.testing.assert_array_equal(reader.read(utt), full[utt])
        np.testing.assert_array_equal(reader.read(utt, 3, 7), full[utt][3:7])
        assert reader.read(utt, 10).shape == (len(full[utt]) - 10, 40)
    assert reader.counts == {u: len(f) for u, f in full.items()} and reader.dim == 40
    reader.close()
    wide = load_features(out, dtype=np.float64)
    assert all(wide[u].dtype == np.float64 and np.array_equal(wide[u], full[u]) for u in full)


def test_ark_offsets_count_bytes_and_the_scp_is_sorted(tmp_path):
    # A non-ASCII id takes more bytes than characters; a ':' in the dump's path is not the offset's colon.
    waves = {u: (_tone_mix(n, RATE, i), RATE) for i, (u, n) in enumerate({"Ses02F_z": 5000, "Ses01F_é": 6000,
             "Ses01F_a": 7000}.items())}  # fmt: skip
    data = _data_dir(tmp_path, waves)
    h5 = load_features(dump_features(data, tmp_path / "h5")["out"])
    ark_dir = tmp_path / "run:1" / "dump"
    ark = load_features(dump_features(data, ark_dir, fmt="ark")["out"])
    assert sorted(ark) == sorted(h5) and all(np.array_equal(ark[u], h5[u]) for u in h5)
    lines = (ark_dir / "feats.scp").read_text(encoding="utf-8").splitlines()
    assert [line.split()[0] for line in lines] == sorted(waves)
    assert all(line.split()[1].rpartition(":")[0] == str(ark_dir / "feats.ark") for line in lines)


def test_hdf5_file_attributes_are_the_documented_ones(data, tmp_path):
    dump_features(data, tmp_path / "dump")
    with h5py.File(tmp_path / "dump" / "feats.h5", "r") as f:
        assert f.attrs["feat"] == "logmel40" and int(f.attrs["dim"]) == 40
        assert json.loads(f.attrs["config"]) == to_dict(FbankConfig())


def test_batches_are_length_sorted_and_bounded_by_their_padded_width(data):
    # Lengths 801, 4000, 16000, 23456: sorted by length, a batch closes when (rows + 1) x the next
    # length would pass the budget. At 7999 the 4000 (2 x 4000 = 8000) opens its own batch; at 8000 it joins.
    wavs = read_table(data / "wav.scp")
    extractor = build_feature("logmel40")
    ids = {"Ses02F_d": 801, "Ses01F_b": 4000, "Ses01F_a": 16000, "Ses01M_c": 23456}
    for budget, want in (
        (7999, [["Ses02F_d"], ["Ses01F_b"], ["Ses01F_a"], ["Ses01M_c"]]),
        (8000, [["Ses02F_d", "Ses01F_b"], ["Ses01F_a"], ["Ses01M_c"]]),
        (10**9, [list(ids)]),
    ):
        batches, errors = dump_module.plan_batches(wavs, extractor, budget)
        assert [[utt for utt, _ in batch] for batch in batches] == want and not errors
        assert all(path == wavs[utt] for batch in batches for utt, path in batch)


def test_at_most_two_batches_per_job_are_in_flight(monkeypatch):
    # compute_batches submits a batch only while fewer than 2 nj wait: a finished batch is held in memory
    # until written, so the bound is what keeps a long dump's memory flat.
    submitted = []

    class Counting(dump_module.ThreadPoolExecutor):
        def submit(self, fn, /, *args, **kwargs):
            submitted.append(args[1])
            return super().submit(fn, *args, **kwargs)

    monkeypatch.setattr(dump_module, "ThreadPoolExecutor", Counting)
    monkeypatch.setattr(dump_module, "compute_batch", lambda extractor, batch, device=None: batch)
    batches = [[(f"u{i}", "x")] for i in range(10)]
    seen = []
    for done, result in enumerate(dump_module.compute_batches(None, batches, nj=2), start=1):
        assert len(submitted) <= done - 1 + 4
        seen.append(result)
    assert seen == batches and len(submitted) == 10


def test_a_foreign_file_in_the_output_dir_is_refused_before_any_work(data, tmp_path, monkeypatch):
    out = tmp_path / "dump"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    calls = []
    monkeypatch.setattr(dump_module, "compute_batch", lambda *args, **kwargs: calls.append(args))
    with pytest.raises(SertkError, match=r"dump: exists and holds files sertk did not write \(notes.txt\)"):
        dump_module.dump_features(data, out)
    assert not calls and (out / "notes.txt").read_text() == "mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "dump", "wav"]


def test_a_dump_owns_exactly_the_files_it_writes(data, tmp_path):
    # What publish_dir may replace: the files of either format's dump, and the legacy .done marker.
    written = set()
    for fmt in ("hdf5", "ark"):
        dump_features(data, tmp_path / fmt, fmt=fmt)
        written |= {p.name for p in (tmp_path / fmt).iterdir()}
    assert dump_module.DUMP_FILES == written | {".done"}


@pytest.mark.parametrize("name", ["utt2num_frames", "feat.yaml", "feats.h5"])
def test_a_dump_file_rewritten_after_the_dump_is_not_trusted(data, tmp_path, name):
    out = tmp_path / "dump"
    dump_features(data, out)
    path = out / name
    path.write_bytes(path.read_bytes() + b"\n")
    assert not dump_features(data, out)["reused"]
    assert dump_features(data, out)["reused"]


def test_one_torch_thread_per_job_and_the_callers_count_restored(data, tmp_path, monkeypatch):
    inside = []
    compute = dump_module.compute_batch

    def recording(extractor, items, device=None):
        inside.append(torch.get_num_threads())
        return compute(extractor, items, device)

    monkeypatch.setattr(dump_module, "compute_batch", recording)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        dump_features(data, tmp_path / "dump")
        assert inside and set(inside) == {1}
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
