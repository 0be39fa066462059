"""Transformer MLP whose hidden units are searchable and prunable (timm names fc1/fc2)."""
from __future__ import annotations

import torch
from torch import nn

__all__ = ['SIDTMlp']


class SIDTMlp(nn.Module):
    """fc1 -> GELU -> (hidden mask) -> fc2.

    The mask multiplies the activated hidden units, so at export it folds into the
    columns of fc2 (GELU is not homogeneous, fc1 could not absorb it).
    """

    def __init__(self, in_features: int, hidden_features: int, drop: float = 0.,
                 mask: bool = False):
        super().__init__()
        self.in_features = in_features
        self.hidden_features = hidden_features
        self.fc1 = nn.Linear(in_features, hidden_features)
        self.act = nn.GELU()
        self.drop = nn.Dropout(drop)
        self.fc2 = nn.Linear(hidden_features, in_features)
        self.hidden_mask = nn.Parameter(torch.ones(hidden_features)) if mask else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self.fc1(x))
        if self.hidden_mask is not None:
            x = x * self.hidden_mask
        return self.drop(self.fc2(self.drop(x)))
