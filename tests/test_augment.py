"""``sertk augment``: copies of training utterances only, a valid data dir and folds.json, the measured
perturbations in the written files, MUSAN / RIRS_NOISES layouts, corrupt sources, provenance reuse."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch
import torchaudio

import sertk.augment.copies as copies
from sertk.augment.offline import (
    augment_data_dir,
    augment_folds,
    check_augmented_folds,
    parse_snr,
    parse_speeds,
)
from sertk.augment.sources import SourceFile, find_noise_files, find_rir_files, load_sources, read_source
from sertk.augment.synthetic import coloured_noise, impulse_response, write_musan_like, write_rirs_like
from sertk.data import read_data_dir, validate_data_dir, write_data_dir
from sertk.data.folds import FoldOptions, make_folds, read_folds, write_folds
from sertk.errors import SertkError
from sertk.features.dump import dump_features
from sertk.provenance import check, read_record, record_path

pytestmark = pytest.mark.usefixtures("one_thread")
RATE = 16000
CLASSES = ["neu", "hap", "ang", "sad"]
PREFIXES = ("sp0.9-", "sp1.1-", "noise-", "rir-")


def make_wav_data(root: Path, sessions: int = 3, per_speaker: int = 3) -> Path:
    """A data dir with every prep table: 2 speakers per session, short tones of different pitch."""
    tables: dict[str, dict[str, str]] = {
        n: {} for n in ("wav.scp", "utt2spk", "utt2emo", "utt2votes", "utt2vad", "utt2session", "utt2gender")
    }
    tables.update({"utt2style": {}, "utt2dur": {}, "text": {}})
    rng = np.random.default_rng(0)
    for s in range(1, sessions + 1):
        for gender in "FM":
            for i in range(per_speaker):
                utt = f"Ses0{s}F_impro01_{gender}{i:03d}"
                n = int(RATE * (0.3 + 0.1 * i))
                t = np.arange(n) / RATE
                wave = 0.3 * np.sin(2 * np.pi * (150 + 40 * i + 10 * s) * t) + 0.01 * rng.normal(size=n)
                fade = np.minimum(1, np.minimum(t, t[::-1]) / 0.03)  # 30 ms fades: no onset clicks
                wave *= 0.5 - 0.5 * np.cos(np.pi * fade)
                path = root / "audio" / f"{utt}.wav"
                path.parent.mkdir(parents=True, exist_ok=True)
                soundfile.write(str(path), np.round(wave * 32767).astype(np.int16), RATE, subtype="PCM_16")
                tables["wav.scp"][utt] = str(path)
                tables["utt2spk"][utt] = f"Ses0{s}{gender}"
                tables["utt2emo"][utt] = CLASSES[i % 4]
                tables["utt2votes"][utt] = f"{CLASSES[i % 4]} {CLASSES[i % 4]},sad oth"
                tables["utt2vad"][utt] = "2.5000 3.0000 2.0000"
                tables["utt2session"][utt] = f"Session{s}"
                tables["utt2gender"][utt] = gender
                tables["utt2style"][utt] = "impro"
                tables["utt2dur"][utt] = f"{n / RATE:.4f}"
                tables["text"][utt] = f"words of {utt}"
    write_data_dir(root / "data", tables, {"classes": CLASSES, "synthetic": True, "corpus": "test"})
    return root / "data"


@pytest.fixture(scope="module")
def sources(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("sources")
    write_musan_like(root / "musan")
    write_rirs_like(root / "RIRS_NOISES")
    return {"musan": root / "musan", "rirs": root / "RIRS_NOISES"}


@pytest.fixture(scope="module")
def augmented(tmp_path_factory, sources) -> dict:
    """One run with every kind of copy over loso-session folds."""
    root = tmp_path_factory.mktemp("augment")
    data = make_wav_data(root)
    folds = root / "folds.json"
    write_folds(folds, make_folds(read_data_dir(data), "loso-session"), read_data_dir(data))
    out = root / "aug"
    summary = augment_data_dir(
        data, folds, out, speeds=(0.9, 1.1), noise=sources["musan"], snr=(0, 15), rir=sources["rirs"], seed=3
    )
    return {"data": data, "folds": folds, "out": out, "summary": summary, "root": root}


def strip_prefixes(utt: str) -> str:
    while utt.startswith(PREFIXES):
        utt = utt.split("-", 1)[1]
    return utt


def assert_no_heldout_copies(source_folds: dict, out_folds: dict) -> None:
    """No valid or test utterance of a fold appears perturbed in that fold's train part, valid and test
    parts are unchanged, and every train utterance of the fold has its copies in the train part."""
    for old, new in zip(source_folds["folds"], out_folds["folds"], strict=True):
        assert new["valid"] == old["valid"] and new["test"] == old["test"]
        held_out = set(old["valid"]) | set(old["test"])
        copies = [u for u in new["train"] if u not in old["train"]]
        assert copies and all(u.startswith(PREFIXES) for u in copies)
        assert not {strip_prefixes(u) for u in copies} & held_out
        assert {strip_prefixes(u) for u in copies} == set(old["train"])


def test_writes_a_valid_data_dir_with_every_table_carried_over(augmented):
    out, data = augmented["out"], read_data_dir(augmented["data"])
    assert "6 speakers" in validate_data_dir(out)  # same speakers: copies keep theirs
    result = read_data_dir(out)
    folds = read_folds(augmented["folds"])
    train = sorted({u for f in folds["folds"] for u in f["train"]})
    assert len(train) == 18  # with 3 sessions every utterance trains in some fold
    assert len(result.utts) == 18 + 4 * 18
    assert augmented["summary"]["copies"] == {"speed": 36, "noise": 18, "rir": 18}
    for utt in data.utts:
        for prefix in PREFIXES:
            copy = prefix + utt
            for name in ("utt2spk", "utt2emo", "utt2votes", "utt2vad", "utt2session", "text"):
                assert result[name][copy] == data[name][utt], (name, copy)
            assert result["wav.scp"][copy] == str(out / "wav" / f"{copy}.wav")
        assert result["wav.scp"][utt] == data["wav.scp"][utt]  # originals are not copied
        assert result["utt2dur"]["noise-" + utt] == result["utt2dur"]["rir-" + utt] == data["utt2dur"][utt]
        for factor in (0.9, 1.1):
            # utt2dur of a speed copy: the samples written, within one sample of duration / factor.
            seconds = float(result["utt2dur"][f"sp{factor:g}-{utt}"])
            assert abs(seconds - float(data["utt2dur"][utt]) / factor) <= 1 / RATE + 1e-4
    assert result.meta["classes"] == CLASSES and result.synthetic
    assert result.meta["augment"]["speed"] == [0.9, 1.1]


def test_speed_copies_have_the_length_ratio_and_the_pitch(augmented):
    data = read_data_dir(augmented["out"])
    utt = "Ses02F_impro01_F001"  # a tone of 150 + 40 + 20 = 210 Hz, 0.4 s
    original, _ = soundfile.read(data["wav.scp"][utt])
    for factor in (0.9, 1.1):
        wave, rate = soundfile.read(data["wav.scp"][f"sp{factor:g}-{utt}"], dtype="float32")
        info = soundfile.info(data["wav.scp"][f"sp{factor:g}-{utt}"])
        assert rate == RATE and info.subtype == "PCM_16" and info.channels == 1
        assert len(wave) == math.ceil(len(original) / factor)
        spectrum = np.abs(np.fft.rfft(wave * np.hanning(len(wave)), 16 * len(wave)))
        peak = np.argmax(spectrum) * rate / (16 * len(wave))
        assert peak == pytest.approx(210 * factor, abs=2.0)


def test_noise_copies_have_the_recorded_snr_within_half_a_db(augmented):
    """SNR measured from the file: the written noisy copy minus the clean original, against the SNR the
    copy's generator drew (augment.tsv) and the requested range."""
    out = augmented["out"]
    data = read_data_dir(out)
    rows = [line.split("\t") for line in (out / "augment.tsv").read_text().splitlines()[1:]]
    noise_rows = [r for r in rows if r[2] == "noise"]
    assert len(noise_rows) == 18
    used, snrs = set(), set()
    for copy, source, _, detail in noise_rows:
        params = dict(p.split("=") for p in detail.split())
        clean, _ = soundfile.read(data["wav.scp"][source])
        noisy, _ = soundfile.read(data["wav.scp"][copy])
        snr = 10 * np.log10(np.sum(clean**2) / np.sum((noisy - clean) ** 2))
        assert snr == pytest.approx(float(params["snr"]), abs=0.5)
        assert 0 - 0.5 <= snr <= 15 + 0.5
        used.add(params["noise"])
        snrs.add(params["snr"])
    assert len(snrs) == 18  # every copy draws its own SNR (and file and offset)
    # A MUSAN root gives its noise/ part only, never music or speech.
    assert used and all(name.startswith("noise/") for name in used)


