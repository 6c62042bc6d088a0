"""Recurrent networks written from their gate equations: Elman RNN, LSTM and GRU.

    from llmlab.exp.blocks.recurrent import LSTM
    lstm = LSTM(input_size=8, hidden_size=32)
    outputs, (h, c) = lstm(x)            # x [batch, time, input]; outputs [batch, time, hidden]

Each cell is one time step, written exactly as the textbook equations; the sequence modules loop
over time (that loop is the sequential dependency that keeps RNNs from parallelizing over the
sequence, see `llmlab exp run rnn-vs-transformer-parallel`). Weight names, shapes and gate order
match `torch.nn.RNN/LSTM/GRU` (`weight_ih` [gates*H, I], LSTM gates i,f,g,o; GRU gates r,z,n), so
weights can be copied across and the outputs compared (tests/test_lab_recurrent.py).
"""

from __future__ import annotations

import math

import torch
from torch import nn


class _GatedCell(nn.Module):
    """Holds W_ih [G*H, I], W_hh [G*H, H] and their biases for a cell with G gate blocks."""

    gate_blocks = 1

    def __init__(self, input_size: int, hidden_size: int):
        super().__init__()
        self.input_size, self.hidden_size = input_size, hidden_size
        rows = self.gate_blocks * hidden_size
        self.weight_ih = nn.Parameter(torch.empty(rows, input_size))
        self.weight_hh = nn.Parameter(torch.empty(rows, hidden_size))
        self.bias_ih = nn.Parameter(torch.empty(rows))
        self.bias_hh = nn.Parameter(torch.empty(rows))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # torch's default: U(-1/sqrt(H), 1/sqrt(H)) for every weight and bias.
        bound = 1.0 / math.sqrt(self.hidden_size)
        for p in self.parameters():
            nn.init.uniform_(p, -bound, bound)


class ElmanCell(_GatedCell):
    """h_t = f(W_ih x_t + b_ih + W_hh h_{t-1} + b_hh), f = tanh or ReLU."""

    def __init__(self, input_size: int, hidden_size: int, nonlinearity: str = "tanh"):
        super().__init__(input_size, hidden_size)
        if nonlinearity not in ("tanh", "relu"):
            raise ValueError(f"nonlinearity must be 'tanh' or 'relu', got {nonlinearity!r}")
        self.activation = torch.tanh if nonlinearity == "tanh" else torch.relu

    def forward(self, x: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        return self.activation(
            x @ self.weight_ih.T + self.bias_ih + h @ self.weight_hh.T + self.bias_hh
        )


class LSTMCell(_GatedCell):
    """Input, forget and output gates around a cell state c that is only scaled and added to:

    i = σ(W_ii x + W_hi h + b_i)      f = σ(W_if x + W_hf h + b_f)
    g = tanh(W_ig x + W_hg h + b_g)   o = σ(W_io x + W_ho h + b_o)
    c' = f ⊙ c + i ⊙ g                h' = o ⊙ tanh(c')
    """

    gate_blocks = 4

    def forward(
        self, x: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        h, c = state
        i, f, g, o = (
            x @ self.weight_ih.T + self.bias_ih + h @ self.weight_hh.T + self.bias_hh
        ).chunk(4, dim=-1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(c)
        return h, c


class GRUCell(_GatedCell):
    """Reset gate r and update gate z; no separate cell state:

    r = σ(W_ir x + b_ir + W_hr h + b_hr)      z = σ(W_iz x + b_iz + W_hz h + b_hz)
    n = tanh(W_in x + b_in + r ⊙ (W_hn h + b_hn))
    h' = (1 − z) ⊙ n + z ⊙ h
    """

    gate_blocks = 3

    def forward(self, x: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        xr, xz, xn = (x @ self.weight_ih.T + self.bias_ih).chunk(3, dim=-1)
        hr, hz, hn = (h @ self.weight_hh.T + self.bias_hh).chunk(3, dim=-1)
        r, z = torch.sigmoid(xr + hr), torch.sigmoid(xz + hz)
        n = torch.tanh(xn + r * hn)
        return (1 - z) * n + z * h


class _Recurrent(nn.Module):
    """Stacks `num_layers` cells and runs them over time (batch first, like batch_first=True)."""

    def __init__(self, cells: list[_GatedCell]):
        super().__init__()
        self.cells = nn.ModuleList(cells)
        self.hidden_size = cells[0].hidden_size

    def _zeros(self, x: torch.Tensor) -> torch.Tensor:
        return x.new_zeros(len(self.cells), x.shape[0], self.hidden_size)

    def forward(self, x: torch.Tensor, state=None):
        """x [B, T, I] → (outputs of the last layer [B, T, H], final state [layers, B, H] (LSTM: (h, c)))."""
        state = self.initial_state(x) if state is None else state
        final = []
        for layer, cell in enumerate(self.cells):
            layer_state = self.layer_state(state, layer)
            outputs = []
            for t in range(x.shape[1]):  # the sequential dependency: step t needs step t-1
                layer_state = cell(x[:, t], layer_state)
                outputs.append(self.hidden_of(layer_state))
            x = torch.stack(outputs, dim=1)
            final.append(layer_state)
        return x, self.stack_states(final)

    # Elman and GRU carry one tensor h; LSTM overrides these to carry (h, c).
    def initial_state(self, x):
        return self._zeros(x)

    def layer_state(self, state, layer):
        return state[layer]

    def hidden_of(self, layer_state):
        return layer_state

    def stack_states(self, states):
        return torch.stack(states)


class RNN(_Recurrent):
    """Elman RNN (torch.nn.RNN with batch_first=True)."""

    def __init__(
        self, input_size: int, hidden_size: int, num_layers: int = 1, nonlinearity: str = "tanh"
    ):
        sizes = [input_size] + [hidden_size] * (num_layers - 1)
        super().__init__([ElmanCell(s, hidden_size, nonlinearity) for s in sizes])


class GRU(_Recurrent):
    """Gated recurrent unit (torch.nn.GRU with batch_first=True): 3 weight blocks, ¾ of an LSTM."""

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1):
        sizes = [input_size] + [hidden_size] * (num_layers - 1)
        super().__init__([GRUCell(s, hidden_size) for s in sizes])


class LSTM(_Recurrent):
    """Long short-term memory (torch.nn.LSTM with batch_first=True); state is (h, c)."""

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1):
        sizes = [input_size] + [hidden_size] * (num_layers - 1)
        super().__init__([LSTMCell(s, hidden_size) for s in sizes])

    def initial_state(self, x):
        return self._zeros(x), self._zeros(x)

    def layer_state(self, state, layer):
        return state[0][layer], state[1][layer]

    def hidden_of(self, layer_state):
        return layer_state[0]

    def stack_states(self, states):
        return torch.stack([h for h, _ in states]), torch.stack([c for _, c in states])


def copy_from_torch(ours: _Recurrent, theirs: nn.RNNBase) -> None:
    """Copy a torch.nn.RNN/LSTM/GRU's weights (same sizes, num_layers) into our module."""
    with torch.no_grad():
        for layer, cell in enumerate(ours.cells):
            for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
                getattr(cell, name).copy_(getattr(theirs, f"{name}_l{layer}"))
