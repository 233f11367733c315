"""Personalization: a two-tower model scoring candidate items for a player.

The world is a fixed catalog (store offers, quests, game modes) with latent
traits; players have latent tastes. Interactions are sampled from a softmax
over taste times trait plus item popularity, so a model that reads the player's
features must beat ranking by popularity alone.
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, Annotated

import numpy as np
from pydantic import BaseModel, Field

from models.contract import FamilyContract, RequestModel, TensorSpec
from models.family import GameRoute, TrainableFamily
from models.metrics import ndcg_at_k, recall_at_k
from models.runtime import Predictor
from models.training import Dataset

if TYPE_CHECKING:
    import torch

LATENT = 8
KINDS = ("store_offer", "quest", "game_mode")
PLAYER_FEATURES = (
    *(f"playstyle_{i}" for i in range(LATENT)),
    *(f"likes_{kind}" for kind in KINDS),
    "level", "hours_played", "spend_tier", "friends_online", "days_since_install",
)  # fmt: skip
ITEM_FEATURES = (*(f"is_{kind}" for kind in KINDS), *(f"trait_{i}" for i in range(LATENT)), "trend")
CATALOG_SIZE = 300
INTERACTIONS_PER_PLAYER = 10
TOP_K = 10
# The catalog and the latent-to-feature maps are the studio's game: fixed,
# whatever the training seed, so models trained on different seeds compare.
WORLD_SEED = 20_261_124
MAX_CANDIDATES = 4096
# Bounded: far beyond any trained range, a value overflows float32 inside the model.
FiniteFloat = Annotated[float, Field(allow_inf_nan=False, ge=-1e6, le=1e6)]


class Candidate(RequestModel):
    item_id: str = Field(min_length=1, max_length=128)
    features: list[FiniteFloat] = Field(
        min_length=len(ITEM_FEATURES), max_length=len(ITEM_FEATURES), description="ITEM_FEATURES"
    )


class RankRequest(RequestModel):
    player_id: str = Field(min_length=1, max_length=128)
    player_features: list[FiniteFloat] = Field(
        min_length=len(PLAYER_FEATURES),
        max_length=len(PLAYER_FEATURES),
        description="PLAYER_FEATURES order",
    )
    candidates: list[Candidate] = Field(min_length=1, max_length=MAX_CANDIDATES)
    k: int = Field(default=TOP_K, ge=1, le=100)


class RankedItem(BaseModel):
    item_id: str
    score: float


class RankResponse(BaseModel):
    player_id: str
    items: list[RankedItem]


@dataclass(frozen=True)
class World:
    traits: np.ndarray  # [items, LATENT]
    kinds: np.ndarray  # [items]
    popularity: np.ndarray  # [items]
    item_features: np.ndarray  # [items, len(ITEM_FEATURES)]
    taste_to_features: np.ndarray  # [LATENT, LATENT]


@functools.cache
def world() -> World:
    rng = np.random.default_rng(WORLD_SEED)
    traits = rng.normal(0, 1, (CATALOG_SIZE, LATENT))
    kinds = rng.integers(0, len(KINDS), CATALOG_SIZE)
    popularity = rng.normal(0, 0.8, CATALOG_SIZE)
    trait_map = np.linalg.qr(rng.normal(0, 1, (LATENT, LATENT)))[0]
    features = np.concatenate(
        [
            np.eye(len(KINDS))[kinds],
            np.tanh(traits @ trait_map + rng.normal(0, 0.2, (CATALOG_SIZE, LATENT))),
            np.tanh(popularity / 2 + rng.normal(0, 0.1, CATALOG_SIZE))[:, None],
        ],
        axis=1,
    ).astype(np.float32)
    features.setflags(write=False)
    return World(traits, kinds, popularity, features, np.linalg.qr(rng.normal(0, 1, (8, 8)))[0])


def sample_players(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Player features [n, 16] and each player's interacted item ids [n, 10]."""
    w = world()
    taste = rng.normal(0, 1, (n, LATENT))
    kind_taste = rng.normal(0, 0.6, (n, len(KINDS)))
    features = np.concatenate(
        [
            np.tanh(taste @ w.taste_to_features + rng.normal(0, 0.3, (n, LATENT))),
            np.tanh(kind_taste),
            rng.uniform(0, 1, (n, 5)),  # level, hours, spend, friends, install age: no signal
        ],
        axis=1,
    ).astype(np.float32)
    affinity = (
        1.5 * taste @ w.traits.T / np.sqrt(LATENT) + w.popularity[None, :] + kind_taste[:, w.kinds]
    )
    # Gumbel top-k samples k distinct items from softmax(affinity).
    noisy = affinity + rng.gumbel(size=affinity.shape)
    items = np.argsort(-noisy, axis=1)[:, :INTERACTIONS_PER_PLAYER]
    return features, items


def _question(request: RankRequest) -> str:
    """The player and the offers asked about, in order: the scores are per position."""
    offers = "\x1f".join(candidate.item_id for candidate in request.candidates)
    return f"{request.player_id}\x1e{hashlib.blake2b(offers.encode(), digest_size=12).hexdigest()}"


