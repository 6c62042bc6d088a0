"""Activations from formulas vs torch.nn.functional; Xavier/He vs torch.nn.init; both dropouts."""

import math

import pytest
import torch
import torch.nn.functional as F

from llmlab.exp.blocks import classic_activations as act
from llmlab.exp.blocks import init
from llmlab.exp.blocks.dropout import InvertedDropout, ScaleAtInferenceDropout

X = torch.linspace(-8, 8, 401)


@pytest.mark.parametrize(
    "name, reference",
    [
        ("sigmoid", torch.sigmoid),
        ("tanh", torch.tanh),
        ("relu", F.relu),
        ("leaky_relu", F.leaky_relu),
        ("elu", F.elu),
        ("gelu", F.gelu),
        ("silu", F.silu),
    ],
)
def test_activation_matches_torch(name, reference):
    torch.testing.assert_close(
        act.ACTIVATION_FUNCTIONS[name](X), reference(X), rtol=1e-5, atol=1e-6
    )


def test_derivatives_match_autograd():
    x = X.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(torch.sigmoid(x).sum(), x)
    torch.testing.assert_close(act.sigmoid_derivative(X), grad)
    (grad,) = torch.autograd.grad(torch.tanh(x).sum(), x)
    torch.testing.assert_close(act.tanh_derivative(X), grad, rtol=1e-4, atol=1e-6)
    assert act.sigmoid_derivative(torch.tensor(0.0)).item() == pytest.approx(0.25)


@pytest.mark.parametrize(
    "ours, theirs",
    [
        (init.xavier_uniform_, torch.nn.init.xavier_uniform_),
        (init.xavier_normal_, torch.nn.init.xavier_normal_),
        (init.he_uniform_, lambda w: torch.nn.init.kaiming_uniform_(w, nonlinearity="relu")),
        (init.he_normal_, lambda w: torch.nn.init.kaiming_normal_(w, nonlinearity="relu")),
    ],
)
def test_init_matches_torch_same_seed(ours, theirs):
    for shape in [(64, 32), (8, 4, 3, 3)]:
        torch.manual_seed(5)
        a = ours(torch.empty(shape))
        torch.manual_seed(5)
        b = theirs(torch.empty(shape))
        torch.testing.assert_close(a, b)


def test_he_variance_is_two_over_fan_in():
    w = init.he_normal_(torch.empty(512, 256))
    assert w.var().item() == pytest.approx(2 / 256, rel=0.05)
    w = init.xavier_uniform_(torch.empty(512, 256))
    assert w.var().item() == pytest.approx(2 / (512 + 256), rel=0.05)


def test_inverted_dropout_keeps_expectation_and_is_identity_at_eval():
    torch.manual_seed(0)
    x, drop = torch.full((200_000,), 3.0), InvertedDropout(0.3)
    y = drop(x)
    assert y.mean().item() == pytest.approx(3.0, rel=0.02)
    assert (y == 0).float().mean().item() == pytest.approx(0.3, abs=0.01)
    assert torch.equal(drop.eval()(x), x)


def test_notes_dropout_scales_at_inference():
    torch.manual_seed(0)
    x, drop = torch.full((200_000,), 3.0), ScaleAtInferenceDropout(keep=0.8)
    assert drop(x).mean().item() == pytest.approx(2.4, rel=0.02)  # training: no rescaling
    assert torch.allclose(drop.eval()(x), x * 0.8)
    assert math.isclose(drop.eval()(x).mean().item(), 2.4, rel_tol=1e-6)
