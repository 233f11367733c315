"""What a person reads in the terminal: plain-text tables, and no third-party chatter."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence

# INFO lines of libraries that are not for an operator: onnxscript's export
# steps, MLflow's run links, Ray Serve's router objects, Alembic's migrations.
# Their warnings and errors still show.
CHATTY = ("onnxscript", "onnx_ir", "mlflow", "alembic", "ray.serve", "serve", "torch.onnx")


def quiet_third_parties(level: str) -> None:
    """Raise chatty libraries to WARNING unless the operator asked for DEBUG.

    Call again after importing them: some configure their own loggers on import.
    """
    if logging.getLevelName(level) == logging.DEBUG:
        return
    # MLflow writes a run's links to stdout itself, outside logging, unless told not to.
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    for name in CHATTY:
        logging.getLogger(name).setLevel(logging.WARNING)


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    cells = [[_text(v) for v in row] for row in rows]
    widths = [max([len(h), *(len(r[i]) for r in cells)]) for i, h in enumerate(headers)]
    lines = [
        "  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)),
        "  ".join("-" * w for w in widths),
        *("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in cells),
    ]
    return "\n".join(lines)


def _text(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)