class Personalization(TrainableFamily[RankRequest, RankResponse]):
    description = "Player and candidate items → scores (two-tower), top-k"
    contract = FamilyContract(
        name="personalization",
        inputs=(
            TensorSpec("player", "float32", (None, len(PLAYER_FEATURES)), "PLAYER_FEATURES"),
            TensorSpec("items", "float32", (None, None, len(ITEM_FEATURES)), "ITEM_FEATURES"),
        ),
        outputs=(TensorSpec("scores", "float32", (None, None), "One score per candidate"),),
        opset=18,
    )
    headline_metric = "recall_at_10"
    game_route = GameRoute(
        "/personalization/rank",
        "Top-k of the candidate items supplied, best first.",
        request_model=RankRequest,
        response_model=RankResponse,
        batch_field="candidates",
        routing_key=lambda request: request.player_id,
        row_keys=lambda request: [_question(request)],
    )
    # Bigger batches: a ranking request carries up to hundreds of candidate rows.
    serving_defaults = MappingProxyType(
        {
            "max_batch_rows": 256,
            "max_ongoing_requests": 256,
            "deadline_ms": 100.0,
            "priority": "best_effort",
            "cache_ttl_s": 60.0,
            # A reclaimed node costs a ranking its personal touch for seconds, not a match.
            "spot": True,
        }
    )
    rollout_thresholds = MappingProxyType({"max_divergence": 0.5})
    fallback_policy = "not personalized: by the candidates' trend, else in the order given"

    def make_dataset(self, samples: int, seed: int) -> Dataset:
        """(player, interacted item) pairs; ``samples`` counts pairs."""
        rng = np.random.default_rng(seed)
        features, items = sample_players(max(samples // INTERACTIONS_PER_PLAYER, 1), rng)
        return Dataset(
            inputs={"player": np.repeat(features, INTERACTIONS_PER_PLAYER, axis=0)},
            targets={"item": items.reshape(-1).astype(np.int64)},
        )

    def build_module(self) -> torch.nn.Module:
        from models.personalization.network import TwoTower

        return TwoTower(len(PLAYER_FEATURES), len(ITEM_FEATURES))

    def loss(
        self,
        module: torch.nn.Module,
        inputs: dict[str, torch.Tensor],
        targets: dict[str, torch.Tensor],
    ) -> torch.Tensor:
        from models.personalization import network

        return network.loss(module, inputs, targets, world().item_features)

    def example_inputs(self, rows: int = 4, seed: int = 0) -> dict[str, np.ndarray]:
        rng = np.random.default_rng(seed)
        players, _ = sample_players(max(rows, 2), rng)
        candidates = rng.choice(CATALOG_SIZE, (max(rows, 2), 16))
        return {"player": players, "items": world().item_features[candidates]}

    def evaluate(self, predict: Predictor, samples: int, seed: int) -> dict[str, float]:
        """Recall@10 and NDCG@10 over the whole catalog vs. ranking by popularity."""
        train_items = self.make_dataset(samples, seed).targets["item"]
        popularity = np.bincount(train_items, minlength=CATALOG_SIZE)
        players, items = sample_players(
            max(samples // INTERACTIONS_PER_PLAYER, 200), np.random.default_rng(seed + 10_000)
        )
        relevant = [set(row.tolist()) for row in items]
        catalog = np.broadcast_to(
            world().item_features, (len(players), *world().item_features.shape)
        )
        scores = predict({"player": players, "items": np.ascontiguousarray(catalog)})["scores"]
        ranked = np.argsort(-scores, axis=1)
        by_popularity = np.tile(np.argsort(-popularity, kind="stable"), (len(players), 1))
        return {
            "recall_at_10": recall_at_k(ranked, relevant, TOP_K),
            "ndcg_at_10": ndcg_at_k(ranked, relevant, TOP_K),
            "popularity_recall_at_10": recall_at_k(by_popularity, relevant, TOP_K),
            "popularity_ndcg_at_10": ndcg_at_k(by_popularity, relevant, TOP_K),
        }

    def divergence(
        self, reference: dict[str, np.ndarray], candidate: dict[str, np.ndarray]
    ) -> np.ndarray:
        """One minus the overlap of the two top-10 lists over the same candidates."""
        a, b = reference["scores"], candidate["scores"]
        k = min(TOP_K, a.shape[1])
        top_a = np.argsort(-a, axis=1)[:, :k]
        top_b = np.argsort(-b, axis=1)[:, :k]
        overlap = [
            len(set(x.tolist()) & set(y.tolist())) / k for x, y in zip(top_a, top_b, strict=True)
        ]
        return 1.0 - np.asarray(overlap)

    def edge_cases(self) -> list[dict[str, np.ndarray]]:
        p, f = len(PLAYER_FEATURES), len(ITEM_FEATURES)
        return [
            {"player": np.zeros((2, p), np.float32), "items": np.zeros((2, 1, f), np.float32)},
            {"player": np.ones((1, p), np.float32), "items": np.ones((1, 500, f), np.float32)},
            {
                "player": np.full((3, p), -1.0, np.float32),
                "items": np.full((3, 7, f), 1.0, np.float32),
            },
        ]

    def fallback_outputs(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        # "trend" is each item's popularity as the request states it; ties keep
        # the order given (decode sorts stably).
        return {"scores": inputs["items"][:, :, ITEM_FEATURES.index("trend")].copy()}

    def encode(self, request: RankRequest) -> dict[str, np.ndarray]:
        return {
            "player": np.asarray([request.player_features], dtype=np.float32),
            "items": np.asarray([[c.features for c in request.candidates]], dtype=np.float32),
        }

    def decode(self, request: RankRequest, outputs: dict[str, np.ndarray]) -> RankResponse:
        scores = outputs["scores"][0]
        top = np.argsort(-scores, kind="stable")[: request.k]
        return RankResponse(
            player_id=request.player_id,
            items=[
                RankedItem(item_id=request.candidates[i].item_id, score=round(float(scores[i]), 6))
                for i in top
            ],
        )
