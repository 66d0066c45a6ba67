"""VLA behaviour cloning with flow matching, in one file: config, data, loop, checkpoints.

Reads a LeRobot v3 dataset (``policies.dataset.load_dataset``) whose frames
carry an instruction as their task (``task_index`` -> ``meta/tasks.parquet``)
and camera videos ``observation.images.<cam>``. The mp4s are decoded once
into uint8 arrays in memory. A training sample is one observation (images of
every camera, normalized state, the instruction's token ids) and the next
``pred_horizon`` actions (windows as in ``policies.diffusion.train``: clamped
at episode ends). Augmentation: random-shift crops of each image (DrQ style,
pad by replication and crop back) and word dropout (a word becomes ``<unk>``
with a small probability, so unseen paraphrase words degrade gracefully).

The tokenizer is built from the instruction corpus: the dataset's
``info.json`` ``onboard.instruction_corpus`` when the collector recorded it,
else the dataset's tasks. State and actions are min-max normalized to [-1, 1];
the stats travel in the checkpoint and then in the contract.

Training length is steps or minutes, whichever ends first (``--minutes``):
the learning rate follows a cosine over that budget, so a time-boxed run
still anneals. An EMA copy of the weights is what export uses. The
checkpoint is written atomically every ``checkpoint_every_s`` seconds and at
the end.

Imports torch (training only). Never imports a task or a simulator.
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
from policies.checkpoint import checkpoint_kind, read_checkpoint, save_checkpoint_atomic
from policies.diffusion.train import (ema_update, pick_num_threads, plot_curve,
                                      sequence_windows, window_frame_indices)
from policies.vla.model import VLAConfig, VLAPolicy, parameter_counts
from policies.vla.tokenizer import BOS_ID, EOS_ID, PAD_ID, UNK_ID, WordTokenizer

CHECKPOINT_NAME = "checkpoint.pt"
CURVE_NAME = "training_curve.png"
DEFAULT_STATE_KEYS = ("joint_pos", "gripper_width", "ee_pos")


@dataclass
class VLATrainConfig:
    # chunking
    pred_horizon: int = 16
    action_horizon: int = 8
    # model
    d_model: int = 128
    n_heads: int = 4
    text_layers: int = 2
    fusion_layers: int = 3
    cnn_channels: tuple[int, ...] = (32, 64, 128, 128)
    cnn_refine: bool = True
    lang_film: bool = True
    token_pool: int = 1
    n_readout: int = 4
    head_down_dims: tuple[int, ...] = (32, 64, 128)
    pretrained_text_encoder: str | None = None
    pretrained_text_dim: int = 0
    # data
    state_keys: tuple[str, ...] = DEFAULT_STATE_KEYS
    shift_pad: int = 4                   # random-shift augmentation, pixels
    word_dropout: float = 0.1
    aux_weight: float = 0.5              # grounding loss (lane x task of the named cube); 0 turns it off
    aux_pos_weight: float = 1.0          # localisation loss (named cube + goal positions); 0 turns it off
    # optimisation
    steps: int = 100_000
    minutes: float | None = None         # time budget; the schedule anneals over min(steps, minutes)
    batch_size: int = 64
    samples_per_obs: int = 4             # (t, noise) draws per encoded observation
    lr: float = 5e-4
    weight_decay: float = 1e-4
    warmup_steps: int = 200
    ema_max_decay: float = 0.999
    grad_clip_norm: float = 1.0
    # bookkeeping
    seed: int = 0
    checkpoint_every_s: float = 300.0
    log_every: int = 10
    num_threads: int | None = None


def tiny_config(**overrides) -> VLATrainConfig:
    """A few-second model for tests and smoke runs (same code paths as the demo configuration)."""
    cfg = VLATrainConfig(d_model=32, n_heads=2, text_layers=1, fusion_layers=1, cnn_channels=(8, 16, 16),
                         token_pool=2, n_readout=2, head_down_dims=(16, 32), steps=4, batch_size=8,
                         samples_per_obs=2, warmup_steps=2, log_every=1, minutes=None)
    for k, v in overrides.items():
        setattr(cfg, k, v)
    return cfg


@dataclass
class VLAData:
    images: dict[str, np.ndarray]        # camera -> (N, H, W, 3) uint8
    state: dict[str, np.ndarray]         # key -> (N, d) float32
    state_spec: list[dict]               # [{"name", "shape", "units"}] in concatenation order
    actions: np.ndarray                  # (N, Da)
    episode_index: np.ndarray            # (N,)
    task_index: np.ndarray               # (N,) into ``tasks``
    tasks: list[str]                     # instruction per task index
    corpus: list[str]                    # instructions the tokenizer is built from
    action_names: list[str]
    robot: str = ""
    control_rate_hz: float = 10.0
    meta: dict = field(default_factory=dict)
    aux_label: np.ndarray | None = None  # (N,) grounding label per frame (lane x task), -1 unknown; None: no aux
    aux_pos: np.ndarray | None = None    # (N, 6) named cube + goal positions per frame (privileged.*); None: none

    @property
    def cameras(self) -> list[str]:
        return list(self.images)


# ---- data ----------------------------------------------------------------------------------------
def data_from_dataset(ds, *, state_keys=DEFAULT_STATE_KEYS, cameras: list[str] | None = None,
                      source: str = "<dataset>") -> VLAData:
    """Pick the VLA's inputs from a ``policies.dataset`` dataset (decodes the videos once)."""
    feats = ds.features
    by_name = {k["name"]: k for k in ds.obs_spec}
    for k in state_keys:
        if k not in by_name:
            raise OnboardError(f"state key '{k}' is not in the dataset", file=source, field="state_keys",
                               fix=f"use keys from {sorted(by_name)}")
    video = [k[len("observation.images."):] for k, f in feats.items()
             if k.startswith("observation.images.") and f.get("dtype") == "video"]
    cams = list(cameras) if cameras else video
    if not cams:
        raise OnboardError("the dataset has no camera videos (observation.images.*)", file=source,
                           field="features", fix="collect with cameras, e.g. `onboard collect --task lang`")
    missing = [c for c in cams if c not in video]
    if missing:
        raise OnboardError(f"cameras {missing} are not in the dataset (it has {video})", file=source,
                           field="cameras", fix="pick cameras the dataset recorded")
    if "task_index" not in ds.columns or not ds.tasks:
        raise OnboardError("frames carry no task (instruction)", file=source, field="task_index",
                           fix="collect with `onboard collect --task lang` (one instruction per episode)")
    images = {c: ds.column(f"observation.images.{c}") for c in cams}
    n = ds.num_frames
    for c, arr in images.items():
        if len(arr) != n:
            raise OnboardError(f"camera '{c}' decodes to {len(arr)} frames for {n} rows", file=source,
                               field=f"observation.images.{c}", fix="re-collect the dataset")
    state = {k: np.asarray(ds.column(f"observation.{k}"), np.float32).reshape(n, -1) for k in state_keys}
    info = dict(ds.info or {})
    onboard_info = info.get("onboard") if isinstance(info.get("onboard"), dict) else {}
    tasks = [str(t) for t in ds.tasks]
    corpus = [str(t) for t in (onboard_info.get("instruction_corpus") or [])] or tasks
    action_names = feats.get("action", {}).get("names") or []
    robot = str(info.get("robot_type", ""))
    actions = np.asarray(ds.column("action"), np.float32)
    if len(action_names) != actions.shape[1] and robot:
        from onboard.spec.robot import load_robot
        action_names = list(load_robot(robot).action_names)
    aux_label = grounding_labels(ds)
    aux_pos = None
    if all(k in ds.columns for k in PRIVILEGED_POS_KEYS):
        aux_pos = np.concatenate([np.asarray(ds.column(k), np.float32).reshape(n, -1) for k in PRIVILEGED_POS_KEYS],
                                 axis=1)
    meta = {"dataset": str(getattr(ds, "root", source)), "total_episodes": info.get("total_episodes"),
            "total_frames": info.get("total_frames"), "task": "lang", "instructions": len(tasks)}
    for key in ("dr", "randomization", "dr_ranges", "calibration", "onboard"):
        if key in info:
            meta[key] = info[key]
    return VLAData(images=images, state=state,
                   state_spec=[{"name": k, "shape": list(by_name[k]["shape"]), "units": by_name[k].get("units", "")}
                               for k in state_keys],
                   actions=actions, episode_index=np.asarray(ds.episode_index),
                   task_index=np.asarray(ds.column("task_index")).reshape(-1).astype(np.int64),
                   tasks=tasks, corpus=corpus, action_names=list(action_names), robot=robot,
                   control_rate_hz=float(info.get("fps", 10.0)), meta=meta, aux_label=aux_label, aux_pos=aux_pos)


