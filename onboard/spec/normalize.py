"""Normalization shared by training and the runtime (numpy only).

Stats travel inside the artifact's contract, so deployment normalizes exactly
as training did. ``minmax`` maps [min, max] to [-1, 1] (the diffusion
convention); ``meanstd`` standardizes; ``identity`` passes through. A
degenerate range (max == min, std == 0) maps to 0 instead of dividing by zero.
"""
from __future__ import annotations

import numpy as np

_EPS = 1e-8


def stats_from_array(x: np.ndarray, kind: str = "minmax") -> dict:
    x = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
    return {"kind": kind, "min": x.min(0).tolist(), "max": x.max(0).tolist(),
            "mean": x.mean(0).tolist(), "std": x.std(0).tolist()}


def normalize(x: np.ndarray, stats: dict) -> np.ndarray:
    kind = stats.get("kind", "minmax")
    x = np.asarray(x, dtype=np.float32)
    if kind == "identity":
        return x
    if kind == "minmax":
        lo = np.asarray(stats["min"], np.float32)
        hi = np.asarray(stats["max"], np.float32)
        span = hi - lo
        ok = span > _EPS
        out = np.where(ok, 2.0 * (x - lo) / np.where(ok, span, 1.0) - 1.0, 0.0)
        return out.astype(np.float32)
    if kind == "meanstd":
        mu = np.asarray(stats["mean"], np.float32)
        sd = np.asarray(stats["std"], np.float32)
        ok = sd > _EPS
        return np.where(ok, (x - mu) / np.where(ok, sd, 1.0), 0.0).astype(np.float32)
    raise ValueError(f"unknown normalization kind {kind!r}")


def unnormalize(y: np.ndarray, stats: dict) -> np.ndarray:
    kind = stats.get("kind", "minmax")
    y = np.asarray(y, dtype=np.float32)
    if kind == "identity":
        return y
    if kind == "minmax":
        lo = np.asarray(stats["min"], np.float32)
        hi = np.asarray(stats["max"], np.float32)
        return ((y + 1.0) * 0.5 * (hi - lo) + lo).astype(np.float32)
    if kind == "meanstd":
        return (y * np.asarray(stats["std"], np.float32) + np.asarray(stats["mean"], np.float32)).astype(np.float32)
    raise ValueError(f"unknown normalization kind {kind!r}")
