"""Units of sertk.train.loop checked directly: the optimiser options, one step, one epoch, the epoch draws and
the validation metrics."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from rich.progress import Progress

from sertk.augment.mixup import MixupConfig
from sertk.augment.specaugment import SpecAugment, SpecAugmentConfig
from sertk.augment.vtlp import FixedVtlp
from sertk.errors import SertkError
from sertk.inputs.batch import Normalizer, WhiteNoise
from sertk.inputs.config import InputConfig
from sertk.inputs.featureset import MemoryFrames, build_feature_set
from sertk.losses import build_loss
from sertk.train.config import ParamGroup, TrainConfig
from sertk.train.distributed import SINGLE
from sertk.train.loop import (
    EpochInputs,
    FoldData,
    FoldRun,
    MetricTracker,
    TrainingState,
    build_optimizer,
    one_batch_safe,
    oversample_factors,
    save_torch,
    step,
    train_epoch,
    validate,
)
from sertk.train.sampler import epoch_order, length_batches


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


CPU_RUN = SimpleNamespace(device=torch.device("cpu"), dist=SINGLE)


def tiny_state(model, cfg):
    return TrainingState(
        model,
        build_loss({"name": "ce"}, 2),
        build_optimizer(model, cfg),
        torch.amp.GradScaler("cuda", enabled=False),
        MetricTracker("valid_wa"),
        MetricTracker("valid_wa"),
    )


class FirstFrameWithBias(FirstFrameLogits):
    """FirstFrameLogits plus a trainable bias (the optimiser needs a parameter); records its batch sizes."""

    def __init__(self, classes):
        super().__init__()
        self.bias = torch.nn.Parameter(torch.zeros(classes))
        self.batch_rows = []

    def forward(self, feats, lengths):
        self.batch_rows.append(len(feats))
        return super().forward(feats, lengths) + self.bias


def test_train_epoch_reports_the_mean_loss_and_accuracy_over_rows_and_never_a_one_row_batch():
    # Five one-frame utterances whose frames are the logits; batches of 2 leave a 1-row batch, which
    # one_batch_safe folds into another (batch norm cannot normalise one row): batches of 2 and 3 rows.
    frames = [
        np.array([z], dtype=np.float32) for z in ([2.0, 0.0], [0.0, 1.0], [3.0, 0.0], [1.0, 0.0], [0.0, 4.0])
    ]
    labels = [0, 1, 1, 0, 0]
    fset = build_feature_set(MemoryFrames(frames), [f"u{i}" for i in range(5)], labels, InputConfig(), True)
    model = FirstFrameWithBias(2)
    cfg = TrainConfig(optimizer="sgd", momentum=0.0, lr=1e-12, batch_size=2)
    state = tiny_state(model, cfg)
    draws = SimpleNamespace(
        train_set=fset, order=torch.arange(5), epoch=1, train_transform=None, augment=[], mixup=None
    )
    data = SimpleNamespace(normalizer=None, classes=["a", "b"])
    with Progress(disable=True) as progress:
        loss, acc, _ = train_epoch(state, data, draws, cfg, CPU_RUN, progress)
    logits = np.array([f[0] for f in frames], dtype=np.float64)
    log_softmax = logits - np.log(np.exp(logits).sum(1, keepdims=True))
    assert loss == pytest.approx(-np.mean(log_softmax[np.arange(5), labels]), rel=1e-5)
    assert acc == pytest.approx(3 / 5)  # rows 0, 3 (class 0) and 1 (class 1) are right
    assert sorted(model.batch_rows) == [2, 3]


def test_a_step_clips_the_global_norm_before_the_update_and_uses_only_its_own_gradient():
    # loss = w . x with x = (3, 4): the gradient is x, of norm 5.
    layer = torch.nn.Linear(2, 1, bias=False)
    torch.nn.init.zeros_(layer.weight)
    x = torch.tensor([[3.0, 4.0]])
    clipped = TrainConfig(optimizer="sgd", momentum=0.0, lr=1.0, grad_clip=1.0)
    state = SimpleNamespace(
        model=layer,
        optimizer=build_optimizer(layer, clipped),
        scaler=torch.amp.GradScaler("cuda", enabled=False),
    )
    step(state, layer(x).sum(), clipped)  # the gradient clipped to x / 5, then the update
    np.testing.assert_allclose(layer.weight.detach().numpy(), [[-0.6, -0.8]], rtol=1e-6)
    # Unclipped, the next step moves by its own gradient x (not the previous step's plus this one's).
    step(state, layer(x).sum(), TrainConfig(optimizer="sgd", momentum=0.0, lr=1.0))
    np.testing.assert_allclose(layer.weight.detach().numpy(), [[-3.6, -4.8]], rtol=1e-6)


def test_weight_decay_shrinks_weights_and_a_group_without_its_own_inherits_the_configs():
    model = torch.nn.Linear(2, 1)
    with torch.no_grad():
        model.weight.fill_(2.0)
        model.bias.fill_(1.0)
    cfg = TrainConfig(
        optimizer="sgd", momentum=0.0, lr=0.1, weight_decay=0.5, param_groups=[ParamGroup("bias", lr=0.2)]
    )
    optimizer = build_optimizer(model, cfg)
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    optimizer.step()  # a zero gradient: SGD's L2 term alone moves p by -lr * wd * p
    np.testing.assert_allclose(model.weight.detach().numpy(), [[2.0 * (1 - 0.1 * 0.5)] * 2], rtol=1e-6)
    np.testing.assert_allclose(model.bias.detach().numpy(), [1.0 * (1 - 0.2 * 0.5)], rtol=1e-6)


def test_validation_sees_the_validation_transform_and_the_normaliser_never_the_training_transform():
    # Frame (1, 2) -> the validation transform doubles it: (2, 4) -> normalised with mean (1, 0) and std
    # (1, 0.5): logits (1, 8), class 1. The training transform flips every sign: validation must not use it.
    frames = np.array([[1.0, 2.0]], dtype=np.float32)
    fset = build_feature_set(MemoryFrames([frames]), ["u"], [1], InputConfig(), training=False)
    state = SimpleNamespace(model=FirstFrameLogits(), loss_fn=build_loss({"name": "ce"}, 2))
    draws = SimpleNamespace(valid_transform=lambda f, n: (2 * f, n), train_transform=lambda f, n: (-f, n))
    data = SimpleNamespace(
        valid=fset, normalizer=Normalizer(torch.tensor([1.0, 0.0]), torch.tensor([1.0, 0.5]))
    )
    out = validate(state, data, draws, TrainConfig(batch_size=2), torch.device("cpu"))
    assert out["valid_wa"] == 1.0
    assert out["valid_loss"] == pytest.approx(math.log(1 + math.exp(1 - 8)), rel=1e-4)  # float32 softmax


def test_validation_loss_weights_each_row_by_its_utterances_sample_weight():
    # Soft-label validation: loss = mean over rows of w * (-sum_c p_c log softmax(z)_c).
    frames = [np.array([[1.0, 0.0]], dtype=np.float32), np.array([[0.0, 2.0]], dtype=np.float32)]
    fset = build_feature_set(MemoryFrames(frames), ["a", "b"], [0, 1], InputConfig(), training=False)
    fset.targets = torch.tensor([[0.75, 0.25], [0.0, 1.0]])
    fset.weights = torch.tensor([0.5, 1.0])
    state = SimpleNamespace(model=FirstFrameLogits(), loss_fn=build_loss({"name": "ce"}, 2))
    out = validate(
        state,
        SimpleNamespace(valid=fset, normalizer=None),
        SimpleNamespace(valid_transform=None),
        TrainConfig(batch_size=2),
        torch.device("cpu"),
    )
    lsm_a = [-math.log(1 + math.exp(-1)), -math.log(1 + math.exp(1))]
    lsm_b = -math.log(1 + math.exp(-2))
    expected = (0.5 * -(0.75 * lsm_a[0] + 0.25 * lsm_a[1]) + 1.0 * -lsm_b) / 2
    assert out["valid_loss"] == pytest.approx(expected, rel=1e-5)


def test_epoch_draws_augment_training_rows_only_and_redraw_every_epoch_from_the_seed():
    rng = np.random.default_rng(0)
    arrays = [rng.normal(size=(30, 20)).astype(np.float32) for _ in range(6)]
    inp = InputConfig(
        max_frames=10,
        crop="random",
        vtlp="epoch",
        white_noise_std=1.0,
        specaugment=SpecAugmentConfig(freq_masks=1, freq_width=10, time_masks=1, time_width=5),
        mixup=MixupConfig(alpha=0.4),
    )
    train = build_feature_set(MemoryFrames(arrays), [f"u{i}" for i in range(6)], [0, 1] * 3, inp, True)
    data = FoldData(train, None, None, ["a", "b"])
    cfg = TrainConfig(seed=5)
    first, again, second = (EpochInputs.draw(data, cfg, inp, e, torch.device("cpu")) for e in (1, 1, 2))
    # VTLP "epoch": one alpha for the training rows, validation unwarped.
    assert isinstance(first.train_transform, FixedVtlp) and first.valid_transform is None
    assert first.train_transform.alpha == again.train_transform.alpha != second.train_transform.alpha

    def augmented(draws):
        feats, lengths = torch.ones(6, 10, 20), torch.full((6,), 10)
        return [transform(feats, lengths)[0] for transform in draws.augment]

    assert [type(s) for s in first.augment] == [WhiteNoise, SpecAugment]
    for a, b, c in zip(augmented(first), augmented(again), augmented(second), strict=True):
        assert torch.equal(a, b) and not torch.equal(a, c)
    assert torch.equal(first.train_set.crop_start, again.train_set.crop_start)
    assert not torch.equal(first.train_set.crop_start, second.train_set.crop_start)
    assert torch.equal(first.order, again.order) and not torch.equal(first.order, second.order)

    def mixed(draws):
        feats = torch.arange(6.0)[:, None, None].expand(6, 10, 20)
        return draws.mixup(feats, torch.full((6,), 10), torch.eye(2)[[0, 1] * 3])[0]

    a, b, c = mixed(first), mixed(again), mixed(second)  # once each: a draw advances the generator
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_oversampling_an_unknown_class_is_an_error():
    data = SimpleNamespace(classes=["neu", "hap"])
    assert oversample_factors(TrainConfig(oversample={"hap": 2.0}), data).tolist() == [1.0, 2.0]
    with pytest.raises(SertkError, match=r"unknown class\(es\) \['joy'\]"):
        oversample_factors(TrainConfig(oversample={"joy": 2.0}), data)


class SeeingFirstFrame(FirstFrameWithBias):
    """Records the features of every training forward pass."""

    def __init__(self, classes):
        super().__init__(classes)
        self.seen = []

    def forward(self, feats, lengths):
        self.seen.append((feats.detach().clone(), lengths.clone()))
        return super().forward(feats, lengths)


def test_training_rows_are_transformed_then_normalised_then_augmented():
    # Raw frame x -> training transform (VTLP's place) 2x -> normaliser (2x - 1) / 2 -> augmentation
    # (white noise's place) + 1.
    frames = [np.array([[1.0, 2.0], [3.0, 5.0]], dtype=np.float32), np.array([[4.0, 0.0]], dtype=np.float32)]
    fset = build_feature_set(MemoryFrames(frames), ["a", "b"], [0, 1], InputConfig(), True)
    model = SeeingFirstFrame(2)
    cfg = TrainConfig(optimizer="sgd", momentum=0.0, lr=1e-12, batch_size=2)
    draws = SimpleNamespace(
        train_set=fset,
        order=torch.arange(2),
        epoch=1,
        train_transform=lambda f, n: (2 * f, n),
        augment=[lambda f, n: (f + 1, n)],
        mixup=None,
    )
    data = SimpleNamespace(
        normalizer=Normalizer(torch.tensor([1.0, 1.0]), torch.tensor([2.0, 2.0])), classes=["a", "b"]
    )
    with Progress(disable=True) as progress:
        train_epoch(
            tiny_state(model, cfg),
            data,
            draws,
            cfg,
            CPU_RUN,
            progress,
        )
    ((seen, lengths),) = model.seen
    long, short = seen[lengths == 2][0], seen[lengths == 1][0]
    np.testing.assert_allclose(long.numpy(), (2 * frames[0] - 1) / 2 + 1)
    np.testing.assert_allclose(short[0].numpy(), (2 * frames[1][0] - 1) / 2 + 1)


def test_resume_loads_only_a_checkpoint_of_the_same_provenance_and_continues_after_its_epoch(tmp_path):
    cfg = TrainConfig(optimizer="adam", lr=0.1)
    model = torch.nn.Linear(2, 2)
    state = tiny_state(model, cfg)
    model(torch.ones(1, 2)).sum().backward()
    state.optimizer.step()  # Adam now holds moments, which a resume must bring back
    save_torch(state.checkpoint(cfg, 3, {"provenance_key": "sha256:a"}), tmp_path / "checkpoint.pt")
    fresh = torch.nn.Linear(2, 2)
    resumed = TrainingState.start(
        fresh,
        build_loss({"name": "ce"}, 2),
        cfg,
        FoldRun(tmp_path, torch.device("cpu"), {"provenance_key": "sha256:a"}, resume=True),
    )
    assert resumed.first_epoch == 4
    assert torch.equal(fresh.weight, model.weight)
    moments = resumed.optimizer.state_dict()["state"][0]["exp_avg"]
    assert torch.equal(moments, state.optimizer.state_dict()["state"][0]["exp_avg"])
    with pytest.raises(SertkError, match="made from other data, folds, features or config"):
        TrainingState.start(
            torch.nn.Linear(2, 2),
            build_loss({"name": "ce"}, 2),
            cfg,
            FoldRun(tmp_path, torch.device("cpu"), {"provenance_key": "sha256:b"}, resume=True),
        )


def test_each_epoch_trains_on_the_batches_the_sampler_draws_for_that_seed_and_epoch():
    # Sixteen one-frame utterances whose frame holds their row number, of lengths 1 and 2 alternately.
    frames = [np.full((1 + i % 2, 2), i, dtype=np.float32) for i in range(16)]
    labels = [0] * 16
    fset = build_feature_set(MemoryFrames(frames), [f"u{i}" for i in range(16)], labels, InputConfig(), True)
    model = SeeingFirstFrame(2)
    cfg = TrainConfig(optimizer="sgd", momentum=0.0, lr=1e-12, batch_size=2, seed=4)
    state = tiny_state(model, cfg)
    data = SimpleNamespace(normalizer=None, classes=["a", "b"])
    seen = {}
    for epoch in (1, 2):
        order = epoch_order(torch.tensor(labels), cfg.seed, epoch)
        draws = SimpleNamespace(
            train_set=fset, order=order, epoch=epoch, train_transform=None, augment=[], mixup=None
        )
        model.seen.clear()
        with Progress(disable=True) as progress:
            train_epoch(state, data, draws, cfg, CPU_RUN, progress)
        seen[epoch] = [feats[:, 0, 0].long().tolist() for feats, _ in model.seen]
        expected = one_batch_safe(length_batches(order, fset.lengths, 2, cfg.seed, epoch))
        assert seen[epoch] == [b.tolist() for b in expected], epoch
    assert seen[1] != seen[2]
