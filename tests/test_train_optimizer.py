"""The optimiser sertk.train.loop builds from train.* options (found missing by mutation testing)."""

from __future__ import annotations

import torch

from sertk.train.config import TrainConfig
from sertk.train.loop import build_optimizer


def test_momentum_is_adams_beta1_and_sgds_momentum():
    model = torch.nn.Linear(3, 2)
    adam = build_optimizer(model, TrainConfig(optimizer="adam", momentum=0.5, lr=0.01))
    assert isinstance(adam, torch.optim.Adam) and adam.param_groups[0]["betas"] == (0.5, 0.999)
    sgd = build_optimizer(model, TrainConfig(optimizer="sgd", momentum=0.7, nesterov=True, lr=0.01))
    assert isinstance(sgd, torch.optim.SGD)
    assert sgd.param_groups[0]["momentum"] == 0.7 and sgd.param_groups[0]["nesterov"] is True