GROUNDING_TASKS = ("push", "pick_place")
# Simulator-only columns written by `onboard collect --task lang` (labels for the localisation loss)
PRIVILEGED_POS_KEYS = ("privileged.target_cube_pos", "privileged.goal_pos")


def grounding_labels(ds) -> np.ndarray | None:
    """Per-frame label ``lane * 2 + task`` from the episodes' ``slot`` and ``lang_task`` (written by
    ``onboard collect --task lang``); None when the dataset does not record them."""
    eps = ds.episodes
    if not eps or not all(isinstance(e.get("slot"), str) and e.get("lang_task") in GROUNDING_TASKS for e in eps):
        return None
    slots = sorted({e["slot"] for e in eps})
    by_episode = {int(e["episode_index"]): slots.index(e["slot"]) * len(GROUNDING_TASKS)
                  + GROUNDING_TASKS.index(e["lang_task"]) for e in eps}
    return np.array([by_episode.get(int(i), -1) for i in ds.episode_index], dtype=np.int64)


def normalization_stats(data: VLAData) -> dict:
    return {"state": {k: stats_from_array(v) for k, v in data.state.items()},
            "action": stats_from_array(data.actions)}


def state_vector(state: dict[str, np.ndarray], spec: list[dict], norm: dict) -> np.ndarray:
    """Normalized, concatenated state in ``spec`` order: (N, S) float32."""
    return np.concatenate([normalize(state[k["name"]], norm[k["name"]]) for k in spec], axis=-1).astype(np.float32)


