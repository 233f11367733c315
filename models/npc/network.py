"""The NPC policy network and its training loss: torch, loaded only to train and export."""

from __future__ import annotations

import torch


class PolicyNet(torch.nn.Module):
    def __init__(self, features: int, actions: int, hidden: int = 128) -> None:
        super().__init__()
        self.body = torch.nn.Sequential(
            torch.nn.Linear(features, hidden),
            torch.nn.ReLU(),
            torch.nn.Linear(hidden, hidden),
            torch.nn.ReLU(),
            torch.nn.Linear(hidden, actions),
        )

    def logits(self, observation: torch.Tensor) -> torch.Tensor:
        return self.body(observation)  # type: ignore[no-any-return]

    def forward(self, observation: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.logits(observation), dim=-1)


def loss(
    module: torch.nn.Module, inputs: dict[str, torch.Tensor], targets: dict[str, torch.Tensor]
) -> torch.Tensor:
    assert isinstance(module, PolicyNet)
    return torch.nn.functional.cross_entropy(
        module.logits(inputs["observation"]), targets["action"]
    )
