"""PPO for the quadrotor (CleanRL-style, one file): residual over the geometric controller, or from scratch.

Reads top to bottom: ``PPOConfig`` (all hyperparameters), the networks
(``ActorCritic``), the rollout storage (``Rollout`` + GAE), the update
(``ppo_update``), the loop (``train``) and the evaluation (``evaluate``).
The env is ``sim.quad_env.QuadVecEnv`` (a batched loop over N drones in one
MuJoCo world); observations are standardized with running statistics that
are frozen into the checkpoint, and from there into the artifact contract.

Action modes (the Gaussian sample ``u`` is what PPO scores; the squashing is
a fixed part of the action map, so ratios stay exact):
- ``residual``: ``a = clip(a_base + residual_scale * tanh(u), -1, 1)``, with
  ``a_base`` the ``GeometricController`` action on the same observation.
  ``residual_scale`` (<= 0.5) bounds how far the policy can move the baseline.
- ``scratch``: ``a = tanh(u)``; the mean starts at the hover action.
At evaluation and export, ``u`` is the mean (deterministic).

Imports torch, numpy and sim (the task env and baseline controller, which
the trainer drives). Never imported by the runtime.
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from onboard.errors import OnboardError
from sim.quad_controllers import GeometricController
from sim.quad_env import QuadVecEnv, split_obs

MAX_RESIDUAL_SCALE = 0.5


@dataclass
class PPOConfig:
    task: str = "track"
    trajectory: str = "figure8"
    mode: str = "residual"               # residual | scratch
    residual_scale: float = 0.25         # bound on |a - a_base| per normalized action axis
    dr: bool = True
    num_envs: int = 64
    num_steps: int = 64                  # rollout length per env per update
    total_steps: int = 1_000_000
    learning_rate: float = 3e-4
    anneal_lr: bool = True
    gamma: float = 0.99
    gae_lambda: float = 0.95
    update_epochs: int = 5
    num_minibatches: int = 4
    clip_coef: float = 0.2
    ent_coef: float = 0.0
    vf_coef: float = 0.5
    max_grad_norm: float = 0.5
    hidden: tuple = (128, 128)
    init_log_std: float = -1.0
    seed: int = 0
    torch_threads: int = 2
    log_every: int = 10                  # updates
    max_wall_s: float = 0.0              # > 0: stop (and keep the model) after this much training time

    def validate(self) -> None:
        if self.mode not in ("residual", "scratch"):
            raise OnboardError(f"unknown PPO mode {self.mode!r}", field="mode", fix="use residual or scratch")
        if not 0 < self.residual_scale <= MAX_RESIDUAL_SCALE:
            raise OnboardError(f"residual_scale {self.residual_scale} outside (0, {MAX_RESIDUAL_SCALE}]",
                               field="residual_scale", fix="keep the residual bounded")
        if (self.num_envs * self.num_steps) % self.num_minibatches:
            raise OnboardError("num_envs * num_steps must divide into num_minibatches", field="num_minibatches",
                               fix="pick a divisor of num_envs * num_steps")


# ---------------------------------------------------------------- networks
def mlp(sizes, out_gain=1.0) -> nn.Sequential:
    layers = []
    for i in range(len(sizes) - 1):
        lin = nn.Linear(sizes[i], sizes[i + 1])
        last = i == len(sizes) - 2
        nn.init.orthogonal_(lin.weight, out_gain if last else math.sqrt(2))
        nn.init.zeros_(lin.bias)
        layers += [lin] if last else [lin, nn.Tanh()]
    return nn.Sequential(*layers)


class ActorCritic(nn.Module):
    """Separate actor and critic MLPs on the standardized observation; state-independent log std."""

    def __init__(self, obs_dim: int, act_dim: int, hidden=(128, 128), init_log_std=-1.0, mean_bias=None):
        super().__init__()
        self.actor = mlp([obs_dim, *hidden, act_dim], out_gain=0.01)
        self.critic = mlp([obs_dim, *hidden, 1], out_gain=1.0)
        self.log_std = nn.Parameter(torch.full((act_dim,), float(init_log_std)))
        if mean_bias is not None:
            with torch.no_grad():
                self.actor[-1].bias.copy_(torch.as_tensor(mean_bias, dtype=torch.float32))

    def dist(self, obs_n: torch.Tensor) -> torch.distributions.Normal:
        return torch.distributions.Normal(self.actor(obs_n), self.log_std.exp())

    def value(self, obs_n: torch.Tensor) -> torch.Tensor:
        return self.critic(obs_n).squeeze(-1)


class RunningMeanStd:
    """Observation statistics (parallel-variance update); frozen at export."""

    def __init__(self, dim: int):
        self.mean, self.var, self.count = np.zeros(dim), np.ones(dim), 1e-4

    def update(self, x: np.ndarray) -> None:
        m, v, n = x.mean(0), x.var(0), len(x)
        d, tot = m - self.mean, self.count + n
        self.mean = self.mean + d * n / tot
        self.var = (self.var * self.count + v * n + d**2 * self.count * n / tot) / tot
        self.count = tot

    @property
    def std(self) -> np.ndarray:
        return np.sqrt(self.var) + 1e-6

    def normalize(self, x: np.ndarray) -> np.ndarray:
        return np.clip((x - self.mean) / self.std, -10, 10).astype(np.float32)


# ---------------------------------------------------------------- action map
def squash(u: np.ndarray, base: np.ndarray | None, cfg: PPOConfig) -> np.ndarray:
    """Gaussian sample / mean -> normalized env action in [-1, 1]."""
    if cfg.mode == "residual":
        return np.clip(base + cfg.residual_scale * np.tanh(u), -1.0, 1.0)
    return np.tanh(u)


# ---------------------------------------------------------------- rollout storage
class Rollout:
    def __init__(self, t: int, n: int, obs_dim: int, act_dim: int):
        self.obs = np.zeros((t, n, obs_dim), np.float32)        # standardized
        self.u = np.zeros((t, n, act_dim), np.float32)
        self.logp = np.zeros((t, n), np.float32)
        self.rew = np.zeros((t, n), np.float32)
        self.done = np.zeros((t, n), np.float32)                # episode ended after this step
        self.val = np.zeros((t, n), np.float32)

    def advantages(self, last_val: np.ndarray, gamma: float, lam: float):
        t_max = len(self.rew)
        adv = np.zeros_like(self.rew)
        last = 0.0
        for t in reversed(range(t_max)):
            nxt = last_val if t == t_max - 1 else self.val[t + 1]
            nonterm = 1.0 - self.done[t]
            delta = self.rew[t] + gamma * nxt * nonterm - self.val[t]
            last = delta + gamma * lam * nonterm * last
            adv[t] = last
        return adv, adv + self.val


# ---------------------------------------------------------------- algorithm
IS_WEIGHT_MAX = 2.0      # truncation of the behaviour -> proximal importance weight (decoupled PPO)


def ppo_update(ac: ActorCritic, opt, ro: Rollout, adv: np.ndarray, ret: np.ndarray, cfg: PPOConfig,
               rng: np.random.Generator, aux: torch.Tensor | None = None,
               logp_prox: torch.Tensor | None = None) -> dict:
    """``aux``: per-sample inputs the policy takes beside the observation and that stay fixed during the
    update (rows as ``ro.obs`` flattened); each minibatch's rows go to ``ac.dist(obs, aux)``.

    ``logp_prox``: log-probabilities of the rollout's actions under the weights the update starts from,
    when those are not the weights that acted (``ro.logp``, e.g. one update older). Then the ratio is
    clipped around these proximal weights and each sample is weighted by pi_prox / pi_behaviour
    (truncated at IS_WEIGHT_MAX): the decoupled objective of Hilton et al. 2022, so that stale data
    neither starts the update outside the clip range nor counts as if on-policy."""
    obs = torch.as_tensor(ro.obs.reshape(-1, ro.obs.shape[-1]))
    u = torch.as_tensor(ro.u.reshape(-1, ro.u.shape[-1]))
    logp_old = torch.as_tensor(ro.logp.reshape(-1))
    weight = None
    if logp_prox is not None:
        weight = (logp_prox - logp_old).exp().clamp(max=IS_WEIGHT_MAX)
        logp_old = logp_prox
    adv_t, ret_t = torch.as_tensor(adv.reshape(-1)), torch.as_tensor(ret.reshape(-1))
    n = len(obs)
    mb = n // cfg.num_minibatches
    stats = {}
    for _ in range(cfg.update_epochs):
        perm = rng.permutation(n)
        for s in range(0, n, mb):
            i = torch.as_tensor(perm[s:s + mb])
            d = ac.dist(obs[i]) if aux is None else ac.dist(obs[i], aux[i])
            logp = d.log_prob(u[i]).sum(-1)
            ratio = (logp - logp_old[i]).exp()
            a = adv_t[i]
            a = (a - a.mean()) / (a.std() + 1e-8)
            pg = torch.max(-a * ratio, -a * ratio.clamp(1 - cfg.clip_coef, 1 + cfg.clip_coef))
            pg = pg.mean() if weight is None else (weight[i] * pg).mean()
            v_loss = 0.5 * ((ac.value(obs[i]) - ret_t[i]) ** 2).mean()
            ent = d.entropy().sum(-1).mean()
            loss = pg + cfg.vf_coef * v_loss - cfg.ent_coef * ent
            opt.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(ac.parameters(), cfg.max_grad_norm)
            opt.step()
            stats = {"pg_loss": pg.item(), "v_loss": v_loss.item(), "entropy": ent.item(),
                     "clip_frac": ((ratio - 1).abs() > cfg.clip_coef).float().mean().item()}
    return stats


# ---------------------------------------------------------------- loop
@dataclass
class TrainResult:
    model: ActorCritic
    obs_rms: RunningMeanStd
    config: PPOConfig
    history: list = field(default_factory=list)
    wall_s: float = 0.0
    env_steps: int = 0
    env_meta: dict = field(default_factory=dict)


def train(cfg: PPOConfig, log=print) -> TrainResult:
    cfg.validate()
    torch.set_num_threads(cfg.torch_threads)
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    env = QuadVecEnv(cfg.num_envs, task=cfg.task, trajectory=cfg.trajectory, dr=cfg.dr, seed=cfg.seed)
    base_ctl = GeometricController.for_env(env)
    mean_bias = None if cfg.mode == "residual" else np.arctanh(np.clip(env.hover_action, -0.99, 0.99))
    ac = ActorCritic(env.obs_dim, env.action_dim, cfg.hidden, cfg.init_log_std, mean_bias)
    opt = torch.optim.Adam(ac.parameters(), lr=cfg.learning_rate, eps=1e-5)
    rms = RunningMeanStd(env.obs_dim)
    ro = Rollout(cfg.num_steps, cfg.num_envs, env.obs_dim, env.action_dim)
    n_updates = max(1, cfg.total_steps // (cfg.num_envs * cfg.num_steps))
    obs, _ = env.reset(seed=cfg.seed)
    res = TrainResult(ac, rms, cfg, env_meta={
        "max_thrust_n": env.max_thrust_n, "obs_spec": env.obs_spec, "action_spec": env.action_spec,
        "dr_ranges": env.randomizer.ranges() if hasattr(env.randomizer, "ranges") else None})
    ep_ret, ep_rmse, ep_crash = [], [], []
    t0 = time.perf_counter()
    for upd in range(n_updates):
        if cfg.anneal_lr:
            opt.param_groups[0]["lr"] = cfg.learning_rate * (1 - upd / n_updates)
        for t in range(cfg.num_steps):
            rms.update(obs)
            obs_n = rms.normalize(obs)
            with torch.no_grad():
                ot = torch.as_tensor(obs_n)
                d = ac.dist(ot)
                u = d.sample()
                ro.logp[t] = d.log_prob(u).sum(-1).numpy()
                ro.val[t] = ac.value(ot).numpy()
            base = base_ctl.act(split_obs(obs)) if cfg.mode == "residual" else None
            ro.obs[t], ro.u[t] = obs_n, u.numpy()
            obs, rew, term, trunc, info = env.step(squash(u.numpy(), base, cfg))
            rew = rew.copy()
            if "done_idx" in info:
                idx = info["done_idx"]
                base_ctl.reset(idx)
                tr = trunc[idx]
                if tr.any():   # time limit: bootstrap from the final observation's value
                    with torch.no_grad():
                        v_fin = ac.value(torch.as_tensor(rms.normalize(info["final_obs"][tr]))).numpy()
                    rew[idx[tr]] += cfg.gamma * v_fin
                ep_ret += info["episode_return"].tolist()
                ep_rmse += info["episode_rmse_m"].tolist()
                ep_crash += info["crash"][idx].tolist()
            ro.rew[t], ro.done[t] = rew, (term | trunc).astype(np.float32)
        with torch.no_grad():
            last_val = ac.value(torch.as_tensor(rms.normalize(obs))).numpy()
        adv, ret = ro.advantages(last_val, cfg.gamma, cfg.gae_lambda)
        stats = ppo_update(ac, opt, ro, adv, ret, cfg, rng)
        res.env_steps = (upd + 1) * cfg.num_envs * cfg.num_steps
        if cfg.max_wall_s > 0 and time.perf_counter() - t0 > cfg.max_wall_s:
            log(json.dumps({"stopped": "max_wall_s", "update": upd + 1, "env_steps": res.env_steps}))
            break
        if ep_ret and ((upd + 1) % cfg.log_every == 0 or upd == n_updates - 1):
            row = {"update": upd + 1, "env_steps": res.env_steps, "wall_s": round(time.perf_counter() - t0, 1),
                   "return": float(np.mean(ep_ret)), "rmse_m": float(np.mean(ep_rmse)),
                   "crash_rate": float(np.mean(ep_crash)), "episodes": len(ep_ret), **stats}
            res.history.append(row)
            log(json.dumps({k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items()}))
            ep_ret, ep_rmse, ep_crash = [], [], []
    res.wall_s = time.perf_counter() - t0
    return res


# ---------------------------------------------------------------- checkpoint
def checkpoint_has(path: str | Path, key: str, config_key: str) -> bool:
    """True when ``path`` is a torch checkpoint dict with ``key`` and a ``config`` dict holding ``config_key``:
    how the exporters tell their PPO checkpoints apart. An unreadable file is False; the exporter reports it."""
    try:
        ck = torch.load(path, map_location="cpu", weights_only=False)
    except Exception:   # noqa: BLE001 - let the real exporter report the unreadable file
        return False
    return isinstance(ck, dict) and key in ck and isinstance(ck.get("config"), dict) and config_key in ck["config"]


def save_checkpoint(res: TrainResult, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save({"config": asdict(res.config), "state_dict": res.model.state_dict(),
                "obs_mean": res.obs_rms.mean.tolist(), "obs_std": res.obs_rms.std.tolist(),
                "history": res.history, "wall_s": res.wall_s, "env_steps": res.env_steps,
                "env_meta": res.env_meta}, tmp)
    tmp.replace(path)
    return path


def load_checkpoint(path: str | Path):
    ck = torch.load(path, map_location="cpu", weights_only=False)
    cfg = PPOConfig(**{**ck["config"], "hidden": tuple(ck["config"]["hidden"])})
    ac = ActorCritic(len(ck["obs_mean"]), 4, cfg.hidden)
    ac.load_state_dict(ck["state_dict"])
    rms = RunningMeanStd(len(ck["obs_mean"]))
    rms.mean = np.asarray(ck["obs_mean"])
    rms.var = (np.asarray(ck["obs_std"]) - 1e-6) ** 2
    return TrainResult(ac, rms, cfg, ck.get("history", []), ck.get("wall_s", 0.0), ck.get("env_steps", 0),
                       ck.get("env_meta", {})), ck


# ---------------------------------------------------------------- evaluation
def evaluate(act_fn, *, episodes: int = 100, task: str = "track", trajectory: str = "figure8", dr=True,
             seed: int = 10_000, num_envs: int = 50) -> dict:
    """Tracking RMSE and crash rate of ``act_fn(obs (n, D), env) -> action (n, 4)`` on held-out draws.

    ``seed`` is far from the training seeds, so the DR draws are held out. Exactly ``episodes``
    episodes are scored (the first one of each env slot, in as many rounds as needed)."""
    rmse, crash = [], []
    rounds = math.ceil(episodes / num_envs)
    for r in range(rounds):
        n = min(num_envs, episodes - r * num_envs)
        env = QuadVecEnv(n, task=task, trajectory=trajectory, dr=dr, seed=seed + r)
        obs, _ = env.reset()
        state = {"env": env}
        got = np.zeros(n, bool)
        r_rmse, r_crash = np.zeros(n), np.zeros(n, bool)
        for _ in range(env.max_steps):
            obs, _, _, _, info = env.step(act_fn(obs, state))
            if "done_idx" in info:
                for j, i in enumerate(info["done_idx"]):
                    if not got[i]:
                        got[i], r_rmse[i], r_crash[i] = True, info["episode_rmse_m"][j], info["crash"][i]
                state.setdefault("reset_idx", []).append(info["done_idx"])
                if "on_reset" in state:
                    state["on_reset"](info["done_idx"])
        rmse += r_rmse.tolist()
        crash += r_crash.tolist()
    rmse, crash = np.asarray(rmse), np.asarray(crash)
    ok = ~crash
    return {"episodes": len(rmse), "rmse_m_mean": float(rmse[ok].mean()) if ok.any() else float("nan"),
            "rmse_m_all": float(rmse.mean()), "rmse_m_p95": float(np.percentile(rmse, 95)),
            "crashes": int(crash.sum()), "crash_rate": float(crash.mean())}


def baseline_act_fn():
    def act(obs, state):
        env = state["env"]
        if "ctl" not in state:
            state["ctl"] = GeometricController.for_env(env)
            state["on_reset"] = state["ctl"].reset
        return state["ctl"].act(split_obs(obs))
    return act


def policy_act_fn(res: TrainResult):
    """Deterministic torch policy (mean) with the same action map as training."""
    cfg = res.config

    def act(obs, state):
        env = state["env"]
        if "ctl" not in state:
            state["ctl"] = GeometricController.for_env(env)
            state["on_reset"] = state["ctl"].reset
        base = state["ctl"].act(split_obs(obs))          # keeps the integrator in step in both modes
        with torch.no_grad():
            mu = res.model.actor(torch.as_tensor(res.obs_rms.normalize(obs))).numpy()
        return squash(mu, base, cfg)
    return act


# ---------------------------------------------------------------- command line
def main(argv=None) -> int:
    """``python -m policies.ppo --mode residual --total-steps 500000 --out runs/quad/residual``
    trains, saves ``<out>.pt``, exports ``<out>.onnx`` and prints the training wall time."""
    import argparse
    ap = argparse.ArgumentParser(description="PPO for the quadrotor (residual or scratch)")
    ap.add_argument("--mode", default="residual", choices=["residual", "scratch"])
    ap.add_argument("--total-steps", type=int, default=PPOConfig.total_steps)
    ap.add_argument("--num-envs", type=int, default=PPOConfig.num_envs)
    ap.add_argument("--residual-scale", type=float, default=PPOConfig.residual_scale)
    ap.add_argument("--trajectory", default=PPOConfig.trajectory)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--max-wall-s", type=float, default=0.0, help="stop after this much training time")
    ap.add_argument("--no-dr", action="store_true")
    ap.add_argument("--out", required=True, help="path prefix for <out>.pt and <out>.onnx")
    a = ap.parse_args(argv)
    cfg = PPOConfig(mode=a.mode, total_steps=a.total_steps, num_envs=a.num_envs, residual_scale=a.residual_scale,
                    trajectory=a.trajectory, seed=a.seed, dr=not a.no_dr, max_wall_s=a.max_wall_s)
    res = train(cfg, log=lambda line: print(line, flush=True))
    ck = save_checkpoint(res, f"{a.out}.pt")
    from policies.export_mlp import export_ppo_checkpoint
    export_ppo_checkpoint(ck, f"{a.out}.onnx")
    print(json.dumps({"checkpoint": str(ck), "artifact": f"{a.out}.onnx", "train_wall_s": round(res.wall_s, 1),
                      "env_steps": res.env_steps}), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
