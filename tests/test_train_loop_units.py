"""Units of sertk.train.loop checked directly: the optimiser options and the validation metrics."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from sertk.inputs.config import InputConfig
from sertk.inputs.featureset import MemoryFrames, build_feature_set
from sertk.losses import build_loss
from sertk.train.config import TrainConfig
from sertk.train.loop import build_optimizer, validate


def test_momentum_is_adams_beta1_and_sgds_momentum():
    model = torch.nn.Linear(3, 2)
    adam = build_optimizer(model, TrainConfig(optimizer="adam", momentum=0.5, lr=0.01))
    assert isinstance(adam, torch.optim.Adam) and adam.param_groups[0]["betas"] == (0.5, 0.999)
    sgd = build_optimizer(model, TrainConfig(optimizer="sgd", momentum=0.7, nesterov=True, lr=0.01))
    assert isinstance(sgd, torch.optim.SGD)
    assert sgd.param_groups[0]["momentum"] == 0.7 and sgd.param_groups[0]["nesterov"] is True


class FirstFrameLogits(torch.nn.Module):
    """A row's logits are its first frame (one-frame segments: the frame itself)."""

    def forward(self, feats, lengths):
        return feats[:, 0, :]


def test_validation_averages_segment_softmax_and_sums_ua_and_wa():
    # One class-1 utterance cut into three one-frame segments with logits (10, 0), (0, 3), (0, 3).
    # Mean softmax: p1 = (e^0/(e^10+1) + 2 * e^3/(1+e^3)) / 3 = 0.635 -> class 1, right. (Mean logits
    # (10/3, 2) would say class 0.)
    frames = np.array([[10.0, 0.0], [0.0, 3.0], [0.0, 3.0]], dtype=np.float32)
    cfg = InputConfig(segment_frames=1, segment_shift_test=1)
    fset = build_feature_set(MemoryFrames([frames]), ["u"], [1], cfg, training=False)
    state = SimpleNamespace(model=FirstFrameLogits(), loss_fn=build_loss({"name": "ce"}, 2))
    data = SimpleNamespace(valid=fset, normalizer=None)
    out = validate(
        state, data, SimpleNamespace(valid_transform=None), TrainConfig(batch_size=2), torch.device("cpu")
    )
    assert out["valid_wa"] == 1.0 and out["valid_ua"] == 1.0 and out["valid_ua_wa"] == 2.0
    # valid_loss: the mean over rows of -log softmax(z)_1.
    row_loss = [math.log(1 + math.exp(10)), math.log(1 + math.exp(-3)), math.log(1 + math.exp(-3))]
    assert out["valid_loss"] == pytest.approx(np.mean(row_loss), rel=1e-5)
