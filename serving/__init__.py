"""Serving: Ray Serve deployments and the HTTP surface.

Import submodules directly; this package imports nothing so that the ASGI
layer can be used without starting Ray.
"""
