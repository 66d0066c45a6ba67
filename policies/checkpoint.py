"""Checkpoint files of every trainer: atomic writes and checked reads.

Every trainer saves a dict with a ``kind`` ("diffusion", "vla", "residual", ...)
through ``save_checkpoint_atomic`` (temporary file + rename: a crash never
leaves half a checkpoint) and reads it back with ``read_checkpoint``, which
turns a missing, unreadable or foreign file into an ``OnboardError`` that
names the file and the command that writes the right one.

Imports torch (training/export time only); never on the robot path.
"""
from __future__ import annotations

import os
from pathlib import Path

import torch

from onboard.errors import OnboardError


def save_checkpoint_atomic(path: Path, payload: dict) -> None:
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)


def checkpoint_kind(path: str | Path) -> str | None:
    """The ``kind`` a checkpoint file declares, or None when it is unreadable or not a checkpoint dict."""
    try:
        ck = torch.load(path, map_location="cpu", weights_only=False)
    except Exception:  # noqa: BLE001 - not ours, whatever it is; read_checkpoint reports it properly
        return None
    return ck.get("kind") if isinstance(ck, dict) else None


def read_checkpoint(path: str | Path, *, kind: str, what: str, command: str) -> dict:
    """Load a checkpoint of ``kind``; ``what`` names it in errors, ``command`` is the one that writes it."""
    path = Path(path)
    if not path.is_file():
        raise OnboardError("checkpoint not found", file=str(path), fix=f"pass the file written by `{command}`")
    try:
        ck = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # torch raises many types for a corrupt file
        raise OnboardError(f"cannot read checkpoint: {type(exc).__name__}: {exc}", file=str(path),
                           fix=f"re-run `{command}` (the file is truncated or not a checkpoint)") from exc
    if not isinstance(ck, dict) or ck.get("kind") != kind:
        raise OnboardError(f"not a {what} checkpoint", file=str(path), field="kind",
                           fix=f"pass the file written by `{command}`")
    return ck
