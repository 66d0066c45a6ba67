"""The DDPM noise schedule shared by training, export and the numpy sampler.

Numpy only (the runtime reads the same constants back from the artifact's
contract). ``squaredcos_cap_v2`` is the cosine schedule of Nichol & Dhariwal
(2021), the schedule diffusion_policy trains with: alpha_bar(t) =
cos^2(((t/T + s)/(1 + s)) * pi/2) with s = 0.008, and each beta capped at 0.999.
"""
from __future__ import annotations

import math

import numpy as np

TRAIN_TIMESTEPS = 100
BETA_SCHEDULES = ("squaredcos_cap_v2", "linear")


def betas_for(num_train_timesteps: int = TRAIN_TIMESTEPS,
              schedule: str = "squaredcos_cap_v2", max_beta: float = 0.999) -> np.ndarray:
    """Per-step noise variances beta_t, t = 0 .. T-1 (float64)."""
    T = int(num_train_timesteps)
    if T < 1:
        raise ValueError(f"num_train_timesteps must be >= 1, got {T}")
    if schedule == "squaredcos_cap_v2":
        def alpha_bar(u: float) -> float:
            return math.cos((u + 0.008) / 1.008 * math.pi / 2) ** 2
        return np.array([min(1.0 - alpha_bar((i + 1) / T) / alpha_bar(i / T), max_beta)
                         for i in range(T)], dtype=np.float64)
    if schedule == "linear":
        return np.linspace(1e-4, 2e-2, T, dtype=np.float64)
    raise ValueError(f"unknown beta schedule {schedule!r}; known {list(BETA_SCHEDULES)}")


def alphas_cumprod_for(num_train_timesteps: int = TRAIN_TIMESTEPS,
                       schedule: str = "squaredcos_cap_v2") -> np.ndarray:
    """alpha_bar_t = prod_{s<=t} (1 - beta_s): the signal fraction at each train step."""
    return np.cumprod(1.0 - betas_for(num_train_timesteps, schedule))
