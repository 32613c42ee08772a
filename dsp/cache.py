"""The per-user cache folder shared by every layer: ``TIMBRECLIP_CACHE`` or ``~/.cache/timbreclip``."""

from __future__ import annotations

import os
from pathlib import Path


def user_cache_dir(*parts: str) -> Path:
    """``<cache root>/<parts...>`` (not created here)."""
    root = os.environ.get("TIMBRECLIP_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "timbreclip")
    return Path(root, *parts)
