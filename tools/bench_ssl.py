"""Benchmark ``--feat ssl`` extraction on CPU against the reference library's own forward, same process.

Usage: ``python tools/bench_ssl.py [--models tiny,base,base-ln,long,whisper-tiny] [--seconds 24] [--repeats 3]
[--threads 1]``

Each model is randomly initialised from a config (nothing is downloaded), saved as a Hugging Face model
dir and loaded by sertk from there, as a user's checkpoint would be:
  * tiny: wav2vec2 with the standard 7-layer conv stack (50 Hz) but 32 channels, 2 layers of width 32;
  * base: wav2vec2-base (95 M parameters, GroupNorm conv stack: sertk runs it per utterance);
  * base-ln: the same size with a LayerNorm conv stack (as the large models), which sertk batches with
    attention masks;
  * long: base-ln on one 60 s utterance, sertk chunked (20 s chunks, 4 s overlap) against one 60 s forward;
  * whisper-tiny: Whisper tiny's encoder (4 layers, 384 wide) on 30 s windows.
Audio: utterances of 2-6 s (noisy tones) adding up to ``--seconds``. The reference is transformers'
per-utterance path (its feature extractor, then ``model(..., output_hidden_states=True)``); sertk's is
``SslFeatures.compute`` on the length-sorted batches ``sertk feats`` would form. Runs alternate, and the
table gives medians of wall and CPU time, the real-time factor (compute seconds per audio second) and the
speed ratio reference / sertk. Both give the same features (max |diff| is printed).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

from sertk.features import build_feature
from sertk.features.dump import BATCH_SAMPLES

RATE = 16000
MODELS = ("tiny", "base", "base-ln", "long", "whisper-tiny")


def _transformers():
    os.environ["HF_HUB_OFFLINE"] = "1"
    import transformers

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    return transformers


def build_checkpoint(name: str, out: Path):
    """Write a random model dir for ``name`` under ``out``; returns (dir, model, reference features fn)."""
    tf = _transformers()
    torch.manual_seed(0)
    if name == "whisper-tiny":
        config = tf.WhisperConfig(
            d_model=384,
            encoder_layers=4,
            encoder_attention_heads=6,
            encoder_ffn_dim=1536,
            decoder_layers=1,
            decoder_attention_heads=6,
            decoder_ffn_dim=64,
            vocab_size=64,
            max_target_positions=16,
            pad_token_id=0,
            bos_token_id=1,
            eos_token_id=2,
            decoder_start_token_id=1,
        )
        model = tf.WhisperForConditionalGeneration(config).eval()
        extractor = tf.WhisperFeatureExtractor()
        model.save_pretrained(out)
        extractor.save_pretrained(out)
        encoder = model.model.encoder

        def reference(wave: np.ndarray) -> torch.Tensor:
            inputs = extractor(wave, sampling_rate=RATE, return_tensors="pt").input_features
            frames = (len(wave) // 160 + 1) // 2
            states = encoder(inputs, output_hidden_states=True).hidden_states
            return torch.cat(states, dim=-1)[0, :frames]

        return out, reference
    if name == "tiny":
        config = tf.Wav2Vec2Config(
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=64,
            conv_dim=(32,) * 7,
            num_conv_pos_embeddings=16,
            num_conv_pos_embedding_groups=2,
        )
    elif name == "base":
        config = tf.Wav2Vec2Config()
    else:  # base-ln, long
        config = tf.Wav2Vec2Config(feat_extract_norm="layer", do_stable_layer_norm=True)
    model = tf.Wav2Vec2Model(config).eval()
    normalize = config.feat_extract_norm == "layer"
    extractor = tf.Wav2Vec2FeatureExtractor(do_normalize=normalize, return_attention_mask=normalize)
    model.save_pretrained(out)
    extractor.save_pretrained(out)

    def reference(wave: np.ndarray) -> torch.Tensor:
        values = extractor(wave, sampling_rate=RATE, return_tensors="pt").input_values
        return torch.cat(model(values, output_hidden_states=True).hidden_states, dim=-1)[0]

    return out, reference


def utterances(total_seconds: float, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    waves, seconds = [], 0.0
    while seconds < total_seconds:
        n = int(rng.uniform(2.0, 6.0) * RATE)
        t = np.arange(n) / RATE
        tone = 0.3 * np.sin(2 * np.pi * rng.uniform(100, 300) * t)
        waves.append((tone + 0.05 * rng.standard_normal(n)).astype(np.float32))
        seconds += n / RATE
    return waves


def dump_batches(waves: list[np.ndarray], samples: int) -> list[list[int]]:
    """Indices grouped as ``plan_batches`` groups a data dir: sorted by length, ~``samples`` padded each."""
    order = sorted(range(len(waves)), key=lambda i: len(waves[i]))
    batches, current = [], []
    for i in order:
        if current and (len(current) + 1) * len(waves[i]) > samples:
            batches.append(current)
            current = []
        current.append(i)
    return batches + [current] if current else batches


def run_sertk(extractor, waves: list[np.ndarray]) -> list[torch.Tensor]:
    out = [None] * len(waves)
    for batch in dump_batches(waves, BATCH_SAMPLES):
        lengths = [len(waves[i]) for i in batch]
        padded = torch.zeros(len(batch), max(lengths))
        for row, i in enumerate(batch):
            padded[row, : lengths[row]] = torch.from_numpy(waves[i])
        feats = extractor.compute(padded, torch.tensor(lengths))
        for row, i in enumerate(batch):
            out[i] = feats[row, : extractor.num_frames(lengths[row])]
    return out


def timed(fn) -> tuple[float, float, object]:
    wall, cpu = time.perf_counter(), time.process_time()
    result = fn()
    return time.perf_counter() - wall, time.process_time() - cpu, result


def bench(name: str, seconds: float, repeats: int, work: Path) -> dict:
    checkpoint, reference = build_checkpoint(name, work / name)
    options = {"checkpoint": str(checkpoint), "dtype": "float32"}
    if name == "long":
        t = np.arange(60 * RATE) / RATE
        waves = [(0.3 * np.sin(2 * np.pi * 150 * t)).astype(np.float32)]
        options.update(max_chunk_seconds=20.0, overlap_seconds=4.0)
    else:
        waves = utterances(seconds)
    extractor = build_feature("ssl", options)
    audio = sum(len(w) for w in waves) / RATE
    times = {"reference": [], "sertk": []}
    with torch.inference_mode():
        for _ in range(repeats):
            wall, cpu, ref = timed(lambda: [reference(w) for w in waves])
            times["reference"].append((wall, cpu))
            wall, cpu, ours = timed(lambda: run_sertk(extractor, waves))
            times["sertk"].append((wall, cpu))
    diff = max(float((a - b).abs().max()) for a, b in zip(ref, ours, strict=True))
    frames_equal = all(a.shape == b.shape for a, b in zip(ref, ours, strict=True))
    medians = {
        k: (statistics.median(w for w, _ in v), statistics.median(c for _, c in v)) for k, v in times.items()
    }
    return {
        "name": name,
        "audio": audio,
        "utts": len(waves),
        "medians": medians,
        "diff": diff,
        "same_frames": frames_equal,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--seconds", type=float, default=24.0, help="audio per model (long: always 60 s)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (sertk feats uses 1 per job)")
    args = parser.parse_args()
    names = args.models.split(",")
    unknown = sorted(set(names) - set(MODELS))
    if unknown:
        sys.exit(f"unknown model(s) {unknown} (known: {', '.join(MODELS)})")
    torch.set_num_threads(args.threads)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            results.append(bench(name, args.seconds, args.repeats, Path(tmp)))
    table = Table(title=f"--feat ssl on CPU, {args.threads} torch thread(s), medians of {args.repeats}")
    for column in (
        "model",
        "audio s",
        "utts",
        "path",
        "wall s",
        "CPU s",
        "RTF wall",
        "RTF CPU",
        "x ref wall",
        "x ref CPU",
    ):
        table.add_column(column, justify="right")
    for r in results:
        ref_wall, ref_cpu = r["medians"]["reference"]
        for path, (wall, cpu) in r["medians"].items():
            table.add_row(
                r["name"],
                f"{r['audio']:.1f}",
                str(r["utts"]),
                path,
                f"{wall:.2f}",
                f"{cpu:.2f}",
                f"{wall / r['audio']:.4f}",
                f"{cpu / r['audio']:.4f}",
                f"{ref_wall / wall:.2f}",
                f"{ref_cpu / cpu:.2f}",
            )
    console = Console(width=160)
    console.print(table)
    for r in results:
        console.print(
            f"{r['name']}: max |sertk - reference| = {r['diff']:.2e}, same frame counts: {r['same_frames']}"
            + (" (chunked vs one forward: differs near seams by design)" if r["name"] == "long" else "")
        )
    console.print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")


if __name__ == "__main__":
    main()
