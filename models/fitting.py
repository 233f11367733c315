"""A small, deterministic supervised training loop shared by the families (torch)."""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping

import numpy as np
import torch

from models.training import Dataset, EpochCallback, TrainSettings

# Computes the loss of one mini-batch: (module, inputs, targets) -> scalar.
LossFn = Callable[[torch.nn.Module, dict[str, torch.Tensor], dict[str, torch.Tensor]], torch.Tensor]


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def fit(
    module: torch.nn.Module,
    data: Dataset,
    loss_fn: LossFn,
    settings: TrainSettings,
    on_epoch: EpochCallback | None = None,
) -> list[float]:
    """Train ``module`` in place with Adam; return the mean loss of each epoch.

    ``on_epoch(epoch, loss)`` hears of each finished epoch (1-based): progress bars.
    """
    torch.set_num_threads(settings.threads)
    generator = torch.Generator().manual_seed(settings.seed)
    inputs = _to_tensors(data.inputs)
    targets = _to_tensors(data.targets)
    optimizer = torch.optim.Adam(module.parameters(), lr=settings.learning_rate)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=settings.epochs)
    history: list[float] = []
    module.train()
    for _ in range(settings.epochs):
        order = torch.randperm(len(data), generator=generator)
        total, batches = 0.0, 0
        for start in range(0, len(data), settings.batch_size):
            index = order[start : start + settings.batch_size]
            loss = loss_fn(
                module,
                {k: v[index] for k, v in inputs.items()},
                {k: v[index] for k, v in targets.items()},
            )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()  # type: ignore[no-untyped-call]
            optimizer.step()
            total += float(loss.detach())
            batches += 1
        scheduler.step()
        history.append(total / batches)
        if on_epoch is not None:
            on_epoch(len(history), history[-1])
    module.eval()
    return history


def torch_predictor(
    module: torch.nn.Module, input_names: tuple[str, ...], output_names: tuple[str, ...]
) -> Callable[[Mapping[str, np.ndarray]], dict[str, np.ndarray]]:
    """Wrap a module as a numpy-in, numpy-out predictor with the contract's names."""

    def predict(arrays: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        with torch.inference_mode():
            outputs = module(*(torch.from_numpy(np.asarray(arrays[n])) for n in input_names))
        if isinstance(outputs, torch.Tensor):
            outputs = (outputs,)
        return {name: out.numpy() for name, out in zip(output_names, outputs, strict=True)}

    return predict


def _to_tensors(arrays: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    return {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in arrays.items()}
