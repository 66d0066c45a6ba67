"""Where onboard finds its shipped configs.

``config/`` sits at the repository root (next to this package) in a source or
editable install. ``ONBOARD_CONFIG_DIR`` overrides it.
"""
from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


def config_dir() -> Path:
    env = os.environ.get("ONBOARD_CONFIG_DIR")
    return Path(env) if env else REPO_ROOT / "config"


def robots_dir() -> Path:
    return config_dir() / "robots"
