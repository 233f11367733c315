"""What a training run is given: its settings and its data (no torch, so serving can import it)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from pydantic import BaseModel, Field


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
