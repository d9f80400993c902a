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
    results = json.loads((tmp_path / "bench_gpu.json").read_text())["results"]
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
