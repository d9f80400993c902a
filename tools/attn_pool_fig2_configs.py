"""Write egs/iemocap/conf/attention_pooling_cnn/fig2/*.yaml: the Conv1 filter-shape sweep of Fig. 2.

attention_pooling_cnn.txt §3.2 tests "the first convolutional layer ... independently": Conv1 alone, GAP
on its feature map and a fully-connected layer (16:4), so one group of 16 filters of one shape (freq x
time), no 3x3 convs. Fig. 2 (top) fixes the width at 2 (20 ms) and varies the height over 2...100 (20 Hz
to 1 kHz); Fig. 2 (bottom) fixes the height at 2 (20 Hz) and varies the width over 2...80 (20 to 800 ms).
The figure's tick values are not in our copy of the paper (only the ranges, "dozens of configurations",
and the chosen optima 10 x 2 and 2 x 8), so we sample each range densely where the text says the curves
move (up to the optima) and coarsely beyond: 26 shapes, 2 x 2 shared by both sweeps.

Every file copies the loss, train and input sections of conf/attention_pooling_cnn/gap.yaml verbatim
(the paper runs the sweep with its usual 10-fold protocol). Rerun after editing gap.yaml:
    python tools/attn_pool_fig2_configs.py
"""

from __future__ import annotations

from pathlib import Path

import yaml

CONF = Path(__file__).resolve().parents[1] / "egs" / "iemocap" / "conf" / "attention_pooling_cnn"
HEIGHTS = (2, 4, 6, 8, 10, 12, 16, 20, 30, 40, 50, 60, 80, 100)  # Fig. 2 top, width 2: 20 Hz per bin
WIDTHS = (2, 4, 6, 8, 10, 12, 16, 20, 30, 40, 50, 60, 80)  # Fig. 2 bottom, height 2: 10 ms per frame
FILTERS = 16  # "the fully-connected layer (16:4)": GAP of 16 maps


def shapes() -> list[tuple[int, int]]:
    """(freq, time) filter shapes of both sweeps, each once."""
    return list(dict.fromkeys([(height, 2) for height in HEIGHTS] + [(2, width) for width in WIDTHS]))


def config_text(freq: int, time: int, parent: str) -> str:
    """One sweep point's YAML: its header and model section, then the parent's sections from loss: on."""
    sweep = "top: width 2, height varied" if time == 2 and freq != 2 else "bottom: height 2, width varied"
    if (freq, time) == (2, 2):
        sweep = "the first point of both sweeps"
    parameters = freq * time * FILTERS + 2 * FILTERS + FILTERS * 4 + 4
    header = f"""\
# attention_pooling_cnn.txt §3.2, Fig. 2 ({sweep}): Conv1 alone with 16 filters of {freq} x {time}
# (freq x time: {freq * 10} Hz x {time * 10} ms), BN + ReLU, GAP, FC (16:4); {parameters:,} parameters.
# The paper plots WA and per-class accuracies; it gives no numbers in the text.
# Written by tools/attn_pool_fig2_configs.py; protocol, loss, train and input are gap.yaml's.
arch: attn-pool
feat: spec-li2018
protocol: {{protocol}}
model:
  first_layer: {f"[[{freq}, {time}, {FILTERS}]]":<24}# [freq, time, filters]: one filter shape
  channels: []                          # no 3x3 convs: Conv1 is tested alone
  pool_after: []
  pooling: gap
  head: linear
"""
    return header.format(protocol=yaml.safe_load(parent)["protocol"]) + parent[parent.index("\nloss:") + 1 :]


def main() -> None:
    parent = (CONF / "gap.yaml").read_text()
    out = CONF / "fig2"
    out.mkdir(exist_ok=True)
    for stale in out.glob("*.yaml"):
        stale.unlink()
    for freq, time in shapes():
        (out / f"h{freq}_w{time}.yaml").write_text(config_text(freq, time, parent))
    print(f"wrote {len(shapes())} configs to {out}")


if __name__ == "__main__":
    main()
