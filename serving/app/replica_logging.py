"""gameserve's log lines in a replica's Serve log, unbuffered.

Ray Serve gives each replica a log file (``logs/serve/replica_<app>_<deployment>_
<id>.log``) through the ``ray.serve`` logger only. Our modules log under their
own names, which propagate to a root logger with no handler; under
``RAY_SERVE_THROUGHPUT_OPTIMIZED`` (the default substrate) stderr itself is
redirected into a buffered Serve handler, so a 5xx traceback or the
execution-provider line could sit in memory or never be written. Called from a
replica's constructor (never at import), this sends our loggers straight to the
file behind Serve's buffer: they write rarely (loads, swaps, errors), never per
request on the good path.
"""

from __future__ import annotations

import logging
import logging.handlers

OUR_LOGGERS = ("serving", "models", "pipelines", "uvicorn.error")


FORMAT = "%(levelname)s %(asctime)s %(name)s -- %(message)s"
_routed: list[logging.Handler] = []


def _serve_log_file() -> str | None:
    for handler in logging.getLogger("ray.serve").handlers:
        target = handler.target if isinstance(handler, logging.handlers.MemoryHandler) else handler
        if isinstance(target, logging.FileHandler):
            return str(target.baseFilename)
    return None


def route_to_serve_log() -> None:
    """Write our loggers to the replica's Serve log file, once per process.

    A handler of our own on the same file (appending), with the standard
    formatter: Serve's formats a traceback as a row of tuples.
    """
    path = _serve_log_file()
    if path is None or _routed:
        return  # not in a Serve replica (tests, tools), or done already
    handler = logging.FileHandler(path, mode="a", encoding="utf-8")
    handler.setFormatter(logging.Formatter(FORMAT))
    _routed.append(handler)
    for name in OUR_LOGGERS:
        logger = logging.getLogger(name)
        if name != "uvicorn.error":
            logger.setLevel(logging.INFO)
        logger.addHandler(handler)
        logger.propagate = False