def test_rir_copies_keep_length_and_energy(augmented):
    out = augmented["out"]
    data = read_data_dir(out)
    for utt in read_data_dir(augmented["data"]).utts:
        dry, _ = soundfile.read(data["wav.scp"][utt])
        wet, _ = soundfile.read(data["wav.scp"]["rir-" + utt])
        assert len(wet) == len(dry)
        assert np.sum(wet**2) == pytest.approx(np.sum(dry**2), rel=1e-3)  # none needed scaling to 16 bits
        assert np.max(np.abs(wet - dry)) > 0.01  # it did reverberate
    details = [
        line.split("\t")[3] for line in (out / "augment.tsv").read_text().splitlines() if "\trir\t" in line
    ]
    names = {Path(d.split()[0].split("=")[1]).name for d in details}
    assert not any("noise" in name for name in names)  # RIRS_NOISES' noise recordings are not RIRs


def test_folds_train_on_copies_of_their_own_train_utterances_only(augmented):
    source = read_folds(augmented["folds"])
    result = read_folds(augmented["out"] / "folds.json", read_data_dir(augmented["out"]))
    assert_no_heldout_copies(source, result)
    assert result["protocol"] == "loso-session"
    assert [len(f["train"]) for f in result["folds"]] == [5 * len(f["train"]) for f in source["folds"]]


