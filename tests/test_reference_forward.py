"""Each arch's logits for one unpadded utterance equal a plain re-statement of its paper's forward pass.

The references below are written from the papers' layer lists with torch's functional ops and the
model's own weights: batch norm as (x − μ) / sqrt(σ² + ε) · γ + β with random running statistics, the
attention formulas by hand. They pin the order of layers, activations, paddings and strides; the padding
tests of each arch then show the batched path equals this lone path.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from sertk.models import build_model
from sertk.models.layers import LayerBatchNorm

pytestmark = pytest.mark.usefixtures("one_thread")


def randomize(model: nn.Module) -> nn.Module:
    """Random weights for every norm and random running statistics, so batch norm is not the identity."""
    gen = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                for tensor, low, high in [
                    (module.running_mean, -0.5, 0.5),
                    (module.running_var, 0.5, 2.0),
                    (module.weight, 0.5, 1.5),
                    (module.bias, -0.3, 0.3),
                ]:
                    tensor.copy_(low + (high - low) * torch.rand(tensor.shape, generator=gen))
    return model.double().eval()


def norm(x: torch.Tensor, module: nn.Module, channel_dim: int = 1) -> torch.Tensor:
    """Batch norm in eval mode (Ioffe & Szegedy 2015): per channel, or one scalar pair for LayerBatchNorm."""
    shape = [1] * x.dim()
    shape[channel_dim] = -1
    mean, var = module.running_mean, module.running_var
    if not isinstance(module, LayerBatchNorm):
        mean, var = mean.view(shape), var.view(shape)
    return (x - mean) / torch.sqrt(var + module.eps) * module.weight.view(shape) + module.bias.view(shape)


def utterance(frames: int, dim: int) -> torch.Tensor:
    return torch.randn(frames, dim, generator=torch.Generator().manual_seed(3), dtype=torch.float64)


def logits(model: nn.Module, feats: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(feats[None], torch.tensor([len(feats)]))[0]


@pytest.mark.parametrize("pooling", ["attention", "attention-mean-std", "mean"])
def test_crnn_att(pooling):
    """§3.1: [3x3 conv, BN, ReLU, 2x2 average pool] x 5 + [conv, BN, ReLU]; BLSTM; Eq. 4-5 pooling; logits."""
    torch.manual_seed(0)
    model = randomize(
        build_model("crnn-att", {"conv_channels": [6, 6, 4], "lstm_cells": 3, "pooling": pooling}, 12, 4)
    )
    feats = utterance(30, 12)
    x = feats.T[None, None]
    for block in model.blocks:
        x = F.relu(norm(F.conv2d(x, block.conv.weight, block.conv.bias, padding=1), block.norm))
        if block.pool > 1:
            x = F.avg_pool2d(x, 2, ceil_mode=True)  # 12 -> 6 -> 3 Mel bins, 30 -> 15 -> 8 frames
    steps = x[0].permute(2, 0, 1).flatten(1)  # (T', channels x bins)
    with torch.no_grad():
        out = model.lstm(steps[None])[0][0]
        query = torch.cat([out[-1, :3], out[0, 3:]])  # forward h_T, backward h_1
        if pooling == "mean":
            alpha = torch.full((len(out),), 1 / len(out), dtype=torch.float64)
        else:
            alpha = torch.softmax(out @ (model.pooling.score.weight @ query), dim=0)  # e_t = h_tᵀ W q
        mu = alpha @ out
        pooled = mu
        if pooling == "attention-mean-std":
            sigma = torch.sqrt(alpha @ (out * out) - mu * mu + 1e-8)
            pooled = torch.cat([mu, sigma])
        expected = model.head(pooled)
    torch.testing.assert_close(logits(model, feats), expected)


@pytest.mark.parametrize("pooling", ["attention", "gap", "bilinear"])
def test_attn_pool(pooling):
    """§2.2-2.4: Conv1 groups (same padding) concatenated, BN, ReLU; 3x3 convs, BN, ReLU, 2x2 max pools; pooling."""
    torch.manual_seed(0)
    cfg = {
        "first_layer": [[4, 2, 3], [2, 5, 2]],
        "channels": [6, 6, 7],
        "pool_after": [0, 2],
        "pooling": pooling,
    }
    model = randomize(build_model("attn-pool", cfg, 16, 4))
    feats = utterance(21, 16)
    image = feats.T[None, None]  # (1, 1, freq, time)
    maps = []
    for (freq, time, _), group in zip(cfg["first_layer"], model.first_layer, strict=True):
        padded = F.pad(image, ((time - 1) // 2, time // 2, (freq - 1) // 2, freq // 2))
        maps.append(F.conv2d(padded, group[1].weight))
    x = F.relu(norm(torch.cat(maps, dim=1), model.first_norm))
    for index, (conv, bn) in enumerate(zip(model.convs, model.norms, strict=True)):
        x = F.relu(norm(F.conv2d(x, conv.weight, padding=1), bn))
        if index in cfg["pool_after"]:
            x = F.max_pool2d(x, 2, ceil_mode=True)
    flat = x[0].flatten(1)  # (C, positions)
    with torch.no_grad():
        if pooling == "attention":  # Eq. 9-10: (X a_k + b_k)ᵀ softmax(X b)
            top = model.top_down.weight[:, :, 0, 0] @ flat + model.top_down.bias[:, None]
            expected = top @ torch.softmax(model.bottom_up.weight[0, :, 0, 0] @ flat, dim=0)
        elif pooling == "gap":  # Eq. 3 averaged, then FC
            expected = model.head(flat.mean(dim=1))
        else:  # XᵀX / positions, signed sqrt, l2 norm, FC
            second = (flat @ flat.T / flat.shape[1]).flatten()
            root = torch.sign(second) * torch.sqrt(second.abs())
            expected = model.head(root / root.norm())
    torch.testing.assert_close(logits(model, feats), expected)


@pytest.mark.parametrize("recurrent_norm", ["none", "layer-batch"])
def test_cnn_blstm(recurrent_norm):
    """§3: strided 3x3 convs + ReLU, BiLSTM (Eq. 12-14 norm of W_x x_t), final states, dense logits."""
    torch.manual_seed(0)
    cfg = {"conv_channels": [4, 5], "freq_strides": [2, 2], "time_strides": [2, 1], "lstm_cells": 3}
    model = randomize(build_model("cnn-blstm", cfg | {"recurrent_norm": recurrent_norm}, 12, 4))
    feats = utterance(19, 12)
    x = feats.T[None, None]
    for conv, f_stride, t_stride in zip(model.convs, cfg["freq_strides"], cfg["time_strides"], strict=True):
        x = F.relu(F.conv2d(x, conv.weight, conv.bias, stride=(f_stride, t_stride), padding=1))
    steps = x[0].permute(2, 0, 1).flatten(1)  # (10 steps, 5 channels x 3 bins)
    layer = model.rnn[0]
    with torch.no_grad():
        if recurrent_norm == "layer-batch":
            steps = norm(steps @ layer.proj.weight.T, layer.norm, channel_dim=-1)
            # The LSTM's input weights pick the forward direction's 4H of the 8H normalised gate inputs.
            assert torch.equal(layer.lstm.weight_ih_l0, torch.eye(12, 24, dtype=torch.float64))
        out = layer.lstm(steps[None])[0][0]
        expected = model.head(torch.cat([out[-1, :3], out[0, 3:]]))
    torch.testing.assert_close(logits(model, feats), expected)


@pytest.mark.parametrize("pooling", ["mean", "zhou", "yang", "lstm"])
def test_lstm_attn(pooling):
    """§3: 3 x (FC 256, ReLU) per frame, BiLSTM, alpha by mean / Zhou / Yang / sigmoid of a 2nd BiLSTM, Σ αh."""
    torch.manual_seed(0)
    cfg = {"dense_units": 5, "lstm_cells": 3, "yang_units": 4, "attention_cells": 2, "pooling": pooling}
    model = randomize(build_model("lstm-attn", cfg, 6, 4))
    feats = utterance(9, 6)

    def bilstm(module, frames):
        ahead = module.forward_lstm(frames[None])[0][0]
        behind = module.backward_lstm(frames.flip(0)[None])[0][0].flip(0)
        return torch.cat([ahead, behind], dim=-1)

    with torch.no_grad():
        h = feats
        for layer in model.dense:
            if isinstance(layer, nn.Linear):
                h = torch.relu(layer(h))
        h = bilstm(model.lstm, h)
        if pooling == "mean":
            alpha = torch.full((9,), 1 / 9, dtype=torch.float64)
        elif pooling == "zhou":  # softmax(wᵀ tanh h_t)
            alpha = torch.softmax(torch.tanh(h) @ model.attend.vector.weight[0], dim=0)
        elif pooling == "yang":  # softmax(u_wᵀ tanh(W h_t + b))
            u = torch.tanh(h @ model.attend.proj.weight.T + model.attend.proj.bias)
            alpha = torch.softmax(u @ model.attend.context.weight[0], dim=0)
        else:  # sigmoid(wᵀ h'_t) with h' from the attention BiLSTM, unnormalised
            alpha = torch.sigmoid(bilstm(model.attend.lstm, h) @ model.attend.vector.weight[0])
        expected = model.head(alpha @ h)
    torch.testing.assert_close(logits(model, feats), expected)


def multi_head_self_attention(attention: nn.MultiheadAttention, h: torch.Tensor) -> torch.Tensor:
    """Eq. 2-3 on (T, C) steps: r heads of C / r dims, softmax(Q Kᵀ / sqrt(d)) V, concatenated, times W^O."""
    q, k, v = (h @ attention.in_proj_weight.T + attention.in_proj_bias).chunk(3, dim=-1)
    dims = h.shape[1] // attention.num_heads
    heads = []
    for j in range(attention.num_heads):
        part = slice(j * dims, (j + 1) * dims)
        heads.append(torch.softmax(q[:, part] @ k[:, part].T / math.sqrt(dims), dim=-1) @ v[:, part])
    return torch.cat(heads, dim=-1) @ attention.out_proj.weight.T + attention.out_proj.bias


@pytest.mark.parametrize("variant", [{}, {"recurrent": "lstm", "heads": 0}], ids=["s3", "s1"])
def test_rlc(variant):
    """Fig. 2: strided conv (10-like) + residual blocks [conv, BN, ReLU, MHSA, conv, BN, + shortcut, ReLU]."""
    torch.manual_seed(0)
    cfg = {"first_conv": [4, 4], "groups": [[3, 8], [2, 8]], "heads": 2, "lstm_units": 5, "dense": [6, 6]}
    model = randomize(build_model("rlc", cfg | {"iterations": 2} | variant, 3, 4))
    feats = utterance(27, 3)

    def same_conv(x, conv, stride):  # "same" zero padding, the odd step on the right
        kernel = conv.weight.shape[-1]
        return F.conv1d(F.pad(x, ((kernel - 1) // 2, kernel // 2)), conv.weight, stride=stride)

    with torch.no_grad():
        first = model.rcn[0]
        x = F.relu(norm(same_conv(feats.T[None], first.conv, 2), first.norm))  # 27 -> 14 steps
        for index, block in enumerate(model.rcn[1:]):
            stride = 2 if index % 2 == 0 else 1  # each group's first block is strided
            h = F.relu(norm(same_conv(x, block.conv1, stride), block.norm1))
            if variant.get("heads", cfg["heads"]):
                h = h + multi_head_self_attention(block.attention, h[0].T).T[None]
            h = norm(same_conv(h, block.conv2, 1), block.norm2)
            shortcut = (
                x
                if block.shortcut is None
                else norm(F.conv1d(x, block.shortcut.weight, stride=stride), block.shortcut_norm)
            )
            x = F.relu(shortcut + h)
        steps = x[0].T  # 27 frames -> 4 steps after three strides
        assert steps.shape == (4, 8)
        if variant:
            representation = model.recurrent(steps[None])[0][0, -1]
        else:
            representation = model.recurrent(steps[None], torch.tensor([4]))[0]  # GCA-LSTM: test_gca_lstm
        for layer in model.classifier:
            if isinstance(layer, nn.Linear):
                representation = torch.relu(layer(representation))
        expected = model.head(representation)
    torch.testing.assert_close(logits(model, feats), expected)
