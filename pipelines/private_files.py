"""Files only their owner may read: keys, passwords."""

from __future__ import annotations

import os
from pathlib import Path


def write_private(path: Path, text: str, *, exclusive: bool = False) -> bool:
    """Write ``text`` to ``path`` with mode 0600 from its first byte.

    ``exclusive``: only if ``path`` does not exist yet; False when another
    process made it first (the caller then reads theirs).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    flags = os.O_WRONLY | os.O_CREAT | (os.O_EXCL if exclusive else os.O_TRUNC)
    try:
        fd = os.open(path, flags, 0o600)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    os.chmod(path, 0o600)  # O_CREAT's mode does not apply to a file that existed
    return True