def test_random_folds_never_train_on_a_copy_of_their_test_utterances(tmp_path, sources):
    """Random folds put one utterance in train in one fold and in test in another: its copies exist in the
    data dir, but only folds that train on it see them."""
    data = make_wav_data(tmp_path, sessions=2, per_speaker=4)
    folds = make_folds(
        read_data_dir(data), "random", FoldOptions(ratios=(0.5, 0.25, 0.25), repeats=3, seed=1)
    )
    write_folds(tmp_path / "folds.json", folds, read_data_dir(data))
    augment_data_dir(data, tmp_path / "folds.json", tmp_path / "aug", speeds=(0.9,), noise=sources["musan"])
    result = read_folds(tmp_path / "aug" / "folds.json", read_data_dir(tmp_path / "aug"))
    for old, new in zip(folds["folds"], result["folds"], strict=True):
        assert new["valid"] == old["valid"] and new["test"] == old["test"]
        held_out = set(old["valid"]) | set(old["test"])
        assert not {strip_prefixes(u) for u in new["train"]} & held_out
    tested_elsewhere = set(folds["folds"][0]["test"]) & set(folds["folds"][1]["train"])
    assert tested_elsewhere  # the case the test is about
    copies = {"sp0.9-" + u for u in tested_elsewhere}
    assert copies <= set(result["folds"][1]["train"]) and not copies & set(result["folds"][0]["train"])


def test_chained_runs_combine_perturbations(tmp_path, sources):
    """A second run over the first one's output perturbs the copies too, still within each fold's train part."""
    data = make_wav_data(tmp_path, sessions=3, per_speaker=2)
    write_folds(tmp_path / "f.json", make_folds(read_data_dir(data), "loso-session"), read_data_dir(data))
    augment_data_dir(data, tmp_path / "f.json", tmp_path / "sp", speeds=(0.9,))
    augment_data_dir(
        tmp_path / "sp", tmp_path / "sp" / "folds.json", tmp_path / "sp_noise", noise=sources["musan"]
    )
    result = read_data_dir(tmp_path / "sp_noise")
    assert len(result.utts) == 12 * 4 and "noise-sp0.9-Ses01F_impro01_F000" in result.utts
    source = read_folds(tmp_path / "f.json")
    chained = read_folds(tmp_path / "sp_noise" / "folds.json", result)
    for old, new in zip(source["folds"], chained["folds"], strict=True):
        assert new["test"] == old["test"] and new["valid"] == old["valid"]
        assert {strip_prefixes(u) for u in new["train"]} == set(old["train"])
        assert len(new["train"]) == 4 * len(old["train"])


def test_check_augmented_folds_catches_a_leak():
    folds = {
        "protocol": "random",
        "folds": [{"name": "fold1", "train": ["a"], "valid": ["b"], "test": ["c"]}],
    }
    good = augment_folds(folds, {"a": ["sp0.9-a"]})
    check_augmented_folds(folds, good, {"sp0.9-a": "a", "sp0.9-c": "c"})
    leaky = json.loads(json.dumps(good))
    leaky["folds"][0]["train"].append("sp0.9-c")
    with pytest.raises(RuntimeError, match="fold1.train holds sp0.9-c"):
        check_augmented_folds(folds, leaky, {"sp0.9-a": "a", "sp0.9-c": "c"})
    moved = json.loads(json.dumps(good))
    moved["folds"][0]["test"].append("sp0.9-a")
    with pytest.raises(RuntimeError, match="fold1.test changed"):
        check_augmented_folds(folds, moved, {"sp0.9-a": "a"})
    missing = {
        "protocol": "random",
        "folds": [{"name": "fold1", "train": ["a"], "valid": ["b"], "test": ["c"]}],
    }
    with pytest.raises(RuntimeError, match="fold1.train is wrong"):
        check_augmented_folds(folds, missing, {"sp0.9-a": "a"})


