"""The one diffusion sampler: deterministic DDIM (eta = 0) in numpy.

Evaluation in sim, the sim-to-sim checks and the ROS 2 policy node all sample
through this code; only the denoiser differs (an ONNX Runtime session on the
robot, a torch module in tests). The denoiser is a callable
``eps = denoiser(sample, timestep, obs_cond)`` on numpy arrays.

DDIM (Song et al., 2021) with eta = 0 over a subset of the K train steps:

    x0_hat = (x_t - sqrt(1 - a_t) * eps) / sqrt(a_t)      clipped to [-1, 1]
    eps'   = (x_t - sqrt(a_t) * x0_hat) / sqrt(1 - a_t)    (consistent with the clip)
    x_prev = sqrt(a_prev) * x0_hat + sqrt(1 - a_prev) * eps'

with a = alphas_cumprod, and a_prev = 1 after the last step (so the result is
x0_hat). The initial noise is an input, so a seeded RNG makes a chunk
reproducible.

Timestep spacing: ``leading`` is the original DDIM grid (t = 0, T/K, 2T/K, ...;
K=4 visits 75, 50, 25, 0); ``trailing`` (Lin et al., 2024) starts at the last
train step (99, 74, 49, 24). Trailing is the usual advice for few steps, but
on our push policy (150 demos; 60 DR episodes per figure, no safety filter)
leading won: 4 steps 50/60 vs 35/60, 3 steps 37/60 vs 26/60, 10 steps 59/60 vs
56/60. With x0 clipped to [-1, 1] skipping the top of the schedule costs
little, while ending at t = 0 adds a final near-clean refinement. So leading is
the default; both stay selectable and the contract records which one.

This module imports only numpy. Never torch.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

SPACINGS = ("leading", "trailing")
Denoiser = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]


def ddim_timesteps(num_train_timesteps: int, num_steps: int, spacing: str = "leading") -> np.ndarray:
    """The K train-step indices DDIM visits, from the noisiest down (int64, strictly decreasing)."""
    T, K = int(num_train_timesteps), int(num_steps)
    if not 1 <= K <= T:
        raise ValueError(f"num_steps must be in 1..{T}, got {num_steps}")
    if spacing == "trailing":
        ts = np.round(np.arange(T, 0, -T / K)).astype(np.int64) - 1
    elif spacing == "leading":
        ts = (np.arange(K) * (T // K)).astype(np.int64)[::-1]
    else:
        raise ValueError(f"unknown timestep spacing {spacing!r}; known {list(SPACINGS)}")
    return np.ascontiguousarray(ts)


def ddim_sample(denoiser: Denoiser, noise: np.ndarray, obs_cond: np.ndarray,
                alphas_cumprod: np.ndarray, num_steps: int, *, spacing: str = "leading",
                clip_sample: float = 1.0) -> np.ndarray:
    """Denoise ``noise`` (B, Tp, Da) into a normalized action chunk, conditioned on ``obs_cond`` (B, C)."""
    ac = np.asarray(alphas_cumprod, dtype=np.float64)
    x = np.asarray(noise, dtype=np.float32)
    cond = np.asarray(obs_cond, dtype=np.float32)
    ts = ddim_timesteps(len(ac), num_steps, spacing)
    batch = x.shape[0]
    for i, t in enumerate(ts):
        a_t = ac[t]
        a_prev = ac[ts[i + 1]] if i + 1 < len(ts) else 1.0
        eps = np.asarray(denoiser(x, np.full((batch,), t, dtype=np.int64), cond), dtype=np.float32)
        x0 = (x - np.sqrt(1.0 - a_t) * eps) / np.sqrt(a_t)
        if clip_sample:
            x0 = np.clip(x0, -clip_sample, clip_sample)
        eps = (x - np.sqrt(a_t) * x0) / np.sqrt(1.0 - a_t)
        x = (np.sqrt(a_prev) * x0 + np.sqrt(1.0 - a_prev) * eps).astype(np.float32)
    return x
