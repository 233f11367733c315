"""Serving: everything between a game server's request and a model's answer.

- ``serving.http``: the HTTP surface (game API, Open Inference Protocol v2,
  admin API), its guard (keys, rate limits, sizes) and its error bodies;
- ``serving.dataplane``: validation, dispatch, canary routing and the
  backends models run in, with no Ray and no HTTP;
- ``serving.app``: the Ray Serve application (graph, ingress and family
  deployments) and the gateway that deploys it;
- ``serving.runtime``: process-level settings of Ray Serve and its HAProxy.

Import submodules directly; this package imports nothing so that the ASGI
layer can be used without starting Ray.
"""
