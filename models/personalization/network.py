"""The two-tower ranking network and its training loss: torch, loaded only to train and export."""

from __future__ import annotations

import numpy as np
import torch


class TwoTower(torch.nn.Module):
    def __init__(
        self, player_features: int, item_features: int, embedding: int = 32, hidden: int = 64
    ) -> None:
        super().__init__()
        self.player_tower = torch.nn.Sequential(
            torch.nn.Linear(player_features, hidden),
            torch.nn.ReLU(),
            torch.nn.Linear(hidden, embedding),
        )
        self.item_tower = torch.nn.Sequential(
            torch.nn.Linear(item_features, hidden),
            torch.nn.ReLU(),
            torch.nn.Linear(hidden, embedding),
        )

    def forward(self, player: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        player_vec = self.player_tower(player)  # [N, E]
        item_vecs = self.item_tower(items)  # [N, C, E]
        return torch.matmul(item_vecs, player_vec.unsqueeze(-1)).squeeze(-1)


def loss(
    module: torch.nn.Module,
    inputs: dict[str, torch.Tensor],
    targets: dict[str, torch.Tensor],
    catalog: np.ndarray,
) -> torch.Tensor:
    # A softmax over the whole catalog: exact, and cheap at 300 items.
    assert isinstance(module, TwoTower)
    items = torch.from_numpy(np.array(catalog))
    logits = module.player_tower(inputs["player"]) @ module.item_tower(items).T
    return torch.nn.functional.cross_entropy(logits, targets["item"])