def test_features_dump_from_the_augmented_dir(augmented, tmp_path):
    summary = dump_features(augmented["out"], tmp_path / "logmel40")
    assert summary["utterances"] == 90 and summary["skipped"] == 0


def test_rerun_skips_and_a_changed_option_redoes(augmented, monkeypatch, sources):
    a = augmented
    record = read_record(record_path(a["out"], "augment"))
    assert record is not None and record.stage == "augment"
    assert set(record.inputs) == {"data", "audio", "folds", "noise", "rir"}
    assert record.options == {
        "speed": [0.9, 1.1],
        "seed": 3,
        "noise": str(sources["musan"].resolve()),
        "snr": [0.0, 15.0],
        "rir": str(sources["rirs"].resolve()),
    }
    assert read_record(record_path(a["out"] / "folds.json")).inputs["augment"] == record.key

    def never(*args, **kwargs):
        raise AssertionError("an up-to-date output was recomputed")

    monkeypatch.setattr(copies.CopyMaker, "make", never)
    options = dict(speeds=(0.9, 1.1), noise=sources["musan"], snr=(0, 15), rir=sources["rirs"], seed=3)
    again = augment_data_dir(a["data"], a["folds"], a["out"], **options)
    assert again["reused"] and again["copies"] == a["summary"]["copies"]
    monkeypatch.undo()

    before = (a["out"] / "augment.tsv").read_text()
    redone = augment_data_dir(a["data"], a["folds"], a["out"], **{**options, "snr": (5, 10)})
    assert not redone["reused"]
    assert (a["out"] / "augment.tsv").read_text() != before
    snrs = [
        float(line.split("snr=")[1])
        for line in (a["out"] / "augment.tsv").read_text().splitlines()
        if "snr=" in line
    ]
    assert snrs and all(5 <= s <= 10 for s in snrs)
    assert check(record_path(a["out"], "augment"), read_record(record_path(a["out"], "augment"))) == []
    # An output edited by hand is not trusted: the rerun redoes it.
    (a["out"] / "utt2emo").write_text((a["out"] / "utt2emo").read_text())
    assert not augment_data_dir(a["data"], a["folds"], a["out"], **{**options, "snr": (5, 10)})["reused"]
    augment_data_dir(a["data"], a["folds"], a["out"], **options)  # back to the fixture's state


def test_same_seed_same_audio_whatever_nj(tmp_path, sources):
    """--nj changes who makes a batch, never what it holds: the files are identical. The batch size (a
    constant) changes the FFT and resampling lengths, so only rounding: the same draws, samples within 1 LSB."""
    data = make_wav_data(tmp_path, sessions=3, per_speaker=2)
    write_folds(tmp_path / "f.json", make_folds(read_data_dir(data), "loso-session"), read_data_dir(data))
    kwargs = dict(speeds=(1.1,), noise=sources["musan"], rir=sources["rirs"], seed=5)
    batches, _ = copies.plan_batches(read_data_dir(data)["wav.scp"], 6000 * 2)
    assert len(batches) > 2
    with pytest.MonkeyPatch.context() as patch:
        # Small batches: the two workers share them and finish in any order.
        patch.setattr(copies, "BATCH_SAMPLES", 6000 * 2)
        augment_data_dir(data, tmp_path / "f.json", tmp_path / "one", nj=1, **kwargs)
        augment_data_dir(data, tmp_path / "f.json", tmp_path / "two", nj=2, **kwargs)
    augment_data_dir(data, tmp_path / "f.json", tmp_path / "big", nj=1, **kwargs)
    log = (tmp_path / "one" / "augment.tsv").read_text()
    assert (
        log
        == (tmp_path / "two" / "augment.tsv").read_text()
        == (tmp_path / "big" / "augment.tsv").read_text()
    )
    for wav in sorted((tmp_path / "one" / "wav").iterdir()):
        assert wav.read_bytes() == (tmp_path / "two" / "wav" / wav.name).read_bytes(), wav.name
        one = soundfile.read(str(wav), dtype="int16")[0].astype(int)
        big = soundfile.read(str(tmp_path / "big" / "wav" / wav.name), dtype="int16")[0].astype(int)
        assert len(one) == len(big) and np.abs(one - big).max() <= 1, wav.name
    other = augment_data_dir(data, tmp_path / "f.json", tmp_path / "seed6", **{**kwargs, "seed": 6})
    assert other["copies"]["noise"] == 12
    assert (tmp_path / "seed6" / "augment.tsv").read_text() != log