def random_shift(images: torch.Tensor, pad: int, generator: torch.Generator) -> torch.Tensor:
    """(B, H, W, 3) uint8: pad by edge replication, crop back at a random offset per sample."""
    if pad <= 0:
        return images
    b, h, w, _ = images.shape
    x = torch.nn.functional.pad(images.permute(0, 3, 1, 2).float(), (pad, pad, pad, pad), mode="replicate")
    x = x.to(torch.uint8).permute(0, 2, 3, 1)
    oy = torch.randint(0, 2 * pad + 1, (b,), generator=generator)
    ox = torch.randint(0, 2 * pad + 1, (b,), generator=generator)
    rows = (oy[:, None] + torch.arange(h)[None, :])[:, :, None]
    cols = (ox[:, None] + torch.arange(w)[None, :])[:, None, :]
    return x[torch.arange(b)[:, None, None], rows, cols]


class VLABatcher:
    def __init__(self, data: VLAData, cfg: VLATrainConfig, norm: dict, tokenizer: WordTokenizer, max_len: int):
        self.cfg = cfg
        self.images = {c: torch.from_numpy(np.ascontiguousarray(v)) for c, v in data.images.items()}
        self.state = torch.from_numpy(state_vector(data.state, data.state_spec, norm["state"]))
        self.actions = torch.from_numpy(normalize(data.actions, norm["action"]).astype(np.float32))
        ids = np.stack([tokenizer.encode(t, max_len)[0] for t in data.tasks])
        self.task_ids = torch.from_numpy(ids)
        self.task_index = torch.from_numpy(data.task_index)
        self.aux_label = (torch.from_numpy(data.aux_label) if data.aux_label is not None
                          else torch.full((len(data.actions),), -1, dtype=torch.int64))
        self.aux_pos = None
        if data.aux_pos is not None:           # standardized per axis (training only; never exported)
            mu, sd = data.aux_pos.mean(0), data.aux_pos.std(0)
            self.aux_pos = torch.from_numpy(((data.aux_pos - mu) / np.maximum(sd, 1e-3)).astype(np.float32))
        self.windows = sequence_windows(data.episode_index, cfg.pred_horizon, 1, cfg.action_horizon)
        if len(self.windows) == 0:
            raise OnboardError("no training windows: the dataset has no frames", field="episode_index",
                               fix="collect demonstrations first (`onboard collect --task lang`)")

    def batch(self, rng: np.random.Generator, gen: torch.Generator, batch_size: int, *, augment: bool = True):
        pick = self.windows[rng.integers(0, len(self.windows), size=batch_size)]
        idx = torch.from_numpy(window_frame_indices(pick, self.cfg.pred_horizon))
        frame = idx[:, 0]
        ids = self.task_ids[self.task_index[frame]].clone()
        if augment and self.cfg.word_dropout > 0:
            word = (ids != PAD_ID) & (ids != BOS_ID) & (ids != EOS_ID)
            drop = torch.rand(ids.shape, generator=gen) < self.cfg.word_dropout
            ids[word & drop] = UNK_ID
        images = [self.images[c][frame] for c in self.images]
        if augment:
            images = [random_shift(im, self.cfg.shift_pad, gen) for im in images]
        self.last_aux_label = self.aux_label[frame]
        self.last_aux_pos = self.aux_pos[frame] if self.aux_pos is not None else None
        return ids, ids != PAD_ID, images, self.state[frame], self.actions[idx]


