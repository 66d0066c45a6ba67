"""Diffusion policy behaviour cloning, in one file (CleanRL style): config, data, model, loop.

Reads numpy arrays (per-key observations, actions, episode index), trains the
1-D U-Net denoiser (``policies.diffusion.unet``) with DDPM epsilon prediction
(100 steps, squared-cosine schedule), keeps an EMA copy of the weights, and
writes ``checkpoint.pt`` (atomically, resumable), ``training_curve.png`` and
``train_log.csv`` into the output folder. The checkpoint holds everything
export needs: EMA weights, model and sampler config, normalization stats,
observation keys with shapes and units, action names, robot and provenance.

Sequence sampling follows diffusion_policy: a window of ``pred_horizon``
steps starts up to ``obs_horizon - 1`` steps before an episode and ends up to
``action_horizon - 1`` steps after it; indices outside the episode are
clamped, so observations repeat the first frame and actions repeat the last.

Imports torch (training only); never imported by the runtime. Tasks and
datasets are inputs here: this module never imports a task or a simulator.
"""
from __future__ import annotations

import csv
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from onboard.errors import OnboardError
from onboard.spec.normalize import normalize, stats_from_array
from policies.checkpoint import read_checkpoint, save_checkpoint_atomic
from policies.diffusion.schedule import alphas_cumprod_for
from policies.diffusion.unet import ConditionalUnet1D, UNetConfig, count_parameters

CHECKPOINT_NAME = "checkpoint.pt"
CURVE_NAME = "training_curve.png"


@dataclass
class TrainConfig:
    # chunking (diffusion_policy defaults)
    obs_horizon: int = 2
    pred_horizon: int = 16
    action_horizon: int = 8
    # model: sized so that training fits in a few minutes on 2 CPU cores and a 4-step chunk in ~2 ms
    down_dims: tuple[int, ...] = (32, 64, 128)
    kernel_size: int = 5
    n_groups: int = 8
    timestep_embed_dim: int = 64
    # diffusion
    num_train_timesteps: int = 100
    beta_schedule: str = "squaredcos_cap_v2"
    # optimisation
    steps: int = 6000
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 1e-6
    warmup_steps: int = 200
    ema_max_decay: float = 0.999
    grad_clip_norm: float = 1.0
    # bookkeeping
    seed: int = 0
    checkpoint_every: int = 1000
    log_every: int = 25
    num_threads: int | None = None        # None: 2, or 1 when the CPU is already busy (see pick_num_threads)


@dataclass
class TrainData:
    """What the trainer consumes: float arrays over N frames of concatenated episodes."""
    obs: dict[str, np.ndarray]          # key -> (N, d), in ``obs_spec`` order
    actions: np.ndarray                 # (N, Da)
    episode_index: np.ndarray           # (N,) int, frames of one episode contiguous
    obs_spec: list[dict]                # [{"name", "shape", "units"}] for the keys in ``obs``
    action_names: list[str]
    robot: str = ""
    control_rate_hz: float = 10.0
    meta: dict = field(default_factory=dict)   # provenance: dataset path, task, DR ranges, ...


# ---- data -----------------------------------------------------------------------------------------
def episode_bounds(episode_index: np.ndarray) -> list[tuple[int, int]]:
    """[(start, end)) of each run of equal episode index, in order."""
    ep = np.asarray(episode_index).reshape(-1)
    if len(ep) == 0:
        return []
    cuts = np.flatnonzero(np.diff(ep) != 0) + 1
    starts = np.concatenate([[0], cuts])
    ends = np.concatenate([cuts, [len(ep)]])
    return list(zip(starts.tolist(), ends.tolist()))


def sequence_windows(episode_index: np.ndarray, pred_horizon: int, obs_horizon: int,
                     action_horizon: int) -> np.ndarray:
    """All training windows as rows (episode_start, episode_end, window_start) with window_start
    relative to the episode; it runs from -(obs_horizon-1) to len-pred_horizon+(action_horizon-1)."""
    pad_before, pad_after = obs_horizon - 1, action_horizon - 1
    rows = []
    for s, e in episode_bounds(episode_index):
        n = e - s
        last = max(n - pred_horizon + pad_after, -pad_before)
        for w in range(-pad_before, last + 1):
            rows.append((s, e, w))
    return np.asarray(rows, dtype=np.int64).reshape(-1, 3)


