"""What a training run is given: its settings and its data (no torch, so serving can import it)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from pydantic import BaseModel, Field

# Told of each finished epoch (1-based) and its mean loss: how progress reaches a console.
EpochCallback = Callable[[int, float], None]


class TrainSettings(BaseModel):
    """Hyper-parameters common to every family."""

    seed: int = Field(default=7, description="Seeds data generation and weight init.")
    epochs: int = Field(default=10, ge=1)
    batch_size: int = Field(default=512, ge=1)
    learning_rate: float = Field(default=3e-3, gt=0)
    train_samples: int = Field(default=60_000, ge=100)
    eval_samples: int = Field(default=10_000, ge=100)
    threads: int = Field(default=2, ge=1, description="torch intra-op threads.")


@dataclass
class Dataset:
    """Named input tensors and named targets, all sharing the first axis."""

    inputs: dict[str, np.ndarray]
    targets: dict[str, np.ndarray]

    def __len__(self) -> int:
        return len(next(iter(self.inputs.values())))

    def concat(self, other: Dataset) -> Dataset:
        """Both datasets' rows; ``other`` must have the same inputs and targets."""
        if set(other.inputs) != set(self.inputs) or set(other.targets) != set(self.targets):
            raise ValueError("datasets differ in their inputs or targets")
        return Dataset(
            inputs={k: np.concatenate([v, other.inputs[k]]) for k, v in self.inputs.items()},
            targets={k: np.concatenate([v, other.targets[k]]) for k, v in self.targets.items()},
        )