def validate_data(data: VLAData, cfg: VLATrainConfig) -> None:
    n = len(data.actions)
    if data.actions.ndim != 2 or n == 0:
        raise OnboardError(f"actions must be a non-empty (N, action_dim) array, got {data.actions.shape}",
                           field="action", fix="check the dataset's action column")
    for name, arr in [("episode_index", data.episode_index), ("task_index", data.task_index),
                      *[(f"observation.{k}", v) for k, v in data.state.items()],
                      *[(f"observation.images.{c}", v) for c, v in data.images.items()]]:
        if len(arr) != n:
            raise OnboardError(f"{name} has {len(arr)} rows for {n} actions", field=name, fix="check the dataset")
    if not all(np.all(np.isfinite(v)) for v in [data.actions, *data.state.values()]):
        raise OnboardError("state or actions have non-finite values", field="observation",
                           fix="drop or repair those episodes")
    if data.aux_pos is not None and (data.aux_pos.shape[0] != n or not np.all(np.isfinite(data.aux_pos))):
        raise OnboardError(f"privileged positions: {data.aux_pos.shape[0]} rows for {n} actions, or non-finite",
                           field=PRIVILEGED_POS_KEYS[0], fix="re-collect the dataset (`onboard collect --task lang`)")
    if data.task_index.min() < 0 or data.task_index.max() >= len(data.tasks):
        raise OnboardError("task_index points outside meta/tasks.parquet", field="task_index",
                           fix="re-collect the dataset")
    if not 1 <= cfg.action_horizon <= cfg.pred_horizon:
        raise OnboardError(f"need 1 <= action_horizon ({cfg.action_horizon}) <= pred_horizon ({cfg.pred_horizon})",
                           field="action_horizon", fix="pick consistent horizons")


