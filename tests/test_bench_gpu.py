"""tools/bench_gpu.sh --device cpu --tiny: every system trains in fp32 and bf16 autocast through sertk train."""

import json
import math
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))

import bench_gpu  # noqa: E402

SYSTEMS = ("crnn_discriminative", "cnn_blstm_vtlp", "lstm_attention", "attention_pooling_cnn", "rlc_gca_lstm")


def test_real_utterance_counts_match_the_published_iemocap_counts():
    counts = {s: p.real_utterances for s, p in bench_gpu.PAPER_PROTOCOLS.items()}
    assert counts == {
        "crnn_discriminative": 5531,
        "cnn_blstm_vtlp": 2280,
        "lstm_attention": 4490,
        "attention_pooling_cnn": 2280,
        "rlc_gca_lstm": 5531,
    }


def test_cpu_dry_run_tables_every_system_in_both_precisions(tmp_path):
    subprocess.run(
        [
            "bash",
            str(ROOT / "tools" / "bench_gpu.sh"),
            "--device",
            "cpu",
            "--tiny",
            "--nj",
            "2",
            "--out",
            str(tmp_path),
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    written = json.loads((tmp_path / "bench_gpu.json").read_text())
    assert written["complete"] is True
    results = written["results"]
    assert sorted((r["system"], r["precision"]) for r in results) == sorted(
        (s, p) for s in SYSTEMS for p in ("fp32", "bf16")
    )
    for r in results:
        for key in ("rows_per_s", "epoch_s", "protocol_h"):
            assert math.isfinite(r[key]) and r[key] > 0, (r["system"], r["precision"], key, r[key])
        assert 0.0 <= r["outside_share"] < 1.0
        assert r["rows_per_epoch"] > 0
    table = (tmp_path / "bench_gpu.md").read_text()
    assert all(f"| {s} (" in table for s in SYSTEMS)


def test_a_run_cut_short_keeps_the_rows_it_finished(tmp_path, monkeypatch):
    """The device run has a time limit: every finished (system, precision) row is on disk before the next."""
    done = []

    def bench(system, prepared, work, args, precision):
        if len(done) == 3:
            raise KeyboardInterrupt  # what a timeout's signal leaves
        row = {
            "system": system,
            "arch": "a",
            "precision": precision,
            "rows_per_epoch": 1,
            "rows_per_s": 1.0,
            "epoch_s": 1.0,
            "peak_mem_gib": None,
            "outside_share": 0.0,
            "protocol": "p",
            "protocol_h": 1.0,
            "stops_early": False,
        }
        done.append(row)
        return row

    monkeypatch.setattr(bench_gpu, "generate_corpus", lambda *a, **k: None)
    monkeypatch.setattr(bench_gpu, "prepare_system", lambda *a, **k: None)
    monkeypatch.setattr(bench_gpu, "bench_system", bench)
    monkeypatch.setattr(sys, "argv", ["bench_gpu", "--device", "cpu", "--tiny", "--out", str(tmp_path)])
    try:
        bench_gpu.main()
    except KeyboardInterrupt:
        pass
    written = json.loads((tmp_path / "bench_gpu.json").read_text())
    assert written["complete"] is False and "unfinished" in written["title"]
    assert [(r["system"], r["precision"]) for r in written["results"]] == [
        (SYSTEMS[0], "fp32"),
        (SYSTEMS[0], "bf16"),
        (SYSTEMS[1], "fp32"),
    ]
    assert "unfinished" in (tmp_path / "bench_gpu.md").read_text()
