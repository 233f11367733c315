"""The data plane: validation, dispatch, canary routing and the backends models run in.

No Ray and no HTTP here: the HTTP surface (``serving.http``) and the Ray Serve
application (``serving.http.app``) both drive it.
"""