def window_frame_indices(windows: np.ndarray, pred_horizon: int) -> np.ndarray:
    """(B, pred_horizon) absolute frame indices, clamped into each window's episode (edge padding)."""
    s, e, w = windows[:, 0:1], windows[:, 1:2], windows[:, 2:3]
    rel = np.clip(w + np.arange(pred_horizon)[None, :], 0, e - s - 1)
    return s + rel


class ChunkBatcher:
    """Normalizes the arrays once, then draws (obs_cond, action chunk) batches by index."""

    def __init__(self, data: TrainData, cfg: TrainConfig, norm: dict):
        self.cfg = cfg
        obs = [normalize(data.obs[k["name"]].reshape(len(data.actions), -1), norm["obs"][k["name"]])
               for k in data.obs_spec]
        self.obs = torch.from_numpy(np.concatenate(obs, axis=1).astype(np.float32))
        self.actions = torch.from_numpy(normalize(data.actions, norm["action"]).astype(np.float32))
        self.windows = sequence_windows(data.episode_index, cfg.pred_horizon, cfg.obs_horizon,
                                        cfg.action_horizon)
        if len(self.windows) == 0:
            raise OnboardError("no training windows: the dataset has no frames", field="episode_index",
                               fix="collect demonstrations first (`onboard collect`)")

    def batch(self, rng: np.random.Generator, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        pick = self.windows[rng.integers(0, len(self.windows), size=batch_size)]
        idx = torch.from_numpy(window_frame_indices(pick, self.cfg.pred_horizon))
        obs_cond = self.obs[idx[:, :self.cfg.obs_horizon]].reshape(batch_size, -1)
        return obs_cond, self.actions[idx]


def normalization_stats(data: TrainData) -> dict:
    return {"obs": {k["name"]: stats_from_array(data.obs[k["name"]].reshape(len(data.actions), -1))
                    for k in data.obs_spec},
            "action": stats_from_array(data.actions)}


def validate_data(data: TrainData) -> None:
    n = len(data.actions)
    if data.actions.ndim != 2 or n == 0:
        raise OnboardError(f"actions must be a non-empty (N, action_dim) array, got shape {data.actions.shape}",
                           field="action", fix="check the dataset's action column")
    if len(data.action_names) != data.actions.shape[1]:
        raise OnboardError(f"{len(data.action_names)} action names for action dim {data.actions.shape[1]}",
                           field="action_names", fix="name every action dimension")
    if len(data.episode_index) != n:
        raise OnboardError("episode_index length differs from the number of action frames",
                           field="episode_index", fix="check the dataset")
    for k in data.obs_spec:
        x = data.obs.get(k["name"])
        if x is None or len(x) != n:
            raise OnboardError(f"observation '{k['name']}' is missing or has the wrong length",
                               field=f"observation.{k['name']}", fix="check the dataset")
        if not np.all(np.isfinite(x)):
            raise OnboardError(f"observation '{k['name']}' has non-finite values",
                               field=f"observation.{k['name']}", fix="drop or repair those episodes")
    if not np.all(np.isfinite(data.actions)):
        raise OnboardError("actions have non-finite values", field="action", fix="drop or repair those episodes")


# ---- model, schedule, EMA ------------------------------------------------------------------------
def build_model(cfg: TrainConfig, action_dim: int, obs_dim: int) -> ConditionalUnet1D:
    return ConditionalUnet1D(UNetConfig(action_dim=action_dim, obs_cond_dim=cfg.obs_horizon * obs_dim,
                                        down_dims=tuple(cfg.down_dims), kernel_size=cfg.kernel_size,
                                        n_groups=cfg.n_groups, timestep_embed_dim=cfg.timestep_embed_dim))


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Linear warmup, then cosine decay to zero at ``cfg.steps``."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    return cfg.lr * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def ema_decay_at(step: int, cfg: TrainConfig) -> float:
    # Short warmup so the EMA is useful after a few hundred steps, not only after thousands.
    return min(cfg.ema_max_decay, (1.0 + step) / (10.0 + step))


@torch.no_grad()
def ema_update(ema: torch.nn.Module, model: torch.nn.Module, decay: float) -> None:
    for pe, pm in zip(ema.parameters(), model.parameters()):
        pe.mul_(decay).add_(pm.detach(), alpha=1.0 - decay)
    for be, bm in zip(ema.buffers(), model.buffers()):
        be.copy_(bm)


def diffusion_loss(model: torch.nn.Module, actions: torch.Tensor, obs_cond: torch.Tensor,
                   alphas_cumprod: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """DDPM epsilon-prediction loss: noise the clean chunk at a random step, predict the noise."""
    b = actions.shape[0]
    noise = torch.randn(actions.shape, generator=generator)
    t = torch.randint(0, len(alphas_cumprod), (b,), generator=generator)
    a = alphas_cumprod[t].view(b, 1, 1)
    noisy = a.sqrt() * actions + (1.0 - a).sqrt() * noise
    return F.mse_loss(model(noisy, t, obs_cond), noise)


# ---- checkpoints ---------------------------------------------------------------------------------
def load_checkpoint(path: str | Path) -> dict:
    return read_checkpoint(path, kind="diffusion", what="diffusion policy",
                           command="onboard train --policy diffusion")


def model_from_checkpoint(ckpt: dict, *, ema: bool = True) -> ConditionalUnet1D:
    model = ConditionalUnet1D(UNetConfig(**ckpt["unet"]))
    model.load_state_dict(ckpt["ema_state" if ema else "model_state"])
    return model.eval()


def plot_curve(history: list[tuple[int, float]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not history:
        return
    steps, losses = np.asarray(history).T
    fig, ax = plt.subplots(figsize=(6, 3.2))
    ax.plot(steps, losses, lw=0.8, alpha=0.4, label="loss")
    if len(losses) >= 8:
        w = max(2, len(losses) // 20)
        smooth = np.convolve(losses, np.ones(w) / w, mode="valid")
        ax.plot(steps[w - 1:], smooth, lw=1.5, label=f"mean of {w}")
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("epsilon MSE")
    ax.set_title("diffusion policy training loss", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    tmp = path.with_name(path.stem + ".tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, path)


def pick_num_threads(requested: int | None) -> int:
    """2 intra-op threads on an idle 2-core machine; 1 when the 1-min load average says the cores are
    taken. Measured here (push, batch 64): idle, 2 threads ~24 steps/s vs ~16 for 1; with the cores
    shared by other jobs, 2 threads fell to 0.9 steps/s (8.7 with OMP_WAIT_POLICY=PASSIVE) while 1
    thread kept ~16: OpenMP barriers stall whenever one of the two threads is descheduled."""
    if requested:
        return int(requested)
    cores = os.cpu_count() or 1
    try:
        busy = os.getloadavg()[0] > max(1.0, cores - 1.0)
    except OSError:
        busy = False
    return 1 if busy or cores < 2 else 2


# ---- the loop ------------------------------------------------------------------------------------
def train(cfg: TrainConfig, data: TrainData, out_dir: str | Path, *, resume: bool = False,
          progress: bool = True) -> dict:
    """Train (or resume) and return the final checkpoint payload (also written to ``out_dir``)."""
    from tqdm import tqdm

    cfg.num_threads = pick_num_threads(cfg.num_threads)
    torch.set_num_threads(cfg.num_threads)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    ckpt_path = out_dir / CHECKPOINT_NAME
    validate_data(data)
    if not 1 <= cfg.action_horizon <= cfg.pred_horizon or cfg.obs_horizon < 1:
        raise OnboardError(f"need obs_horizon >= 1 and 1 <= action_horizon ({cfg.action_horizon}) <= "
                           f"pred_horizon ({cfg.pred_horizon})", field="action_horizon",
                           fix="pick consistent horizons")
    if cfg.pred_horizon % (2 ** (len(cfg.down_dims) - 1)):
        raise OnboardError(f"pred_horizon {cfg.pred_horizon} must be divisible by "
                           f"{2 ** (len(cfg.down_dims) - 1)} (the U-Net downsamples it)",
                           field="pred_horizon", fix="use 16 (or another multiple)")

    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    obs_dim = sum(int(np.prod(k["shape"])) for k in data.obs_spec)
    action_dim = data.actions.shape[1]
    model = build_model(cfg, action_dim, obs_dim)
    ema = build_model(cfg, action_dim, obs_dim)
    ema.load_state_dict(model.state_dict())
    ema.requires_grad_(False)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    norm = normalization_stats(data)
    step, history = 0, []

    if resume:
        if not ckpt_path.is_file():
            raise OnboardError("--resume given but there is no checkpoint to resume", file=str(ckpt_path),
                               fix="drop --resume to start fresh, or pass the --out folder of the earlier run")
        ckpt = load_checkpoint(ckpt_path)
        keys = [k["name"] for k in ckpt["obs_spec"]]
        if keys != [k["name"] for k in data.obs_spec] or ckpt["unet"]["action_dim"] != action_dim:
            raise OnboardError(f"checkpoint was trained on obs keys {keys}, action dim {ckpt['unet']['action_dim']}",
                               file=str(ckpt_path), field="obs_spec",
                               fix="resume with the same dataset and --obs-keys, or start a fresh --out")
        model.load_state_dict(ckpt["model_state"])
        ema.load_state_dict(ckpt["ema_state"])
        opt.load_state_dict(ckpt["optimizer_state"])
        norm, step, history = ckpt["normalization"], int(ckpt["step"]), list(ckpt["loss_history"])
        rng.bit_generator.state = ckpt["rng"]["numpy"]
        gen.set_state(ckpt["rng"]["torch_generator"])
        torch.set_rng_state(ckpt["rng"]["torch"])

    batcher = ChunkBatcher(data, cfg, norm)
    alphas_cumprod = torch.from_numpy(alphas_cumprod_for(cfg.num_train_timesteps, cfg.beta_schedule)).float()
    unet_cfg = asdict(model.cfg)

    def payload() -> dict:
        return {"kind": "diffusion", "step": step, "config": asdict(cfg), "unet": unet_cfg,
                "model_state": model.state_dict(), "ema_state": ema.state_dict(),
                "optimizer_state": opt.state_dict(), "normalization": norm,
                "obs_spec": data.obs_spec, "action_names": list(data.action_names), "robot": data.robot,
                "control_rate_hz": float(data.control_rate_hz), "meta": data.meta,
                "loss_history": history, "num_parameters": count_parameters(model),
                "rng": {"numpy": rng.bit_generator.state, "torch_generator": gen.get_state(),
                        "torch": torch.get_rng_state()}}

    model.train()
    t0, start_step, running = time.perf_counter(), step, []
    last_plot = t0
    bar = tqdm(total=cfg.steps, initial=step, desc="train diffusion", unit="step", disable=not progress,
               dynamic_ncols=True)
    while step < cfg.steps:
        for g in opt.param_groups:
            g["lr"] = lr_at(step, cfg)
        obs_cond, actions = batcher.batch(rng, cfg.batch_size)
        loss = diffusion_loss(model, actions, obs_cond, alphas_cumprod, gen)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip_norm:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip_norm)
        opt.step()
        ema_update(ema, model, ema_decay_at(step, cfg))
        step += 1
        running.append(loss.item())
        if step % cfg.log_every == 0 or step == cfg.steps:
            history.append((step, float(np.mean(running))))
            running = []
            bar.set_postfix(loss=f"{history[-1][1]:.4f}", lr=f"{lr_at(step - 1, cfg):.1e}")
        bar.update(1)
        if step % cfg.checkpoint_every == 0 and step < cfg.steps:
            save_checkpoint_atomic(ckpt_path, payload())
            if time.perf_counter() - last_plot > 60.0:   # plotting costs ~0.5 s: keep it rare
                plot_curve(history, out_dir / CURVE_NAME)
                last_plot = time.perf_counter()
    bar.close()
    elapsed = time.perf_counter() - t0
    final = payload()
    final["train_seconds"] = elapsed
    final["steps_per_second"] = (step - start_step) / elapsed if elapsed > 0 and step > start_step else None
    save_checkpoint_atomic(ckpt_path, final)
    plot_curve(history, out_dir / CURVE_NAME)
    tmp = out_dir / "train_log.csv.tmp"
    with tmp.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["step", "loss"])
        w.writerows(history)
    os.replace(tmp, out_dir / "train_log.csv")
    return final


# ---- dataset adapter -----------------------------------------------------------------------------
def is_velocity(spec: dict) -> bool:
    units = str(spec.get("units", ""))
    return units.endswith("/s") or spec["name"].endswith("_vel")


def default_obs_keys(obs_spec: list[dict]) -> list[str]:
    """All 1-D observations except velocities. Velocities are left out by default: demonstrations
    from a scripted expert make them a near-copy of the previous action, which invites the
    "copycat" shortcut in behaviour cloning, and positions over a 2-frame history carry the same
    motion information (diffusion_policy's low-dim tasks also use positions only)."""
    return [k["name"] for k in obs_spec if len(k["shape"]) == 1 and not is_velocity(k)]


def data_from_dataset(ds, obs_keys: list[str] | None, *, source: str = "<dataset>") -> TrainData:
    """Pick observation columns from a ``policies.dataset`` dataset (LeRobot v3 layout)."""
    spec = list(ds.obs_spec)
    by_name = {k["name"]: k for k in spec}
    keys = list(obs_keys) if obs_keys else default_obs_keys(spec)
    for k in keys:
        if k not in by_name:
            raise OnboardError(f"unknown observation key '{k}'", file=source, field="--obs-keys",
                               fix=f"use keys from the dataset's obs_spec: "
                                   f"{[s['name'] for s in spec if len(s['shape']) == 1]}")
        if len(by_name[k]["shape"]) != 1:
            raise OnboardError(f"observation '{k}' has shape {by_name[k]['shape']}; the diffusion policy "
                               "takes 1-D (low-dim) observations", file=source, field="--obs-keys",
                               fix="pick 1-D keys")
    if not keys:
        raise OnboardError("no 1-D observation keys to train on", file=source, field="obs_spec",
                           fix="collect a low-dim dataset")
    obs = {k: np.asarray(ds.column(f"observation.{k}"), dtype=np.float32).reshape(-1, int(np.prod(by_name[k]["shape"])))
           for k in keys}
    actions = np.asarray(ds.column("action"), dtype=np.float32)
    info = dict(getattr(ds, "info", {}) or {})
    action_names = (info.get("features", {}).get("action", {}).get("names") or [])
    if isinstance(action_names, dict):
        action_names = next(iter(action_names.values()), [])
    robot = str(info.get("robot_type", ""))
    if len(action_names) != actions.shape[1] and robot:
        from onboard.spec.robot import load_robot
        action_names = list(load_robot(robot).action_names)
    if len(action_names) != actions.shape[1]:
        action_names = [f"a{i}" for i in range(actions.shape[1])]
    meta = {"dataset": str(getattr(ds, "root", source)),
            "total_episodes": info.get("total_episodes"), "total_frames": info.get("total_frames")}
    tasks = [str(t) for t in (getattr(ds, "tasks", None) or [])]
    if tasks:
        meta["tasks"] = tasks
        meta["task"] = tasks[0] if len(tasks) == 1 else tasks
    for key in ("task", "dr", "randomization", "dr_ranges", "calibration", "onboard"):
        if key in info:
            meta[key] = info[key]
    return TrainData(obs=obs, actions=actions, episode_index=np.asarray(ds.episode_index),
                     obs_spec=[{"name": k, "shape": list(by_name[k]["shape"]), "units": by_name[k].get("units", "")}
                               for k in keys],
                     action_names=list(action_names), robot=robot,
                     control_rate_hz=float(info.get("fps", 10.0)), meta=meta)