def model_config(cfg: VLATrainConfig, data: VLAData, tokenizer: WordTokenizer, max_len: int) -> VLAConfig:
    h, w = data.images[data.cameras[0]].shape[1:3]
    return VLAConfig(vocab_size=tokenizer.vocab_size, max_len=max_len,
                     state_dim=sum(int(np.prod(k["shape"])) for k in data.state_spec),
                     action_dim=data.actions.shape[1], cameras=tuple(data.cameras), image_size=(int(h), int(w)),
                     pred_horizon=cfg.pred_horizon, d_model=cfg.d_model, n_heads=cfg.n_heads,
                     text_layers=cfg.text_layers, fusion_layers=cfg.fusion_layers,
                     cnn_channels=tuple(cfg.cnn_channels), cnn_refine=cfg.cnn_refine, lang_film=cfg.lang_film, token_pool=cfg.token_pool,
                     n_readout=cfg.n_readout,
                     head_down_dims=tuple(cfg.head_down_dims),
                     pretrained_text_encoder=cfg.pretrained_text_encoder,
                     pretrained_text_dim=cfg.pretrained_text_dim,
                     aux_classes=(int(data.aux_label.max()) + 1 if cfg.aux_weight > 0 and data.aux_label is not None
                                  and data.aux_label.max() >= 0 else 0),
                     aux_pos_dim=(data.aux_pos.shape[1] if cfg.aux_pos_weight > 0 and data.aux_pos is not None else 0))


def lr_factor(progress: float, step: int, cfg: VLATrainConfig) -> float:
    """Linear warmup over ``warmup_steps``, then cosine to 0 at progress 1 (steps or minutes)."""
    if step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


# ---- checkpoints ---------------------------------------------------------------------------------
def load_checkpoint(path: str | Path) -> dict:
    return read_checkpoint(path, kind="vla", what="VLA", command="onboard train --policy vla")


def is_vla_checkpoint(path: str | Path) -> bool:
    return checkpoint_kind(path) == "vla"


def model_from_checkpoint(ckpt: dict, *, ema: bool = True) -> VLAPolicy:
    cfg = dict(ckpt["model_config"])
    for k in ("cameras", "image_size", "cnn_channels", "head_down_dims"):
        cfg[k] = tuple(cfg[k])
    model = VLAPolicy(VLAConfig(**cfg))
    model.load_state_dict(ckpt["ema_state" if ema else "model_state"])
    return model.eval()


