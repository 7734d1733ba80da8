"""Small things learners trip on: mse on class labels (one-hot), the epoch progress bar."""
from __future__ import annotations


import numpy as np
import pytest
import torch

from cnnc.dsl.source import CnncError
from cnnc.runtime.data import containers, targets
from cnnc.runtime.train import losses
from cnnc.runtime.train.trainer import Trainer


def test_mse_on_class_labels_compares_one_hot_targets_as_pytorch_does():
    rng = np.random.default_rng(0)
    pred = rng.standard_normal((5, 4)).astype(np.float32)
    labels = np.array([0, 3, 1, 1, 2])
    value, grad = losses.make_loss("mse")(pred, labels)
    p = torch.tensor(pred, dtype=torch.float64, requires_grad=True)
    target = torch.nn.functional.one_hot(torch.tensor(labels), 4).double()
    ref = torch.nn.MSELoss()(p, target)
    ref.backward()
    assert value == pytest.approx(ref.item(), rel=1e-12)
    np.testing.assert_allclose(grad, p.grad.numpy(), rtol=1e-6)
    assert grad.dtype == np.float32


def test_mse_on_class_labels_counts_argmax_accuracy_and_on_real_targets_none():
    spec = losses.make_loss("mse")
    pred = np.array([[0.9, 0.1], [0.2, 0.8], [0.7, 0.3]])
    assert spec.correct(pred, np.array([0, 1, 1])) == (2, 3)
    assert spec.correct(pred, pred) is None


def test_mse_labels_outside_the_outputs_are_refused():
    with pytest.raises(CnncError, match=r"mse: label 4 is outside \[0, 4\)"):
        losses.make_loss("mse")(np.zeros((2, 4)), np.array([1, 4]))
    ds = containers.Dataset("d", containers.Split(np.zeros((2, 3), np.float32), np.array([0, 5])))
    with pytest.raises(CnncError, match=r"labels must lie in \[0, 4\), the data has label\(s\) 5"):
        targets.check_dataset(ds, targets.NetworkShapes((3,), (4,)), losses.get_loss("mse"))


LENET_1989_STYLE = """
network N {
    input x: [1, 8, 8]
    x -> conv(4, 3, pad = 1) -> tanh -> flatten -> linear(3) -> tanh
}
train N {
    data   = synthetic(n = 64, classes = 3)
    loss   = mse
    epochs = 2
    batch  = 16
    optimizer = sgd(lr = 0.5)
}
"""


def test_a_tanh_network_trains_with_mse_on_class_labels(compile_src, tmp_path):
    c = compile_src(LENET_1989_STYLE, allow={"all"})
    t = Trainer(c, c.net.train, tmp_path, progress=False, log=lambda s: None)
    assert t.ds.train.y.dtype == np.int64
    result = t.run()
    assert result.history[-1]["train_accuracy"] is not None
    assert result.test["accuracy"] is not None
