"""The VLA network: vision encoders, language encoder, fusion transformer, flow-matching action head.

Three parts, exported as three ONNX graphs (``policies.vla.export``) because
they run at three different rates on the robot:

- ``TextEncoder`` (once per instruction): word embeddings + learned positions
  + a small pre-LN transformer over the tokenizer ids -> language tokens.
  Optionally a frozen pretrained text encoder (a TorchScript module at a
  local path, ``(token_ids, token_mask) -> (B, L, D)``) replaces the
  embedding + transformer; a trainable linear maps its features to
  ``d_model``. When the path is absent, training starts from scratch.
- ``ObservationEncoder`` (once per chunk): one small CNN per camera (GroupNorm,
  trained from scratch, uint8 HWC in) whose final feature map is a grid of
  image tokens; a state token (normalized proprioception); and ``n_readout``
  learned readout tokens. A fusion transformer runs over
  [language tokens, image tokens, state token, readout tokens] (padding
  masked) and the readout outputs, flattened, are the context.
- ``ActionHead`` (K times per chunk): the 1-D temporal U-Net of the diffusion
  policy (``policies.diffusion.unet``, FiLM-conditioned) predicting the flow
  velocity of the normalized action chunk at flow time t in [0, 1].

Flow matching (Lipman et al. 2023; the rectified-flow form used by pi0):
x_t = (1 - t) * noise + t * actions, target velocity = actions - noise;
sampling integrates dx/dt = v from t = 0 (noise) to 1 with K Euler steps.

Attention is written out (matmul, softmax, additive mask) so that the dynamo
ONNX exporter maps it to plain ops with a dynamic batch axis.
Imports torch; never on the robot path.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from policies.diffusion.unet import ConditionalUnet1D, UNetConfig, count_parameters

NEG_INF = -1e9


@dataclass
class VLAConfig:
    vocab_size: int
    max_len: int                                   # token sequence length (bos + words + eos, padded)
    state_dim: int
    action_dim: int
    cameras: tuple[str, ...] = ("front", "wrist")
    image_size: tuple[int, int] = (96, 96)         # (H, W)
    pred_horizon: int = 16
    d_model: int = 128
    n_heads: int = 4
    text_layers: int = 2
    fusion_layers: int = 3
    mlp_ratio: int = 4
    cnn_channels: tuple[int, ...] = (32, 64, 128, 128)   # stride-2 stages; the last map is the token grid
    cnn_refine: bool = True                        # one extra stride-1 conv at the second stage
    lang_film: bool = True                         # FiLM the CNN stages with the pooled instruction
    token_pool: int = 1                            # average-pool the final grid by this factor
    n_readout: int = 4
    head_down_dims: tuple[int, ...] = (32, 64, 128)
    head_kernel_size: int = 5
    head_n_groups: int = 8
    time_embed_dim: int = 64
    time_scale: float = 100.0                      # flow time t in [0, 1] enters the sinusoid as t * scale
    pretrained_text_encoder: str | None = None     # local TorchScript file; None or absent: from scratch
    pretrained_text_dim: int = 0
    aux_classes: int = 0                           # training-only grounding head on the context (0: none)
    aux_pos_dim: int = 0                           # training-only localisation head on the context (0: none)

    @property
    def context_dim(self) -> int:
        return self.n_readout * self.d_model

    def token_grid(self) -> tuple[int, int]:
        h, w = self.image_size
        for _ in self.cnn_channels:
            h, w = (h + 1) // 2, (w + 1) // 2
        return h // self.token_pool, w // self.token_pool

    @property
    def image_tokens_per_camera(self) -> int:
        gh, gw = self.token_grid()
        return gh * gw


# ---- building blocks -----------------------------------------------------------------------------
class SelfAttention(nn.Module):
    def __init__(self, d: int, n_heads: int):
        super().__init__()
        if d % n_heads:
            raise ValueError(f"d_model {d} not divisible by n_heads {n_heads}")
        self.h, self.dh = n_heads, d // n_heads
        self.qkv = nn.Linear(d, 3 * d)
        self.out = nn.Linear(d, d)

    def forward(self, x: torch.Tensor, key_bias: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.h, self.dh).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]                          # (B, h, N, dh)
        att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(self.dh)) + key_bias[:, None, None, :]
        y = att.softmax(dim=-1) @ v
        return self.out(y.transpose(1, 2).reshape(b, n, d))


class TransformerBlock(nn.Module):
    """Pre-LN: x + attn(LN x); x + MLP(LN x)."""

    def __init__(self, d: int, n_heads: int, mlp_ratio: int):
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.attn = SelfAttention(d, n_heads)
        self.mlp = nn.Sequential(nn.Linear(d, mlp_ratio * d), nn.GELU(), nn.Linear(mlp_ratio * d, d))

    def forward(self, x: torch.Tensor, key_bias: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln1(x), key_bias)
        return x + self.mlp(self.ln2(x))


def mask_bias(mask: torch.Tensor) -> torch.Tensor:
    """(B, N) mask (1 = real token) -> additive attention bias (0 or NEG_INF)."""
    return (1.0 - mask.to(torch.float32)) * NEG_INF


def _groups(c: int) -> int:
    return 8 if c % 8 == 0 else 1


class CameraEncoder(nn.Module):
    """uint8 (B, H, W, 3) -> image tokens (B, gh*gw, d). Stride-2 conv stages with GroupNorm + SiLU.

    With ``lang_film`` every stage's GroupNorm output is modulated per channel by the pooled
    instruction (FiLM, as in RT-1's FiLM-EfficientNet): the CNN can then pick out the named colour
    before the fusion transformer sees the tokens. The FiLM layers start at zero (identity)."""

    def __init__(self, cfg: VLAConfig):
        super().__init__()
        self.stages, self.films = nn.ModuleList(), nn.ModuleList()
        c_in = 3
        for i, c in enumerate(cfg.cnn_channels):
            k = 5 if i == 0 else 3
            convs = [(c_in, c, k, 2)] + ([(c, c, 3, 1)] if i == 1 and cfg.cnn_refine else [])
            for ci, co, kk, stride in convs:   # the refinement at the mid scale is cheap and helps small objects
                self.stages.append(nn.ModuleList([nn.Conv2d(ci, co, kk, stride=stride, padding=kk // 2),
                                                  nn.GroupNorm(_groups(co), co)]))
                film = nn.Linear(cfg.d_model, 2 * co) if cfg.lang_film else None
                if film is not None:
                    nn.init.zeros_(film.weight)
                    nn.init.zeros_(film.bias)
                self.films.append(film if film is not None else nn.Identity())
            c_in = c
        self.lang_film = cfg.lang_film
        self.act = nn.SiLU()
        self.pool = nn.AvgPool2d(cfg.token_pool) if cfg.token_pool > 1 else nn.Identity()
        self.proj = nn.Linear(c_in, cfg.d_model)
        self.pos = nn.Parameter(torch.randn(1, cfg.image_tokens_per_camera, cfg.d_model) * 0.02)

    def forward(self, image: torch.Tensor, lang: torch.Tensor | None = None) -> torch.Tensor:
        x = image.permute(0, 3, 1, 2).to(torch.float32) * (1.0 / 127.5) - 1.0
        for (conv, norm), film in zip(self.stages, self.films):
            x = norm(conv(x))
            if self.lang_film and lang is not None:
                gamma, beta = film(lang)[:, :, None, None].chunk(2, dim=1)
                x = x * (1.0 + gamma) + beta
            x = self.act(x)
        x = self.pool(x)                                            # (B, C, gh, gw)
        x = x.flatten(2).transpose(1, 2)                            # (B, gh*gw, C)
        return self.proj(x) + self.pos


class TextEncoder(nn.Module):
    """token ids (B, L) int64 + mask (B, L) -> language tokens (B, L, d)."""

    def __init__(self, cfg: VLAConfig):
        super().__init__()
        self.pretrained = None
        if cfg.pretrained_text_encoder:
            self.pretrained = torch.jit.load(str(cfg.pretrained_text_encoder), map_location="cpu").eval()
            for p in self.pretrained.parameters():
                p.requires_grad_(False)
            self.pre_proj = nn.Linear(cfg.pretrained_text_dim, cfg.d_model)
        else:
            self.embed = nn.Embedding(cfg.vocab_size, cfg.d_model)
            self.pos = nn.Parameter(torch.randn(1, cfg.max_len, cfg.d_model) * 0.02)
            self.blocks = nn.ModuleList(TransformerBlock(cfg.d_model, cfg.n_heads, cfg.mlp_ratio)
                                        for _ in range(cfg.text_layers))
        self.ln = nn.LayerNorm(cfg.d_model)

    def forward(self, token_ids: torch.Tensor, token_mask: torch.Tensor) -> torch.Tensor:
        if self.pretrained is not None:
            with torch.no_grad():
                feats = self.pretrained(token_ids, token_mask)
            return self.ln(self.pre_proj(feats))
        x = self.embed(token_ids) + self.pos
        bias = mask_bias(token_mask)
        for blk in self.blocks:
            x = blk(x, bias)
        return self.ln(x)


class ObservationEncoder(nn.Module):
    """(language tokens, mask, images per camera, normalized state) -> context (B, n_readout * d)."""

    def __init__(self, cfg: VLAConfig):
        super().__init__()
        self.cfg = cfg
        d = cfg.d_model
        self.cameras = nn.ModuleDict({cam: CameraEncoder(cfg) for cam in cfg.cameras})
        self.camera_embed = nn.Parameter(torch.randn(len(cfg.cameras), 1, d) * 0.02)
        self.state_proj = nn.Sequential(nn.Linear(cfg.state_dim, d), nn.SiLU(), nn.Linear(d, d))
        self.type_embed = nn.Parameter(torch.randn(3, 1, d) * 0.02)     # language, image, state
        self.readout = nn.Parameter(torch.randn(1, cfg.n_readout, d) * 0.02)
        self.blocks = nn.ModuleList(TransformerBlock(d, cfg.n_heads, cfg.mlp_ratio)
                                    for _ in range(cfg.fusion_layers))
        self.ln = nn.LayerNorm(d)

    def encode_images(self, images: list[torch.Tensor], lang: torch.Tensor | None = None) -> torch.Tensor:
        toks = [self.cameras[cam](img, lang) + self.camera_embed[i]
                for i, (cam, img) in enumerate(zip(self.cfg.cameras, images))]
        return torch.cat(toks, dim=1) + self.type_embed[1]

    def forward(self, lang_tokens: torch.Tensor, token_mask: torch.Tensor, images: list[torch.Tensor],
                state: torch.Tensor) -> torch.Tensor:
        b = state.shape[0]
        m = token_mask.to(torch.float32)[:, :, None]
        pooled = (lang_tokens * m).sum(1) / m.sum(1).clamp(min=1.0)      # mean over real tokens
        img = self.encode_images(images, pooled)
        st = self.state_proj(state).unsqueeze(1) + self.type_embed[2]
        ro = self.readout.expand(b, -1, -1)
        x = torch.cat([lang_tokens + self.type_embed[0], img, st, ro], dim=1)
        n_rest = img.shape[1] + 1 + self.cfg.n_readout
        bias = torch.cat([mask_bias(token_mask), torch.zeros(b, n_rest, dtype=torch.float32)], dim=1)
        for blk in self.blocks:
            x = blk(x, bias)
        return self.ln(x[:, -self.cfg.n_readout:]).reshape(b, -1)


class ActionHead(nn.Module):
    """(x_t (B, Tp, Da), flow time t (B,) in [0, 1], context (B, C)) -> velocity (B, Tp, Da)."""

    def __init__(self, cfg: VLAConfig):
        super().__init__()
        self.time_scale = float(cfg.time_scale)
        self.unet = ConditionalUnet1D(UNetConfig(action_dim=cfg.action_dim, obs_cond_dim=cfg.context_dim,
                                                 down_dims=tuple(cfg.head_down_dims),
                                                 kernel_size=cfg.head_kernel_size, n_groups=cfg.head_n_groups,
                                                 timestep_embed_dim=cfg.time_embed_dim))

    def forward(self, sample: torch.Tensor, timestep: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        return self.unet(sample, timestep * self.time_scale, context)


class VLAPolicy(nn.Module):
    def __init__(self, cfg: VLAConfig):
        super().__init__()
        if cfg.pretrained_text_encoder and not Path(cfg.pretrained_text_encoder).is_file():
            cfg.pretrained_text_encoder = None          # absent: train the text encoder from scratch
        if cfg.pred_horizon % (2 ** (len(cfg.head_down_dims) - 1)):
            raise ValueError(f"pred_horizon {cfg.pred_horizon} must be divisible by "
                             f"{2 ** (len(cfg.head_down_dims) - 1)}")
        self.cfg = cfg
        self.text = TextEncoder(cfg)
        self.obs = ObservationEncoder(cfg)
        self.head = ActionHead(cfg)
        # Training-only grounding head: which lane the named cube is in and which task, from the context.
        # Not exported (the three graphs are text, obs and head); it gives the fusion a direct signal to
        # bind the colour word to the image, which the flow loss alone learns slowly.
        self.aux = nn.Linear(cfg.context_dim, cfg.aux_classes) if cfg.aux_classes else None
        # Training-only localisation head: the named cube's and its goal's positions (simulator labels),
        # read linearly off the context, so the image features must say precisely where things are.
        self.aux_pos = nn.Linear(cfg.context_dim, cfg.aux_pos_dim) if cfg.aux_pos_dim else None

    def context(self, token_ids, token_mask, images, state) -> torch.Tensor:
        return self.obs(self.text(token_ids, token_mask), token_mask, images, state)

    def flow_loss(self, actions: torch.Tensor, context: torch.Tensor, generator: torch.Generator,
                  samples_per_obs: int = 1) -> torch.Tensor:
        """Flow-matching loss; each encoded observation is reused for ``samples_per_obs`` (t, noise) draws
        (the head is cheap next to the encoders)."""
        if samples_per_obs > 1:
            actions = actions.repeat_interleave(samples_per_obs, dim=0)
            context = context.repeat_interleave(samples_per_obs, dim=0)
        b = actions.shape[0]
        noise = torch.randn(actions.shape, generator=generator)
        # Logit-normal-ish draw tilted toward the noisy end, where the first Euler steps decide the mode.
        t = torch.sigmoid(torch.randn(b, generator=generator) * 1.0 - 0.3)
        x_t = (1.0 - t[:, None, None]) * noise + t[:, None, None] * actions
        v = self.head(x_t, t, context)
        return F.mse_loss(v, actions - noise)

    @torch.no_grad()
    def sample(self, context: torch.Tensor, noise: torch.Tensor, num_steps: int) -> torch.Tensor:
        """Euler integration from noise (t = 0) to the action chunk (t = 1); the reference for the numpy loop."""
        x = noise.clone()
        for k in range(num_steps):
            t = torch.full((x.shape[0],), k / num_steps)
            x = x + self.head(x, t, context) / num_steps
        return x.clamp(-1.0, 1.0)


def parameter_counts(model: VLAPolicy) -> dict:
    return {"text": count_parameters(model.text), "obs": count_parameters(model.obs),
            "head": count_parameters(model.head), "total": count_parameters(model)}
