"""The difficulty network and its training loss: torch, loaded only to train and export."""

from __future__ import annotations

import torch


class DifficultyNet(torch.nn.Module):
    def __init__(self, features: int, hidden: int = 128) -> None:
        super().__init__()
        self.body = torch.nn.Sequential(
            torch.nn.Linear(features, hidden),
            torch.nn.ReLU(),
            torch.nn.Linear(hidden, hidden // 2),
            torch.nn.ReLU(),
            torch.nn.Linear(hidden // 2, 2),
        )

    def raw(self, encounters: torch.Tensor, session: torch.Tensor) -> torch.Tensor:
        return self.body(torch.cat([encounters.flatten(1), session], dim=1))  # type: ignore[no-any-return]

    def forward(
        self, encounters: torch.Tensor, session: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        raw = self.raw(encounters, session)
        return torch.sigmoid(raw[:, 0]), torch.tanh(raw[:, 1])


def loss(
    module: torch.nn.Module, inputs: dict[str, torch.Tensor], targets: dict[str, torch.Tensor]
) -> torch.Tensor:
    assert isinstance(module, DifficultyNet)
    raw = module.raw(inputs["encounters"], inputs["session"])
    quit_loss = torch.nn.functional.binary_cross_entropy_with_logits(raw[:, 0], targets["quit"])
    adjust_loss = torch.nn.functional.mse_loss(torch.tanh(raw[:, 1]), targets["adjustment"])
    return quit_loss + 2.0 * adjust_loss
