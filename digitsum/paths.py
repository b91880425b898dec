"""Per-user folders. Torch-free: `digitsum list` answers from a cache in here without torch."""

from __future__ import annotations

import os
from pathlib import Path


def user_cache_dir() -> Path:
    """digitsum's per-user cache folder: ``$XDG_CACHE_HOME/digitsum``, else ``~/.cache/digitsum``.

    It holds the listing cache (``components/``) and, unless ``$DIGITSUM_DATA`` or a recipe's
    ``data.root`` says otherwise, the downloaded MNIST (``MNIST/raw/``).
    """
    # An empty XDG_CACHE_HOME means unset (XDG base directory spec).
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "digitsum"
