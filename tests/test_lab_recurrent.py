"""Our RNN/LSTM/GRU (written from gate equations) against torch.nn's with copied weights."""

import pytest
import torch

from llmlab.exp.blocks.recurrent import GRU, LSTM, RNN, copy_from_torch


@pytest.mark.parametrize("num_layers", [1, 2])
@pytest.mark.parametrize(
    "ours_cls, theirs_cls, kwargs",
    [
        (RNN, torch.nn.RNN, {"nonlinearity": "tanh"}),
        (RNN, torch.nn.RNN, {"nonlinearity": "relu"}),
        (LSTM, torch.nn.LSTM, {}),
        (GRU, torch.nn.GRU, {}),
    ],
)
def test_matches_torch_with_copied_weights(ours_cls, theirs_cls, kwargs, num_layers):
    torch.manual_seed(0)
    theirs = theirs_cls(5, 7, num_layers=num_layers, batch_first=True, **kwargs)
    ours = ours_cls(5, 7, num_layers=num_layers, **kwargs)
    copy_from_torch(ours, theirs)
    x = torch.randn(3, 6, 5, requires_grad=True)
    out_theirs, state_theirs = theirs(x)
    out_ours, state_ours = ours(x)
    torch.testing.assert_close(out_ours, out_theirs, rtol=1e-5, atol=1e-6)
    states = (
        zip(state_ours, state_theirs)
        if isinstance(state_ours, tuple)
        else [(state_ours, state_theirs)]
    )
    for a, b in states:
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    # gradients through time agree too
    (grad_ours,) = torch.autograd.grad(out_ours.sum(), x)
    (grad_theirs,) = torch.autograd.grad(out_theirs.sum(), x)
    torch.testing.assert_close(grad_ours, grad_theirs, rtol=1e-5, atol=1e-6)


def test_given_initial_state_is_used():
    torch.manual_seed(1)
    theirs, ours = torch.nn.LSTM(4, 6, batch_first=True), LSTM(4, 6)
    copy_from_torch(ours, theirs)
    x, h0, c0 = torch.randn(2, 3, 4), torch.randn(1, 2, 6), torch.randn(1, 2, 6)
    torch.testing.assert_close(ours(x, (h0, c0))[0], theirs(x, (h0, c0))[0], rtol=1e-5, atol=1e-6)


def test_gru_has_three_quarters_of_lstm_parameters():
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(GRU(10, 20)) * 4 == count(LSTM(10, 20)) * 3
    assert count(GRU(10, 20)) == count(torch.nn.GRU(10, 20))