def test_interrupted_run_leaves_nothing_trusted(tmp_path, monkeypatch, sources):
    data = make_wav_data(tmp_path, sessions=3, per_speaker=2)
    write_folds(tmp_path / "f.json", make_folds(read_data_dir(data), "loso-session"), read_data_dir(data))
    out = tmp_path / "aug"
    augment_data_dir(data, tmp_path / "f.json", out, speeds=(0.9,))
    assert check(record_path(out, "augment"), read_record(record_path(out, "augment"))) == []
    real_write = copies.CopyMaker._write_rows
    calls = []

    def crash_midway(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_write(self, *args, **kwargs)

    monkeypatch.setattr(copies.CopyMaker, "_write_rows", crash_midway)
    with pytest.raises(KeyboardInterrupt):
        augment_data_dir(data, tmp_path / "f.json", out, speeds=(0.9, 1.1))
    monkeypatch.setattr(copies.CopyMaker, "_write_rows", real_write)
    assert not record_path(out, "augment").exists() and not record_path(out / "folds.json").exists()
    assert not list(tmp_path.glob(".aug.tmp*"))  # the half-made temp dir is gone
    redone = augment_data_dir(data, tmp_path / "f.json", out, speeds=(0.9, 1.1))
    assert not redone["reused"] and redone["copies"]["speed"] == 24
    assert augment_data_dir(data, tmp_path / "f.json", out, speeds=(0.9, 1.1))["reused"]


def test_corrupt_noise_and_rir_files_are_skipped_and_counted(tmp_path, capsys):
    noise = tmp_path / "noise"
    write_musan_like(tmp_path / "musan")
    (noise / "deep").mkdir(parents=True)
    good = find_noise_files(tmp_path / "musan")
    for i, path in enumerate(good[:2]):
        (noise / "deep" / f"good{i}.wav").write_bytes(path.read_bytes())
    (noise / "garbage.wav").write_bytes(b"this is not a wav file at all")
    soundfile.write(str(noise / "empty.wav"), np.zeros(0, dtype=np.int16), RATE, subtype="PCM_16")
    soundfile.write(str(noise / "silent.flac"), np.zeros(RATE, dtype=np.int16), RATE)
    (noise / "notes.txt").write_text("not audio")
    usable, skipped = load_sources(noise, "noise")
    # Found recursively, .wav and .flac; the header scan skips the unreadable and the empty file.
    assert sorted(s.name for s in usable) == ["deep/good0.wav", "deep/good1.wav", "silent.flac"]
    assert len(skipped) == 2 and any("garbage.wav: cannot read audio" in m for m in skipped)
    assert any("empty.wav: empty audio file (noise file)" in m for m in skipped)

    data = make_wav_data(tmp_path / "d", sessions=3, per_speaker=2)
    write_folds(tmp_path / "f.json", make_folds(read_data_dir(data), "loso-session"), read_data_dir(data))
    rirs = tmp_path / "rirs"
    rirs.mkdir()
    for path in write_rirs_like(tmp_path / "RIRS_NOISES")[:1]:
        (rirs / "ok.wav").write_bytes(path.read_bytes())
    (rirs / "broken.wav").write_bytes(b"RIFF\x00\x00")
    summary = augment_data_dir(data, tmp_path / "f.json", tmp_path / "aug", noise=noise, rir=rirs)
    # The silent file passes the header scan, is found silent when drawn, and is counted then.
    assert summary["bad_noise"] == 3 and summary["bad_rir"] == 1
    assert summary["copies"] == {"speed": 0, "noise": 12, "rir": 12}
    log = capsys.readouterr().err
    assert "garbage.wav: cannot read audio" in log and "broken.wav: cannot read audio" in log
    assert "silent.flac: silent or empty noise segment" in log
    assert "3 noise and 1 RIR files skipped as unreadable or silent" in log
    used = {
        line.split("noise=")[1].split()[0]
        for line in (tmp_path / "aug" / "augment.tsv").read_text().splitlines()
        if "noise=" in line
    }
    assert used <= {"deep/good0.wav", "deep/good1.wav"}
    with pytest.raises(SertkError, match="none of the 1 rir files is readable"):
        load_sources(_only(tmp_path / "only_broken", rirs / "broken.wav"), "rir")


def _only(directory: Path, file: Path) -> Path:
    directory.mkdir()
    (directory / file.name).write_bytes(file.read_bytes())
    return directory


def test_read_source_resamples_and_takes_the_first_channel(tmp_path):
    t = np.arange(8000) / 8000
    stereo = np.stack([0.5 * np.sin(2 * np.pi * 200 * t), 0.5 * np.sin(2 * np.pi * 1000 * t)], axis=1)
    soundfile.write(str(tmp_path / "n.wav"), stereo, 8000, subtype="PCM_16")
    (source,), skipped = load_sources(tmp_path, "noise")
    assert not skipped and (source.frames, source.sample_rate, source.frames_at(RATE)) == (8000, 8000, 16000)
    wave = read_source(source, RATE)
    assert len(wave) == 16000
    spectrum = np.abs(np.fft.rfft(wave))
    assert (
        np.argmax(spectrum) == 200
    )  # 200 Hz at 1 Hz per bin: channel 0, the 1 kHz channel 1 is not mixed in
    assert spectrum[1000] < 1e-3 * spectrum[200]
    segment = read_source(source, RATE, start=4000, frames=100)
    np.testing.assert_allclose(segment, wave[4000:4100])


def test_layouts_of_musan_and_rirs_noises(tmp_path):
    noises = write_musan_like(tmp_path / "musan")
    assert find_noise_files(tmp_path / "musan") == noises
    assert len(find_noise_files(tmp_path / "musan" / "music")) == 1  # any other dir: every wav below it
    assert len(find_noise_files(tmp_path / "musan" / "noise")) == 3
    rirs = write_rirs_like(tmp_path / "RIRS_NOISES")
    assert find_rir_files(tmp_path / "RIRS_NOISES") == rirs
    assert len(rirs) == 7 and not any("noise" in p.name for p in rirs)
    assert len(find_rir_files(tmp_path / "RIRS_NOISES" / "simulated_rirs" / "smallroom")) == 2
    with pytest.raises(SertkError, match="noise directory not found"):
        find_noise_files(tmp_path / "nope")


def test_bad_options(tmp_path, augmented):
    assert parse_speeds("0.9,1.0,1.1") == (0.9, 1.1)
    assert parse_speeds("") == ()
    assert parse_speeds("0.5,2") == (0.5, 2.0)  # the bounds of [0.5, 2] are allowed
    assert parse_snr("0:15") == (0.0, 15.0) and parse_snr("10") == (10.0, 10.0)
    with pytest.raises(SertkError, match="--speed 'fast'"):
        parse_speeds("fast")
    with pytest.raises(SertkError, match="in \\[0.5, 2\\], got 3"):
        parse_speeds("0.9,3")
    with pytest.raises(SertkError, match="appears twice"):
        parse_speeds("0.9,0.90")
    with pytest.raises(SertkError, match="--snr '15:0'"):
        parse_snr("15:0")
    a = augmented
    with pytest.raises(SertkError, match="nothing to do"):
        augment_data_dir(a["data"], a["folds"], tmp_path / "x")
    with pytest.raises(SertkError, match="not DATA itself"):
        augment_data_dir(a["data"], a["folds"], a["data"], speeds=(0.9,))
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.md").write_text("mine")
    with pytest.raises(SertkError, match="holds files sertk augment did not write .notes.md."):
        augment_data_dir(a["data"], a["folds"], tmp_path / "mine", speeds=(0.9,))
    assert (tmp_path / "mine" / "notes.md").read_text() == "mine"


def test_cli_augment_help_and_one_line_errors(tmp_path):
    def sertk(*args):
        code = "import sys; from sertk.cli import main; sys.argv = ['sertk'] + sys.argv[1:]; main()"
        return subprocess.run(
            [sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=120
        )

    help_text = sertk("augment", "--help")
    assert help_text.returncode == 0 and "Example" in help_text.stdout and "sertk augment" in help_text.stdout
    out = sertk(
        "augment", str(tmp_path / "nodata"), str(tmp_path / "f.json"), str(tmp_path / "o"), "--speed", "0.9"
    )
    assert out.returncode == 1
    assert [line for line in out.stderr.splitlines() if line.strip()] == [
        f"error: {tmp_path / 'nodata'}: data dir not found"
    ]


def write_pcm(path: Path, samples: np.ndarray, rate: int = RATE) -> Path:
    """Integer samples as a 16-bit wav (read back exactly as samples / 32768)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    soundfile.write(str(path), samples.astype(np.int16), rate, subtype="PCM_16")
    return path


def test_only_utterances_that_train_in_some_fold_get_copies(tmp_path):
    """An utterance that is only ever valid or test gets no copy at all, not even an unused one."""
    data = make_wav_data(tmp_path, sessions=1, per_speaker=2)
    utts = sorted(read_data_dir(data).utts)  # F000 F001 M000 M001
    fold = {"name": "fold1", "train": [utts[0], utts[2]], "valid": [utts[1]], "test": [utts[3]]}
    write_folds(tmp_path / "f.json", {"protocol": "random", "folds": [fold]}, read_data_dir(data))
    summary = augment_data_dir(data, tmp_path / "f.json", tmp_path / "aug", speeds=(0.9,))
    assert summary["sources"] == 2 and summary["copies"]["speed"] == 2
    assert sorted(read_data_dir(tmp_path / "aug").utts) == sorted(
        [*utts, f"sp0.9-{utts[0]}", f"sp0.9-{utts[2]}"]
    )
    assert sorted(p.name for p in (tmp_path / "aug" / "wav").iterdir()) == [
        f"sp0.9-{utts[0]}.wav",
        f"sp0.9-{utts[2]}.wav",
    ]


def test_check_augmented_folds_refuses_a_copy_listed_twice():
    folds = {"protocol": "random", "folds": [{"name": "fold1", "train": ["a"], "valid": [], "test": ["c"]}]}
    twice = {
        "protocol": "random",
        "folds": [{"name": "fold1", "train": ["a", "sp0.9-a", "sp0.9-a"], "valid": [], "test": ["c"]}],
    }
    with pytest.raises(RuntimeError, match="fold1.train is wrong"):
        check_augmented_folds(folds, twice, {"sp0.9-a": "a"})


def test_a_reverberated_copy_is_aligned_on_the_direct_path_of_its_rir(tmp_path):
    """A RIR that is one impulse after 120 samples of silence only delays the sound: the copy, aligned on
    that direct path and kept at the input's energy, is the original sample for sample (within 1 LSB)."""
    dry = np.round(9000 * np.sin(2 * np.pi * 230 * np.arange(3000) / RATE))
    wav = write_pcm(tmp_path / "utt.wav", dry)
    rir = np.zeros(400)
    rir[120] = 16000
    write_pcm(tmp_path / "rirs" / "delayed.wav", rir)
    rirs, _ = load_sources(tmp_path / "rirs", "rir")
    options = copies.AugmentOptions(rir=tmp_path / "rirs")
    (tmp_path / "out").mkdir()
    result = copies.CopyMaker(options, [], rirs, tmp_path / "out").make((RATE, [("utt", str(wav))]))
    assert [c["detail"] for c in result["copies"]] == ["rir=delayed.wav delay=120"]
    wet = soundfile.read(str(tmp_path / "out" / "rir-utt.wav"), dtype="int16")[0].astype(int)
    assert len(wet) == len(dry) and np.abs(wet - dry).max() <= 1


def test_a_noise_segment_starts_at_its_recorded_offset(tmp_path):
    """A noise longer than the utterance gives samples [offset, offset + n); a shorter one is repeated
    from its offset: sample k of the segment is sample (offset + k) mod N of the file."""
    ramp = np.arange(1, 101) * 100  # 100 distinct samples
    write_pcm(tmp_path / "noise" / "ramp.wav", ramp)
    noise, _ = load_sources(tmp_path / "noise", "noise")
    maker = copies.CopyMaker(copies.AugmentOptions(noise=tmp_path / "noise"), noise, [], tmp_path)
    offsets = set()
    for seed in range(6):
        for n in (40, 250):
            segment, detail = maker._pick_noise(np.random.default_rng(seed), n, RATE, {"bad_sources": {}})
            offset = int(detail.split("offset=")[1])
            offsets.add(offset)
            expected = ramp[offset : offset + n] if n <= 100 else ramp[(offset + np.arange(n)) % 100]
            np.testing.assert_array_equal(np.round(segment * 32768), expected)
    assert len(offsets) > 3  # the offsets do vary


def test_a_copy_louder_than_16_bits_is_scaled_down_as_a_whole(tmp_path):
    """Row [0.3, -2, 0.8] peaks at 2: scaled by (32767/32768) / 2 it is [4915.05, -32767, 13106.8] / 32768,
    written as [4915, -32767, 13107], not clipped or wrapped; a row within 16 bits is written as it is."""
    result = {"copies": [], "scaled": 0}
    out = torch.tensor([[0.3, -2.0, 0.8], [0.5, -0.25, 0.0]])
    rows = [(0, "loud"), (1, "quiet")]
    copies.CopyMaker(copies.AugmentOptions(), [], [], tmp_path)._write_rows(
        result, "noise", "noise", ["a", "b"], rows, out, torch.tensor([3, 2]), RATE
    )
    assert result["scaled"] == 1
    loud = soundfile.read(str(tmp_path / "noise-a.wav"), dtype="int16")[0]
    quiet = soundfile.read(str(tmp_path / "noise-b.wav"), dtype="int16")[0]
    assert loud.tolist() == [4915, -32767, 13107] and quiet.tolist() == [16384, -8192]


def test_each_batch_holds_one_sample_rate(tmp_path):
    """Utterances at 8 and 16 kHz never share a batch, so each copy is made and written at its source's rate."""
    wavs = {
        "a": str(write_pcm(tmp_path / "a.wav", np.ones(100), 8000)),
        "b": str(write_pcm(tmp_path / "b.wav", np.ones(120), RATE)),
        "c": str(write_pcm(tmp_path / "c.wav", np.ones(90), 8000)),
    }
    batches, errors = copies.plan_batches(wavs, 10**6)
    assert not errors
    assert batches == [(8000, [("c", wavs["c"]), ("a", wavs["a"])]), (RATE, [("b", wavs["b"])])]


def test_a_musan_root_needs_all_three_parts_and_other_rates_read_like_torchaudio(tmp_path):
    """A dir holding speech/ (but not noise/ and music/) is no MUSAN root: all its files count. A source at
    another rate has torchaudio's resampled length, ceil(N · new / old), and is cut after resampling."""
    write_pcm(tmp_path / "mine" / "speech" / "s.wav", np.ones(50))
    write_pcm(tmp_path / "mine" / "other" / "o.wav", np.ones(50))
    assert [p.name for p in find_noise_files(tmp_path / "mine")] == ["o.wav", "s.wav"]
    for frames, rate in ((100, 44100), (333, 22050), (8000, 8000)):
        resampled = torchaudio.functional.resample(torch.zeros(frames), rate, RATE)
        assert SourceFile(Path("x.wav"), "x.wav", frames, rate).frames_at(RATE) == len(resampled)
    wave = np.round(8000 * np.sin(2 * np.pi * 300 * np.arange(800) / 8000))
    source = SourceFile(write_pcm(tmp_path / "n8k.wav", wave, 8000), "n8k.wav", 800, 8000)
    whole = read_source(source, RATE)
    np.testing.assert_array_equal(read_source(source, RATE, start=500), whole[500:])


def test_synthetic_rirs_decay_60_db_over_their_rt60():
    """Schroeder backward integration (ISO 3382): the energy decay curve falls from -5 to -25 dB in a third of
    the reverberation time, so 3x that time is the RT60 the response was made with."""
    for rt60 in (0.2, 0.5):
        h = impulse_response(rt60, 40, np.random.default_rng(0))
        assert len(h) == 40 + int(rt60 * RATE) and np.argmax(np.abs(h)) == 40 and not np.any(h[:40])
        decay = np.cumsum(h[41:][::-1] ** 2)[::-1]
        db = 10 * np.log10(decay / decay[0])
        t5, t25 = np.argmax(db <= -5) / RATE, np.argmax(db <= -25) / RATE
        assert 3 * (t25 - t5) == pytest.approx(rt60, rel=0.1)


def test_synthetic_rirs_peak_at_their_direct_path():
    """The direct path h[delay] = 1 is the largest |h| of every response, so copies are aligned on it."""
    for seed in range(200):
        rt60 = (0.2, 0.4, 0.7)[seed % 3]
        assert np.argmax(np.abs(impulse_response(rt60, 30, np.random.default_rng(seed)))) == 30, seed


def test_synthetic_noise_has_the_power_spectrum_slope_of_its_colour():
    """Power ∝ 1 / f^e: the log-log slope of the averaged periodogram is -e (0 white, 1 pink, 2 brown)."""
    for exponent in (0.0, 1.0, 2.0):
        wave = coloured_noise(2**15, exponent, np.random.default_rng(1))
        assert np.mean(wave**2) == pytest.approx(1.0)
        power = np.abs(np.fft.rfft(wave)) ** 2
        edges = np.unique(np.geomspace(8, len(power) - 1, 25).astype(int))
        centres = np.sqrt(edges[:-1] * edges[1:])
        bands = [power[lo:hi].mean() for lo, hi in zip(edges[:-1], edges[1:], strict=True)]
        slope = np.polyfit(np.log10(centres), np.log10(bands), 1)[0]
        assert slope == pytest.approx(-exponent, abs=0.15)


def test_a_copy_id_already_in_the_data_dir_is_refused(tmp_path):
    """Speed copies of a dir that already holds ``sp0.9-<utt>`` would overwrite it with another sound."""
    data = make_wav_data(tmp_path, sessions=3, per_speaker=1)
    write_folds(tmp_path / "f.json", make_folds(read_data_dir(data), "loso-session"), read_data_dir(data))
    augment_data_dir(data, tmp_path / "f.json", tmp_path / "sp", speeds=(0.9,))
    with pytest.raises(SertkError, match="already holds sp0.9-Ses0"):
        augment_data_dir(tmp_path / "sp", tmp_path / "sp" / "folds.json", tmp_path / "sp2", speeds=(0.9,))
    assert not (tmp_path / "sp2").exists()