# ---- the loop ------------------------------------------------------------------------------------
def train(cfg: VLATrainConfig, data: VLAData, out_dir: str | Path, *, resume: bool = False,
          progress: bool = True) -> dict:
    """Train (or resume) and return the final checkpoint payload (also written to ``out_dir``)."""
    from tqdm import tqdm

    cfg.num_threads = pick_num_threads(cfg.num_threads)
    torch.set_num_threads(cfg.num_threads)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    ckpt_path = out_dir / CHECKPOINT_NAME
    validate_data(data, cfg)
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)

    tokenizer = WordTokenizer.build(data.corpus + data.tasks)
    max_len = tokenizer.max_words(data.corpus + data.tasks) + 2 + 4   # room for longer paraphrases
    norm = normalization_stats(data)
    step, history, elapsed_before = 0, [], 0.0
    prior = None
    if resume:
        if not ckpt_path.is_file():
            raise OnboardError("--resume given but there is no checkpoint to resume", file=str(ckpt_path),
                               fix="drop --resume to start fresh, or pass the --out folder of the earlier run")
        prior = load_checkpoint(ckpt_path)
        tokenizer = WordTokenizer.from_dict(prior["tokenizer"], source=str(ckpt_path))
        max_len, norm = int(prior["model_config"]["max_len"]), prior["normalization"]
        step, history = int(prior["step"]), list(prior["loss_history"])
        elapsed_before = float(prior.get("train_seconds", 0.0))
    mcfg = model_config(cfg, data, tokenizer, max_len)
    model = VLAPolicy(mcfg)
    ema = VLAPolicy(mcfg)
    ema.load_state_dict(model.state_dict())
    ema.requires_grad_(False)
    trainable = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(trainable, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if prior is not None:
        model.load_state_dict(prior["model_state"])
        ema.load_state_dict(prior["ema_state"])
        opt.load_state_dict(prior["optimizer_state"])
        rng.bit_generator.state = prior["rng"]["numpy"]
        gen.set_state(prior["rng"]["torch_generator"])
    batcher = VLABatcher(data, cfg, norm, tokenizer, max_len)
    counts = parameter_counts(model)
    budget_s = cfg.minutes * 60.0 if cfg.minutes else None

    t0 = time.perf_counter()

    def elapsed() -> float:
        return elapsed_before + time.perf_counter() - t0

    def progress_now() -> float:
        p = step / max(1, cfg.steps)
        return max(p, elapsed() / budget_s) if budget_s else p

    def payload() -> dict:
        return {"kind": "vla", "step": step, "config": asdict(cfg), "model_config": asdict(mcfg),
                "model_state": model.state_dict(), "ema_state": ema.state_dict(),
                "optimizer_state": opt.state_dict(), "normalization": norm, "tokenizer": tokenizer.to_dict(),
                "state_spec": data.state_spec, "cameras": data.cameras, "action_names": list(data.action_names),
                "robot": data.robot, "control_rate_hz": float(data.control_rate_hz), "meta": data.meta,
                "loss_history": history, "num_parameters": counts, "train_seconds": elapsed(),
                "rng": {"numpy": rng.bit_generator.state, "torch_generator": gen.get_state()}}

    model.train()
    start_step, running, last_ckpt, last_plot = step, [], time.perf_counter(), time.perf_counter()
    total = cfg.steps if not budget_s else None
    bar = tqdm(total=total, initial=step, desc="train vla", unit="step", disable=not progress, dynamic_ncols=True)
    while step < cfg.steps and progress_now() < 1.0:
        f = lr_factor(progress_now(), step, cfg)
        for g in opt.param_groups:
            g["lr"] = cfg.lr * f
        ids, mask, images, state, actions = batcher.batch(rng, gen, cfg.batch_size)
        context = model.context(ids, mask, images, state)
        loss = model.flow_loss(actions, context, gen, cfg.samples_per_obs)
        label = batcher.last_aux_label
        if model.aux is not None and bool((label >= 0).any()):
            keep = label >= 0
            loss = loss + cfg.aux_weight * F.cross_entropy(model.aux(context[keep]), label[keep])
        if model.aux_pos is not None and batcher.last_aux_pos is not None:
            loss = loss + cfg.aux_pos_weight * F.mse_loss(model.aux_pos(context), batcher.last_aux_pos)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip_norm:
            torch.nn.utils.clip_grad_norm_(trainable, cfg.grad_clip_norm)
        opt.step()
        ema_update(ema, model, min(cfg.ema_max_decay, (1.0 + step) / (10.0 + step)))
        step += 1
        running.append(loss.item())
        if step % cfg.log_every == 0:
            history.append((step, float(np.mean(running))))
            running = []
            bar.set_postfix(loss=f"{history[-1][1]:.4f}", lr=f"{cfg.lr * f:.1e}",
                            min=f"{elapsed() / 60:.1f}")
        bar.update(1)
        if time.perf_counter() - last_ckpt > cfg.checkpoint_every_s:
            save_checkpoint_atomic(ckpt_path, payload())
            last_ckpt = time.perf_counter()
            if time.perf_counter() - last_plot > 300.0:
                plot_curve(history, out_dir / CURVE_NAME)
                last_plot = time.perf_counter()
    bar.close()
    if running:
        history.append((step, float(np.mean(running))))
    final = payload()
    run_s = time.perf_counter() - t0
    final["steps_per_second"] = (step - start_step) / run_s if run_s > 0 and step > start_step else None
    save_checkpoint_atomic(ckpt_path, final)
    plot_curve(history, out_dir / CURVE_NAME)
    tmp = out_dir / "train_log.csv.tmp"
    with tmp.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["step", "loss"])
        w.writerows(history)
    os.replace(tmp, out_dir / "train_log.csv")
    return final
