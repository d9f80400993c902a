"""sertk.utils and sertk.features.audio: publishing a finished dir, atomic files, JSON, devices, audio headers."""

from __future__ import annotations

import os

import numpy as np
import pytest
import soundfile
import torch
import torchaudio.functional

from sertk.errors import SertkError
from sertk.features.audio import audio_info, read_audio
from sertk.utils import (
    atomic_path,
    batch_results,
    check_replaceable,
    fresh_tmp_dir,
    publish_dir,
    read_json,
    resolve_device,
)


def _owned(entry):
    return entry.name in {"a.txt", "b.txt"}


def _made(tmp_path, name, files):
    path = tmp_path / name
    path.mkdir()
    for file, text in files.items():
        (path / file).write_text(text)
    return path


def test_publish_replaces_a_dir_of_owned_files_and_leaves_no_temp(tmp_path):
    out = _made(tmp_path, "out", {"a.txt": "old", "b.txt": "old"})
    new = _made(tmp_path, "new", {"a.txt": "new"})
    publish_dir(new, out, _owned)
    assert {p.name: p.read_text() for p in out.iterdir()} == {"a.txt": "new"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_publish_touches_nothing_when_out_holds_a_users_file(tmp_path):
    out = _made(tmp_path, "out", {"a.txt": "old", "mine.txt": "keep"})
    new = _made(tmp_path, "new", {"a.txt": "new"})
    with pytest.raises(SertkError, match=r"out: exists and holds files sertk did not write \(mine.txt\)"):
        publish_dir(new, out, _owned)
    assert {p.name: p.read_text() for p in out.iterdir()} == {"a.txt": "old", "mine.txt": "keep"}
    assert (new / "a.txt").read_text() == "new"


def test_publish_into_a_new_path_makes_its_parents(tmp_path):
    new = _made(tmp_path, "new", {"a.txt": "new"})
    publish_dir(new, tmp_path / "x" / "y" / "out", _owned)
    assert (tmp_path / "x" / "y" / "out" / "a.txt").read_text() == "new" and not new.exists()


def test_check_replaceable_names_at_most_three_foreign_files(tmp_path):
    check_replaceable(tmp_path / "absent", _owned)
    check_replaceable(_made(tmp_path, "empty", {}), _owned)
    check_replaceable(_made(tmp_path, "ours", {"a.txt": "", "b.txt": ""}), _owned)
    out = _made(tmp_path, "theirs", {f"{c}.wav": "" for c in "vwxyz"} | {"a.txt": ""})
    with pytest.raises(SertkError, match=r"\(v.wav, w.wav, x.wav and 2 more\); choose another output path"):
        check_replaceable(out, _owned)
    user_dir = _made(tmp_path, "with_dir", {"a.txt": ""})
    (user_dir / "recordings").mkdir()
    with pytest.raises(SertkError, match=r"sertk did not write \(recordings\)"):
        check_replaceable(user_dir, _owned)
    (tmp_path / "file").write_text("")
    with pytest.raises(SertkError, match="file: exists and is not a directory"):
        check_replaceable(tmp_path / "file", _owned)


def test_fresh_tmp_dir_is_an_empty_hidden_sibling(tmp_path):
    out = tmp_path / "sub" / "out"
    first = fresh_tmp_dir(out)
    (first / "stale").write_text("from a killed run")
    again = fresh_tmp_dir(out)
    assert again == first == out.with_name(f".out.tmp{os.getpid()}") and not any(again.iterdir())


def test_atomic_path_renames_on_success_and_removes_the_temp_on_failure(tmp_path):
    target = tmp_path / "deep" / "r.json"
    with atomic_path(target) as tmp:
        assert tmp.parent == target.parent and tmp.name.startswith(".r.json.tmp")
        tmp.write_text("one")
    assert target.read_text() == "one"
    # A rename, not a rewrite in place: a hard link to the old file (a reader's view) keeps the old bytes.
    os.link(target, tmp_path / "snapshot")
    with atomic_path(target) as tmp:
        tmp.write_text("two")
    assert target.read_text() == "two" and (tmp_path / "snapshot").read_text() == "one"
    (tmp_path / "snapshot").unlink()
    with pytest.raises(RuntimeError), atomic_path(tmp_path / "dir") as tmp:
        tmp.mkdir()
        (tmp / "part").write_text("half")
        raise RuntimeError
    assert sorted(p.name for p in tmp_path.iterdir()) == ["deep"]


def test_read_json_errors_are_one_line(tmp_path):
    with pytest.raises(SertkError, match=r"missing.json: file not found"):
        read_json(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text('{"a": 1,\n "b": }')
    with pytest.raises(SertkError, match=r"bad.json: line 2: invalid JSON \(Expecting value\)"):
        read_json(bad)


def test_resolve_device_on_a_machine_without_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu") and resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(SertkError, match="--device cuda:1: CUDA is not available on this machine"):
        resolve_device("cuda:1")
    with pytest.raises(SertkError, match="--device tpu: expected auto, cpu or cuda"):
        resolve_device("tpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto") == torch.device("cuda")


def test_batch_results_runs_locally_on_one_thread_and_restores_the_count():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        with batch_results(lambda b: (b, torch.get_num_threads()), None, [1, 2, 3], nj=1) as results:
            assert list(results) == [(1, 1), (2, 1), (3, 1)]
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize(("frames", "rate"), [(8001, 8000), (44101, 44100), (16000, 16000), (22051, 22050)])
def test_audio_info_predicts_the_resampled_length(tmp_path, frames, rate):
    # The header alone gives ceil(N * 16000 / rate), the length torchaudio's resample returns.
    path = tmp_path / "x.wav"
    wave = np.random.default_rng(0).uniform(-0.5, 0.5, size=(frames, 2)).astype(np.float32)
    soundfile.write(path, wave, rate, subtype="FLOAT")
    info = audio_info(path, 16000)
    assert (info.num_samples, info.sample_rate, info.channels) == (frames, rate, 2)
    got, downmixed, resampled = read_audio(path, 16000)
    want = torchaudio.functional.resample(torch.from_numpy(wave.mean(axis=1)), rate, 16000).numpy()
    assert info.target_samples == len(got) == len(want) and downmixed and resampled == (rate != 16000)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)


def test_audio_info_refuses_empty_and_unreadable_files(tmp_path):
    empty = tmp_path / "empty.wav"
    soundfile.write(empty, np.zeros(0, dtype=np.float32), 16000)
    with pytest.raises(SertkError, match="empty.wav: empty audio file"):
        audio_info(empty, 16000)
    junk = tmp_path / "junk.wav"
    junk.write_bytes(b"RIFF....WAVEjunk")
    with pytest.raises(SertkError, match=r"junk.wav: cannot read audio \("):
        audio_info(junk, 16000)
