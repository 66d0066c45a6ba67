"""The denoiser: a conditional 1-D temporal U-Net with FiLM conditioning.

The architecture follows the diffusion_policy paper (Chi et al., 2023): the
action sequence (B, T, Da) is treated as Da channels over T time steps;
residual blocks of Conv1d + GroupNorm + Mish; every block is modulated by a
FiLM scale and bias computed from [sinusoidal timestep embedding ; flattened
observation history]. Written here from that description, kept small enough
to train on a CPU and to run a few-step chunk in a few milliseconds.

The forward pass uses only ops the torch dynamo ONNX exporter maps cleanly
(opset 20), with a dynamic batch axis. Imports torch; never on the robot path.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn


@dataclass
class UNetConfig:
    action_dim: int
    obs_cond_dim: int                      # obs_horizon * obs_dim
    down_dims: tuple[int, ...] = (64, 128, 256)
    kernel_size: int = 5
    n_groups: int = 8
    timestep_embed_dim: int = 64


class SinusoidalTimestepEmbedding(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        half = dim // 2
        freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float32) / max(half - 1, 1))
        self.register_buffer("freqs", freqs, persistent=False)

    def forward(self, timestep: torch.Tensor) -> torch.Tensor:
        angles = timestep.to(torch.float32)[:, None] * self.freqs[None, :]
        return torch.cat([angles.sin(), angles.cos()], dim=-1)


class Conv1dBlock(nn.Sequential):
    """Conv1d -> GroupNorm -> Mish, length preserving."""

    def __init__(self, c_in: int, c_out: int, kernel_size: int, n_groups: int):
        super().__init__(nn.Conv1d(c_in, c_out, kernel_size, padding=kernel_size // 2),
                         nn.GroupNorm(n_groups, c_out), nn.Mish())


class FiLMResidualBlock(nn.Module):
    """Two conv blocks; the first one's output is scaled and shifted per channel by the condition."""

    def __init__(self, c_in: int, c_out: int, cond_dim: int, kernel_size: int, n_groups: int):
        super().__init__()
        self.block1 = Conv1dBlock(c_in, c_out, kernel_size, n_groups)
        self.block2 = Conv1dBlock(c_out, c_out, kernel_size, n_groups)
        self.film = nn.Sequential(nn.Mish(), nn.Linear(cond_dim, 2 * c_out))
        self.residual = nn.Conv1d(c_in, c_out, 1) if c_in != c_out else nn.Identity()
        self.c_out = c_out

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        h = self.block1(x)
        scale, bias = self.film(cond).unsqueeze(-1).chunk(2, dim=1)
        h = self.block2(scale * h + bias)
        return h + self.residual(x)


class ConditionalUnet1D(nn.Module):
    """eps = f(noisy action sequence, diffusion step, normalized obs history)."""

    def __init__(self, cfg: UNetConfig):
        super().__init__()
        self.cfg = cfg
        k, g, dims = cfg.kernel_size, cfg.n_groups, list(cfg.down_dims)
        e = cfg.timestep_embed_dim
        self.timestep_encoder = nn.Sequential(SinusoidalTimestepEmbedding(e), nn.Linear(e, 4 * e),
                                              nn.Mish(), nn.Linear(4 * e, e))
        cond_dim = e + cfg.obs_cond_dim
        chans = [cfg.action_dim] + dims
        pairs = list(zip(chans[:-1], chans[1:]))
        self.down = nn.ModuleList()
        for i, (c_in, c_out) in enumerate(pairs):
            last = i == len(pairs) - 1
            self.down.append(nn.ModuleList([
                FiLMResidualBlock(c_in, c_out, cond_dim, k, g),
                FiLMResidualBlock(c_out, c_out, cond_dim, k, g),
                nn.Conv1d(c_out, c_out, 3, stride=2, padding=1) if not last else nn.Identity()]))
        self.mid = nn.ModuleList([FiLMResidualBlock(dims[-1], dims[-1], cond_dim, k, g),
                                  FiLMResidualBlock(dims[-1], dims[-1], cond_dim, k, g)])
        self.up = nn.ModuleList()
        # The deepest skip is consumed first; every up level undoes one downsampling, so the
        # shallowest skip (full length) is not concatenated, as in diffusion_policy.
        for c_in, c_out in reversed(pairs[1:]):
            self.up.append(nn.ModuleList([
                FiLMResidualBlock(2 * c_out, c_in, cond_dim, k, g),
                FiLMResidualBlock(c_in, c_in, cond_dim, k, g),
                nn.ConvTranspose1d(c_in, c_in, 4, stride=2, padding=1)]))
        self.final = nn.Sequential(Conv1dBlock(dims[0], dims[0], k, g), nn.Conv1d(dims[0], cfg.action_dim, 1))

    def forward(self, sample: torch.Tensor, timestep: torch.Tensor, obs_cond: torch.Tensor) -> torch.Tensor:
        # sample (B, T, Da); timestep (B,) int64; obs_cond (B, To*Do)
        x = sample.transpose(1, 2)
        cond = torch.cat([self.timestep_encoder(timestep), obs_cond], dim=-1)
        skips = []
        for res1, res2, downsample in self.down:
            x = res2(res1(x, cond), cond)
            skips.append(x)
            x = downsample(x)
        for res in self.mid:
            x = res(x, cond)
        for res1, res2, upsample in self.up:
            x = torch.cat([x, skips.pop()], dim=1)
            x = upsample(res2(res1(x, cond), cond))
        return self.final(x).transpose(1, 2)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
