"""Tiny torch modules for unit tests of the ``torch`` model kind."""

from __future__ import annotations

from torch import nn


class Tiny(nn.Module):
    """Linear(4, 2): small enough to save and load in milliseconds."""

    def __init__(self, bias: bool = True) -> None:
        super().__init__()
        self.linear = nn.Linear(4, 2, bias=bias)

    def forward(self, x):
        return self.linear(x)
