"""The client's typed models are the family declarations, rendered: they never drift."""

from __future__ import annotations

from pipelines.client_models import TARGET, render, routes


def test_the_client_models_match_the_family_declarations() -> None:
    assert TARGET.read_text() == render(), (
        "gameserve_client/models.py is stale: run `python -m pipelines.client_models`"
    )


def test_every_game_route_has_a_client_route() -> None:
    import gameserve_client.models as generated

    for path, request, answer in routes():
        constant = getattr(generated, path.removeprefix("/v1/").replace("/", "_").upper())
        assert constant.path == path
        assert (constant.request.__name__, constant.answer.__name__) == (
            request.__name__,
            answer.__name__,
        )
        assert set(constant.request.model_fields) == set(request.model_fields)
