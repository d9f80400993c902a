"""The synthetic IEMOCAP-format corpus: layout, file formats, label proportions, determinism, audio sanity."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from sertk.corpora.synthetic import (
    PUBLISHED_COUNTS,
    SIZES,
    generate_corpus,
    plan_corpus,
    synthesize,
)
from sertk.errors import SertkError

SUFFIXED = ("Ses03M_impro05a", "Ses03M_impro05b", "Ses03M_impro08a", "Ses03M_impro08b", "Ses05M_script01_1b")
SUMMARY = re.compile(
    r"^\[(\d+\.\d{4}) - (\d+\.\d{4})\]\t(\S+)\t([a-z]{3})\t\[\d\.\d{4}, \d\.\d{4}, \d\.\d{4}\]$"
)
CATEGORY_VOTE = re.compile(
    r"^(Neutral|Happiness|Excited|Anger|Sadness|Frustration|Surprise|Fear|Disgust|Other)"
)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> tuple[Path, list, dict]:
    out = tmp_path_factory.mktemp("synth") / "IEMOCAP_full_release"
    summary = generate_corpus(out, "tiny", seed=0, nj=2)
    return out, plan_corpus("tiny", 0), summary


def wav_files(root: Path) -> dict[str, Path]:
    return {p.stem: p for p in root.glob("Session*/sentences/wav/*/*.wav")}


def autocorrelation_f0(x: np.ndarray, fs: int = 16000) -> float:
    """Median F0 (Hz) over voiced 40 ms frames: the lag of the normalised autocorrelation peak, 70-450 Hz."""
    frame, hop = 640, 320
    frames = np.lib.stride_tricks.sliding_window_view(x, frame)[::hop]
    frames = frames - frames.mean(axis=1, keepdims=True)
    energy = np.sum(frames**2, axis=1)
    frames = frames[energy > 0.05 * energy.max()]
    spectrum = np.fft.rfft(frames, 2 * frame)
    ac = np.fft.irfft(np.abs(spectrum) ** 2)[:, :frame]
    ac /= ac[:, :1]
    lo, hi = fs // 450, fs // 70
    lag = lo + np.argmax(ac[:, lo:hi], axis=1)
    voiced = ac[np.arange(len(lag)), lag] > 0.4
    return float(np.median(fs / lag[voiced])) if voiced.any() else float("nan")


def test_tree_matches_plan(corpus):
    root, plans, summary = corpus
    assert sorted(p.name for p in root.glob("Session*")) == [f"Session{i}" for i in range(1, 6)]
    assert (root / "SYNTHETIC_CORPUS.txt").read_text().startswith("THIS IS A SYNTHETIC CORPUS")
    wavs = wav_files(root)
    assert sorted(wavs) == sorted(p.utt for p in plans)
    assert summary["utterances"] == len(plans) and summary["speakers"] == 10 and summary["sessions"] == 5
    # Every one of the 11 codes occurs even in tiny (the summary lists all 11).
    assert summary["labels"] == dict(Counter(p.label for p in plans))
    assert set(summary["labels"]) == set(PUBLISHED_COUNTS)
    assert {p.speaker for p in plans} == {f"Ses0{s}{g}" for s in range(1, 6) for g in "FM"}
    for plan in plans:
        info = sf.info(str(wavs[plan.utt]))
        assert (info.samplerate, info.channels, info.subtype) == (16000, 1, "PCM_16")
        assert wavs[plan.utt].parent.name == plan.dialog
        assert plan.speaker == f"Ses0{plan.session}{plan.utt.split('_')[-1][0]}"
        assert abs(info.frames / 16000 - (plan.end - plan.start)) < 0.010
    dialogs = {p.name for p in root.glob("Session*/sentences/wav/*")}
    assert set(SUFFIXED) <= dialogs
    assert {"impro", "script"} == {p.style for p in plans}
    assert all(p.style == ("impro" if "_impro" in p.dialog else "script") for p in plans)
    for session in range(1, 6):
        emo = root / f"Session{session}" / "dialog" / "EmoEvaluation"
        assert list((emo / "Categorical").glob("*_cat.txt"))
        xx = [
            line
            for f in (root / f"Session{session}" / "dialog" / "transcriptions").glob("*.txt")
            for line in f.read_text().splitlines()
            if re.match(r"^Ses\S+_[FM]XX\d+ \[\d{3}\.\d{4}-\d{3}\.\d{4}\]: ", line)
        ]
        assert xx, f"Session{session} has no XX turns"
        assert not any(line.split()[0] in wavs for line in xx)


def test_emo_evaluation_format(corpus):
    root, plans, _ = corpus
    by_utt = {p.utt: p for p in plans}
    seen = set()
    for path in root.glob("Session*/dialog/EmoEvaluation/*.txt"):
        blocks = path.read_text().split("\n\n")
        assert blocks[0] == "% [START_TIME - END_TIME] TURN_NAME EMOTION [V, A, D]"
        for block in filter(None, (b.strip("\n") for b in blocks[1:])):
            lines = block.split("\n")
            match = SUMMARY.match(lines[0])
            assert match, lines[0]
            start, end, utt, code = match.groups()
            plan = by_utt[utt]
            assert (float(start), float(end), code) == (plan.start, plan.end, plan.label)
            votes = [line for line in lines[1:] if re.match(r"^C-E\d:\t", line)]
            assert len(votes) == len(plan.votes)
            for line in votes:
                _, body, comment = line.split("\t")
                assert re.fullmatch(r"\(.*\)", comment)
                for name in body.rstrip(";").split("; "):
                    assert CATEGORY_VOTE.match(name), line
            for line in lines[1:]:
                assert re.match(r"^(C-E\d|C-[FM]1|A-E\d|A-[FM]1):\t", line), line
                if line.startswith("A-"):
                    assert re.match(r"^A-\S+:\tval \d; act \d; dom  \d;\t\(.*\)$", line), line
            seen.add(utt)
    assert seen == set(by_utt)
    transcript = (root / "Session1/dialog/transcriptions" / f"{plans[0].dialog}.txt").read_text()
    assert f"{plans[0].utt} [{plans[0].start:08.4f}-{plans[0].end:08.4f}]: {plans[0].text}\n" in transcript


def test_votes_agree_with_labels():
    for plan in plan_corpus("small", 3):
        counts = Counter(code for vote in plan.votes for code in vote)
        top = counts.most_common()
        if plan.label == "xxx":
            assert top[0][1] * 2 <= len(plan.votes)
        else:
            assert top[0][0] == plan.label and top[0][1] * 2 > len(plan.votes)
            assert len(top) == 1 or top[1][1] < top[0][1]


def test_full_plan_proportions():
    plans = plan_corpus("full", 0)
    counts = Counter(p.label for p in plans)
    total = sum(PUBLISHED_COUNTS.values())
    for code, published in PUBLISHED_COUNTS.items():
        assert abs(counts[code] / len(plans) - published / total) < 0.01
    impro = Counter(p.label for p in plans if p.style == "impro")
    assert abs(impro["neu"] + impro["hap"] + impro["ang"] + impro["sad"] - 2280) < 0.03 * 2280
    assert abs(impro["sad"] / counts["sad"] - 608 / 1084) < 0.03
    four = Counter(p.session for p in plans if p.label in {"neu", "hap", "exc", "ang", "sad"})
    for session, published in zip(range(1, 6), (1085, 1023, 1151, 1031, 1241), strict=True):
        assert abs(four[session] - published) < 0.03 * published
    durations = np.array([p.duration for p in plans])
    assert 4.0 < durations.mean() < 5.0 and durations.min() >= 0.6
    small = Counter(p.label for p in plan_corpus("small", 0))
    assert set(small) == set(PUBLISHED_COUNTS)


def test_determinism(corpus, tmp_path):
    root, plans, _ = corpus
    again = generate_corpus(tmp_path / "again", "tiny", seed=0, nj=1)
    sample = [plans[i].utt for i in (0, 17, 55, len(plans) - 1)]
    first, second = wav_files(root), wav_files(Path(again["root"]))
    for utt in sample:
        assert first[utt].read_bytes() == second[utt].read_bytes()
    emo = next(root.glob("Session2/dialog/EmoEvaluation/*.txt"))
    assert emo.read_bytes() == (Path(again["root"]) / emo.relative_to(root)).read_bytes()
    assert not np.array_equal(synthesize(plans[0], seed=0), synthesize(plans[0], seed=1))
    other = plan_corpus("tiny", seed=1)
    assert [(p.utt, p.label, p.duration) for p in other] != [(p.utt, p.label, p.duration) for p in plans]


def test_existing_corpus_is_skipped_or_refused(corpus, tmp_path):
    root, _, summary = corpus
    wav = next(iter(wav_files(root).values()))
    mtime = wav.stat().st_mtime_ns
    assert generate_corpus(root, "tiny", seed=0) == summary
    assert wav.stat().st_mtime_ns == mtime
    with pytest.raises(SertkError, match="not the synthetic corpus size=tiny seed=1"):
        generate_corpus(root, "tiny", seed=1)
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "file").write_text("x")
    with pytest.raises(SertkError, match="junk"):
        generate_corpus(tmp_path / "junk", "tiny")
    with pytest.raises(SertkError, match="unknown synthetic corpus size 'huge'"):
        generate_corpus(tmp_path / "x", "huge")
    with pytest.raises(SertkError, match="unknown synthetic corpus size"):
        plan_corpus("medium")
    assert set(SIZES) == {"tiny", "small", "full"}


def test_audio_not_degenerate(corpus):
    root, plans, _ = corpus
    wavs = wav_files(root)
    rows = []
    for plan in plans:
        audio, _ = sf.read(wavs[plan.utt], dtype="float64")
        assert np.abs(audio).max() < 0.999, f"{plan.utt} clips"
        assert np.abs(audio).max() > 0.01, f"{plan.utt} is silent"
        frames = np.lib.stride_tricks.sliding_window_view(audio, 400)[::160]
        active_db = 10 * np.log10(np.mean(frames**2, axis=1) + 1e-12)
        active_db = active_db[active_db > active_db.max() - 30]
        rows.append((plan.speaker, plan.label, np.log2(autocorrelation_f0(audio)), np.mean(active_db)))
    # Relative to each speaker's mean: the emotion targets are relative to the speaker's neutral voice.
    speakers = {s for s, *_ in rows}
    mean = {s: np.nanmean([r[2:] for r in rows if r[0] == s], axis=0) for s in speakers}
    rel = [(label, *(np.array(values) - mean[s])) for s, label, *values in rows]

    def class_mean(labels, column):
        return np.nanmean([r[column] for r in rel if r[0] in labels])

    f0 = {c: class_mean({c}, 1) for c in ("ang", "neu", "sad")} | {"hap": class_mean({"hap", "exc"}, 1)}
    energy = {c: class_mean({c}, 2) for c in ("ang", "neu", "sad")}
    assert f0["ang"] > f0["neu"] > f0["sad"]
    assert f0["hap"] > f0["neu"]
    assert energy["ang"] > energy["neu"] > energy["sad"]
    # Not trivially separable either: some sad turns are louder than some neutral ones.
    neu = [r[2] for r in rel if r[0] == "neu"]
    sad = [r[2] for r in rel if r[0] == "sad"]
    assert max(sad) > min(neu)
