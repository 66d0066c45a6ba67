"""Residual RL on a frozen diffusion base (CleanRL style, one file): batched envs, PPO, SAC with demos.

Reads top to bottom: the configs (``ResidualPPOConfig``, ``ResidualSACConfig``),
the batched environment (``ResidualVecEnv``: N ``sim.arm_env.ArmEnv`` instances,
each with its own base runtime, safety filter and seeds), PPO (reusing
``policies.ppo``'s rollout storage, GAE and clipped update), SAC with
demonstrations (RLPD style: every batch half online, half offline), and the
checkpoint payload.

The MDP the residual sees: state ``x = [obs_n ; base_n]`` (see
``policies.residual``), action = the pre-squash sample ``u``, correction
``scale * tanh(u)``, reward 1 on task success (sparse; the episode ends there)
and 0 otherwise; the time limit ends an episode as a failure. Every step runs
through ``policies.residual_runtime.ResidualRuntime.observe/compose``: the
same composition and safety filter as evaluation and deployment.

Domain randomization is on by default (``dr=True``); training episode seeds
start at 100000, far from the evaluation seeds (1000+).

Checkpoint selection (``Selector``; PPO ``val_every`` updates, SAC ``val_every_steps``): every interval the
deterministic residual (the mean correction) runs ``val_episodes`` episodes on
fixed held-out validation seeds (50000+, used neither by training nor by
``onboard eval``), with fresh envs and base runtimes so every validation sees
the same DR draws and initial states. The best validation success is written to
``out`` (``residual.pt``), the last weights to ``residual_last.pt``; update 0
scores the base alone (zero residual) for reference. Report the final figure
on evaluation seeds, never on the validation seeds.

Offline data for SAC (``demo_source``), collected before training under DR:
- ``base``: successful rollouts of the base alone (correction 0), what a good
  step looks like from this base;
- ``expert``: the scripted expert the base was cloned from, relabelled as
  residual actions: each step executes ``base + clip(expert - base, +-scale)``
  (normalized units), so the stored action is exactly the bounded correction
  that was applied; only successful episodes are kept (ResFiT's "demos in the
  buffer", made consistent with the residual's bound);
- ``both``: the two, in one offline buffer.
SAC validates and selects checkpoints like PPO (``val_every_steps``).

Imports torch, numpy, sim (the env the trainer drives) and sim2real (safety).
Never imported by the runtime.
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
import torch.nn.functional as F

from onboard.errors import OnboardError
from policies.ppo import Rollout, ppo_update
from policies.residual import DEFAULT_SCALE, ResidualActor, check_scale, save_checkpoint, squash
from policies.residual_runtime import ResidualRuntime, artifact_sha256

TRAIN_SEED_OFFSET = 100_000
DEMO_SOURCES = ("base", "expert", "both")
VAL_SEED_OFFSET = 50_000


@dataclass
class ResidualPPOConfig:
    task: str = "push"
    dr: bool = True
    safety: bool = True                  # train through the same safety filter as evaluation
    base_num_steps: int | None = None    # DDIM steps of the base; None = the contract's default
    residual_scale: float = DEFAULT_SCALE
    num_envs: int = 8
    num_steps: int = 60                  # rollout length per env per update
    total_steps: int = 200_000
    learning_rate: float = 1e-4
    anneal_lr: bool = False
    gamma: float = 0.99
    gae_lambda: float = 0.95
    update_epochs: int = 4
    num_minibatches: int = 4
    clip_coef: float = 0.2
    ent_coef: float = 0.0
    vf_coef: float = 0.5
    max_grad_norm: float = 0.5
    hidden: tuple = (256, 256)
    init_log_std: float = -1.5           # exploration noise ~0.02 normalized: more would undo the base
    seed: int = 0
    torch_threads: int = 1
    log_every: int = 1                   # updates
    max_wall_s: float = 0.0              # > 0: stop after this much training time (the model is kept)
    checkpoint_every: int = 5            # updates
    val_every: int = 0                   # updates between held-out validations; 0 = off (keep the last)
    val_episodes: int = 40

    def validate(self) -> None:
        check_scale(self.residual_scale)
        if self.val_every < 0 or self.val_episodes < 1:
            raise OnboardError("val_every must be >= 0 and val_episodes >= 1", field="val_every",
                               fix="e.g. --val-every 15 --val-episodes 40")
        if not self.learning_rate > 0 or self.num_steps < 1:
            raise OnboardError(f"learning_rate {self.learning_rate} / num_steps {self.num_steps} out of range",
                               field="learning_rate", fix="pass --learning-rate > 0 and --rollout-steps >= 1")
        if (self.num_envs * self.num_steps) % self.num_minibatches:
            raise OnboardError("num_envs * num_steps must divide into num_minibatches", field="num_minibatches",
                               fix="pick a divisor of num_envs * num_steps")


@dataclass
class ResidualSACConfig:
    task: str = "push"
    dr: bool = True
    safety: bool = True
    base_num_steps: int | None = None
    residual_scale: float = DEFAULT_SCALE
    num_envs: int = 4
    total_steps: int = 100_000
    demo_episodes: int = 20              # demo rollouts; the successful ones fill the offline buffer
    demo_source: str = "base"            # base | expert | both (see the module docstring)
    offline_ratio: float = 0.5           # RLPD: half of every batch from the offline buffer
    buffer_size: int = 200_000
    batch_size: int = 256
    learning_starts: int = 1000          # online transitions before the first update
    updates_per_step: float = 0.25       # gradient updates per env step (over all envs)
    gamma: float = 0.99
    tau: float = 0.005
    actor_lr: float = 3e-4
    critic_lr: float = 3e-4
    alpha_lr: float = 3e-4
    init_alpha: float = 0.01
    init_log_std: float = -1.5
    hidden: tuple = (256, 256)
    seed: int = 0
    torch_threads: int = 1
    log_every_steps: int = 2000
    max_wall_s: float = 0.0
    checkpoint_every_steps: int = 10_000
    val_every_steps: int = 0             # env steps between held-out validations; 0 = off (keep the last)
    val_episodes: int = 40

    def validate(self) -> None:
        check_scale(self.residual_scale)
        if self.demo_source not in DEMO_SOURCES:
            raise OnboardError(f"unknown demo source '{self.demo_source}'", field="demo_source",
                               fix=f"use one of {list(DEMO_SOURCES)}")
        if self.val_every_steps < 0 or self.val_episodes < 1:
            raise OnboardError("val_every_steps must be >= 0 and val_episodes >= 1", field="val_every",
                               fix="e.g. --val-every 20000 --val-episodes 100")
        if not 0.0 <= self.offline_ratio < 1.0:
            raise OnboardError(f"offline_ratio {self.offline_ratio} outside [0, 1)", field="offline_ratio",
                               fix="0.5 is RLPD's symmetric sampling")


def state_from_obs(obs: dict) -> dict:
    """The safety filter's arm state from an ArmEnv observation (7 joints + gripper width)."""
    q = np.concatenate([np.asarray(obs["joint_pos"], float), np.asarray(obs["gripper_width"], float).ravel()])
    dq = np.concatenate([np.asarray(obs["joint_vel"], float), [0.0]])
    return {"q": q, "dq": dq}


# ---------------------------------------------------------------- batched environment
class ResidualVecEnv:
    """N arm envs, each with its own base runtime (chunk queue, sampler RNG) and safety filter.

    ``reset() -> x (N, in_dim)``; ``step(correction (N, A)) -> x, reward, terminated, truncated, info``,
    auto-resetting finished envs (``x`` is then the first state of the next episode;
    ``info["final_x"]`` holds the last state of the finished one)."""

    def __init__(self, base: str | Path, num_envs: int, *, task: str = "push", dr=True, safety: bool = True,
                 base_num_steps: int | None = None, scale: float = DEFAULT_SCALE, seed: int = 0,
                 first_episode_seed: int | None = None):
        from sim.arm_env import ArmEnv
        from sim2real.safety import SafetyFilter

        self.n = int(num_envs)
        self.envs = [ArmEnv(task=task, dr=dr, seed=seed + i) for i in range(self.n)]
        self.rts = [ResidualRuntime(base, None, num_steps=base_num_steps, seed=seed + i, scale=scale)
                    for i in range(self.n)]
        c = self.rts[0].contract
        missing = [k for k in c.obs_keys if k not in self.envs[0].observation_space.spaces]
        if missing:
            raise OnboardError(f"the base needs observation keys {missing} that task '{task}' does not provide",
                               file=str(base), field="observation.keys", fix="train on the base's own task")
        self.dt_s = 1.0 / c.control_rate_hz
        if safety:
            for rt in self.rts:
                rt.safety = SafetyFilter.for_robot(c.robot["name"], dt_s=self.dt_s)
        self.in_dim = self.rts[0].input_dim
        self.act_dim = c.action_dim
        self.scale = float(scale)
        self._next_seed = (TRAIN_SEED_OFFSET + 1000 * int(seed) if first_episode_seed is None
                           else int(first_episode_seed))
        self._t = np.zeros(self.n)
        self._x = np.zeros((self.n, self.in_dim), np.float32)
        self._state = [None] * self.n
        self.experts = None

    def attach_experts(self) -> None:
        """One scripted expert per env (``sim.experts``), reset with each episode; see ``expert_corrections``."""
        from sim.experts import make_expert

        self.experts = [make_expert(env) for env in self.envs]

    def detach_experts(self) -> None:
        self.experts = None

    def expert_corrections(self) -> np.ndarray:
        """Per env, the expert's command for this step as a bounded residual on the base's command:
        ``clip((expert - base) / (span/2), +-scale)``. Advances each expert one step; call once per step,
        between ``reset``/``step`` and the next ``step``. Zero where the base holds."""
        return np.stack([rt.correction_toward(ex.act()) for ex, rt in zip(self.experts, self.rts)])

    def _reset_one(self, i: int) -> np.ndarray:
        seed = self._next_seed
        self._next_seed += 1
        obs, info = self.envs[i].reset(seed=seed)
        if self.experts is not None:
            self.experts[i].reset(seed=info["episode_seed"] % (2**32))
        st = state_from_obs(obs)
        self.rts[i].reset(state=st, t=0.0)
        self._t[i] = 0.0
        self._state[i] = st
        return self.rts[i].observe(obs, t=0.0, state=st)

    def reset(self) -> np.ndarray:
        for i in range(self.n):
            self._x[i] = self._reset_one(i)
        return self._x.copy()

    def step(self, correction: np.ndarray):
        correction = np.asarray(correction, dtype=np.float64).reshape(self.n, self.act_dim)
        rew = np.zeros(self.n, np.float32)
        term = np.zeros(self.n, bool)
        trunc = np.zeros(self.n, bool)
        info = {"done_idx": [], "success": [], "final_x": {}, "residual_abs": []}
        for i, (env, rt) in enumerate(zip(self.envs, self.rts)):
            cmd = rt.compose(correction[i])
            info["residual_abs"].append(rt.last_residual_magnitude)
            obs, _r, te, tr, inf = env.step(cmd)
            self._t[i] += self.dt_s
            success = bool(inf.get("success", False))
            rew[i] = 1.0 if success else 0.0
            term[i], trunc[i] = success, bool(tr) and not success
            st = state_from_obs(obs)
            if term[i] or trunc[i]:
                info["done_idx"].append(i)
                info["success"].append(success)
                info["final_x"][i] = rt.observe(obs, t=self._t[i], state=st)
                self._x[i] = self._reset_one(i)
            else:
                self._x[i] = rt.observe(obs, t=self._t[i], state=st)
        return self._x.copy(), rew, term, trunc, info


# ---------------------------------------------------------------- PPO
class ResidualActorCritic(nn.Module):
    """The residual actor (zero-init mean), a critic on the same input, a state-independent log std.
    ``dist``/``value`` are the interface ``policies.ppo.ppo_update`` expects."""

    def __init__(self, in_dim: int, act_dim: int, hidden=(256, 256), init_log_std: float = -1.0):
        super().__init__()
        self.actor = ResidualActor(in_dim, act_dim, hidden)
        layers, d = [], in_dim
        for h in hidden:
            layers += [nn.Linear(d, h), nn.Tanh()]
            d = h
        self.critic = nn.Sequential(*layers, nn.Linear(d, 1))
        self.log_std = nn.Parameter(torch.full((act_dim,), float(init_log_std)))

    def dist(self, x: torch.Tensor) -> torch.distributions.Normal:
        return torch.distributions.Normal(self.actor(x), self.log_std.exp())

    def value(self, x: torch.Tensor) -> torch.Tensor:
        return self.critic(x).squeeze(-1)


@dataclass
class TrainResult:
    actor: ResidualActor
    config: object
    algo: str
    history: list = field(default_factory=list)
    wall_s: float = 0.0
    env_steps: int = 0
    selection: dict = field(default_factory=dict)     # held-out checkpoint selection (``Selector``)


def _payload(res: TrainResult, base: Path, base_sha: str, cfg, base_num_steps) -> dict:
    return {"algo": res.algo, "config": asdict(cfg), "scale": float(cfg.residual_scale),
            "actor": {"in_dim": res.actor.in_dim, "act_dim": res.actor.act_dim, "hidden": list(res.actor.hidden)},
            "actor_state": res.actor.state_dict(), "base_artifact": str(base), "base_sha256": base_sha,
            "base_num_steps": base_num_steps, "task": cfg.task, "dr": cfg.dr, "history": res.history,
            "env_steps": res.env_steps, "wall_s": res.wall_s, "selection": res.selection}


class Selector:
    """Held-out checkpoint selection, shared by PPO and SAC (``cfg.val_episodes``; on when ``out`` is given).

    ``start()`` scores the base alone (the zero residual: the bar to beat) and writes it as ``out``;
    ``validate(actor, at)`` scores the mean residual, logs the row (``at``: where in training, e.g.
    ``{"update": 40, "env_steps": 19200}``) and rewrites ``out`` when it beats the best so far."""

    def __init__(self, base: Path, cfg, res: TrainResult, out, save, log):
        self.base, self.cfg, self.res, self.out, self.save, self.log = base, cfg, res, out, save, log
        self.best = -1.0

    def start(self, at: dict) -> None:
        cfg = self.cfg
        self.best = validate_residual(self.base, None, cfg, cfg.val_episodes)
        self.res.selection = {**at, "val_success": self.best, "val_episodes": cfg.val_episodes,
                              "val_seeds": [VAL_SEED_OFFSET, VAL_SEED_OFFSET + cfg.val_episodes - 1],
                              "base_val": self.best}
        self.log(json.dumps({"validation": "base alone", **self.res.selection}))
        self.save(self.out)

    def validate(self, actor: ResidualActor, at: dict) -> None:
        score = validate_residual(self.base, actor, self.cfg, self.cfg.val_episodes)
        row = {"validation": "residual", **at, "val_success": score, "best": max(self.best, score)}
        self.log(json.dumps(row))
        self.res.history.append(row)
        if score > self.best:
            self.best = score
            self.res.selection = {**self.res.selection, **at, "val_success": score}
            self.save(self.out)

    def save_last(self) -> None:
        self.save(Path(self.out).with_name("residual_last.pt"))


def validate_residual(base: Path, actor: ResidualActor | None, cfg, episodes: int) -> float:
    """Success rate of the deterministic residual (``actor=None``: the base alone) on the validation seeds."""
    venv = ResidualVecEnv(base, min(cfg.num_envs, episodes), task=cfg.task, dr=cfg.dr, safety=cfg.safety,
                          base_num_steps=cfg.base_num_steps, scale=cfg.residual_scale, seed=cfg.seed,
                          first_episode_seed=VAL_SEED_OFFSET)
    x = venv.reset()
    started = venv.n                      # episodes begun so far; each env runs episodes in seed order
    done: list[bool] = []
    active = np.ones(venv.n, bool)
    while active.any():
        with torch.no_grad():
            u = actor(torch.as_tensor(x)).numpy() if actor is not None else np.zeros((venv.n, venv.act_dim))
        x, _r, _te, _tr, info = venv.step(squash(u, cfg.residual_scale) if actor is not None else u)
        for i, ok in zip(info["done_idx"], info["success"]):
            if active[i]:
                done.append(ok)
                if started < episodes:
                    started += 1          # the env already reset onto the next validation seed
                else:
                    active[i] = False
    return float(np.mean(done[:episodes]))


def train_ppo(base: str | Path, cfg: ResidualPPOConfig, out: str | Path | None = None, log=print) -> TrainResult:
    """PPO on the residual; writes ``out`` (residual.pt) every few updates and at the end when given."""
    cfg.validate()
    base = Path(base)
    base_sha = artifact_sha256(base)
    torch.set_num_threads(cfg.torch_threads)
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    venv = ResidualVecEnv(base, cfg.num_envs, task=cfg.task, dr=cfg.dr, safety=cfg.safety,
                          base_num_steps=cfg.base_num_steps, scale=cfg.residual_scale, seed=cfg.seed)
    base_num_steps = venv.rts[0].num_steps
    ac = ResidualActorCritic(venv.in_dim, venv.act_dim, cfg.hidden, cfg.init_log_std)
    opt = torch.optim.Adam(ac.parameters(), lr=cfg.learning_rate, eps=1e-5)
    ro = Rollout(cfg.num_steps, cfg.num_envs, venv.in_dim, venv.act_dim)
    n_updates = max(1, cfg.total_steps // (cfg.num_envs * cfg.num_steps))
    res = TrainResult(ac.actor, cfg, "ppo")
    x = venv.reset()
    successes, magnitudes = [], []
    save = lambda path: save_checkpoint(path, _payload(res, base, base_sha, cfg, base_num_steps))  # noqa: E731
    selector = Selector(base, cfg, res, out, save, log) if cfg.val_every and out is not None else None
    if selector is not None:
        selector.start({"update": 0, "env_steps": 0})
    t0 = time.perf_counter()
    for upd in range(n_updates):
        if cfg.anneal_lr:
            opt.param_groups[0]["lr"] = cfg.learning_rate * (1 - upd / n_updates)
        for t in range(cfg.num_steps):
            with torch.no_grad():
                xt = torch.as_tensor(x)
                d = ac.dist(xt)
                u = d.sample()
                ro.logp[t] = d.log_prob(u).sum(-1).numpy()
                ro.val[t] = ac.value(xt).numpy()
            ro.obs[t], ro.u[t] = x, u.numpy()
            x, rew, term, trunc, info = venv.step(squash(u.numpy(), cfg.residual_scale))
            ro.rew[t], ro.done[t] = rew, (term | trunc).astype(np.float32)
            successes += info["success"]
            magnitudes += info["residual_abs"]
        with torch.no_grad():
            last_val = ac.value(torch.as_tensor(x)).numpy()
        adv, ret = ro.advantages(last_val, cfg.gamma, cfg.gae_lambda)
        stats = ppo_update(ac, opt, ro, adv, ret, cfg, rng)
        res.env_steps = (upd + 1) * cfg.num_envs * cfg.num_steps
        res.wall_s = time.perf_counter() - t0
        if successes and ((upd + 1) % cfg.log_every == 0 or upd == n_updates - 1):
            row = {"update": upd + 1, "env_steps": res.env_steps, "wall_s": round(res.wall_s, 1),
                   "episodes": len(successes), "success_rate": float(np.mean(successes)),
                   "residual_abs_mean": float(np.mean(magnitudes)), "log_std": float(ac.log_std.detach().mean()), **stats}
            res.history.append(row)
            log(json.dumps({k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items()}))
            successes, magnitudes = [], []
        stop = cfg.max_wall_s > 0 and res.wall_s > cfg.max_wall_s
        last = stop or upd == n_updates - 1
        if selector is not None:
            if (upd + 1) % cfg.checkpoint_every == 0 or last:
                selector.save_last()
            if (upd + 1) % cfg.val_every == 0 or last:
                selector.validate(ac.actor, {"update": upd + 1, "env_steps": res.env_steps})
        elif out is not None and ((upd + 1) % cfg.checkpoint_every == 0 or last):
            save(out)
        if stop:
            log(json.dumps({"stopped": "max_wall_s", "update": upd + 1, "env_steps": res.env_steps}))
            break
    return res


# ---------------------------------------------------------------- SAC with demonstrations
class SACPolicy(nn.Module):
    """Tanh-Gaussian over ``u``; the mean head is the residual actor's (zero-init), plus a log-std head."""

    def __init__(self, in_dim: int, act_dim: int, hidden=(256, 256), init_log_std: float = -1.5):
        super().__init__()
        self.actor = ResidualActor(in_dim, act_dim, hidden)
        self.log_std = nn.Linear(self.actor.mu.in_features, act_dim)
        nn.init.zeros_(self.log_std.weight)
        nn.init.constant_(self.log_std.bias, float(init_log_std))

    def sample(self, x: torch.Tensor):
        """(a in [-1, 1] = tanh(u), log pi(a)) with the tanh change of variables."""
        h = self.actor.trunk(x)
        mu, log_std = self.actor.mu(h), self.log_std(h).clamp(-5.0, 1.0)
        d = torch.distributions.Normal(mu, log_std.exp())
        u = d.rsample()
        a = torch.tanh(u)
        logp = (d.log_prob(u) - torch.log(1 - a.pow(2) + 1e-6)).sum(-1)
        return a, logp


class QNet(nn.Module):
    """Q(x, a) with LayerNorm (RLPD: LayerNorm keeps the critic from extrapolating wildly off the data)."""

    def __init__(self, in_dim: int, act_dim: int, hidden=(256, 256)):
        super().__init__()
        layers, d = [], in_dim + act_dim
        for h in hidden:
            layers += [nn.Linear(d, h), nn.LayerNorm(h), nn.ReLU()]
            d = h
        self.net = nn.Sequential(*layers, nn.Linear(d, 1))

    def forward(self, x, a):
        return self.net(torch.cat([x, a], -1)).squeeze(-1)


class ReplayBuffer:
    def __init__(self, size: int, in_dim: int, act_dim: int):
        self.x = np.zeros((size, in_dim), np.float32)
        self.a = np.zeros((size, act_dim), np.float32)      # tanh(u) in [-1, 1]: correction / scale
        self.r = np.zeros(size, np.float32)
        self.x2 = np.zeros((size, in_dim), np.float32)
        self.d = np.zeros(size, np.float32)                  # 1 = terminal (success); truncation is not
        self.size, self.n, self.i = size, 0, 0

    def add(self, x, a, r, x2, d) -> None:
        self.x[self.i], self.a[self.i], self.r[self.i], self.x2[self.i], self.d[self.i] = x, a, r, x2, d
        self.i = (self.i + 1) % self.size
        self.n = min(self.n + 1, self.size)

    def sample(self, rng: np.random.Generator, k: int):
        j = rng.integers(0, self.n, size=k)
        return tuple(torch.as_tensor(v[j]) for v in (self.x, self.a, self.r, self.x2, self.d))


def collect_demos(venv: ResidualVecEnv, episodes: int, buf: ReplayBuffer, source: str = "base", log=print) -> dict:
    """Fill ``buf`` with the transitions of successful demonstration episodes.

    ``source="base"``: the base alone (correction 0). ``source="expert"``: the scripted expert relabelled
    as a bounded residual (``ResidualVecEnv.expert_corrections``); the stored action is the applied
    correction divided by the scale (in [-1, 1], kept just inside so tanh's inverse stays finite)."""
    if source == "expert":
        venv.attach_experts()
    before = buf.n
    try:
        x = venv.reset()
        pending = [[] for _ in range(venv.n)]
        done_eps, ok = 0, 0
        while done_eps < episodes:
            c = venv.expert_corrections() if source == "expert" else np.zeros((venv.n, venv.act_dim))
            x2, rew, term, trunc, info = venv.step(c)
            a = np.clip(c / venv.scale, -0.999, 0.999)
            for i in range(venv.n):
                nxt = info["final_x"].get(i, x2[i])
                pending[i].append((x[i], a[i], rew[i], nxt, float(term[i])))
            for i, s in zip(info["done_idx"], info["success"]):
                done_eps += 1
                if s:
                    ok += 1
                    for tr in pending[i]:
                        buf.add(*tr)
                pending[i] = []
            x = x2
    finally:
        venv.detach_experts()
    row = {"demos": f"{source} rollouts", "episodes": done_eps, "successful": ok, "transitions": buf.n - before}
    log(json.dumps(row))
    return row


def train_sac(base: str | Path, cfg: ResidualSACConfig, out: str | Path | None = None, log=print) -> TrainResult:
    """SAC on the residual; offline buffer of successful demonstrations (``cfg.demo_source``), RLPD 50/50 batches."""
    cfg.validate()
    base = Path(base)
    base_sha = artifact_sha256(base)
    torch.set_num_threads(cfg.torch_threads)
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    venv = ResidualVecEnv(base, cfg.num_envs, task=cfg.task, dr=cfg.dr, safety=cfg.safety,
                          base_num_steps=cfg.base_num_steps, scale=cfg.residual_scale, seed=cfg.seed)
    base_num_steps = venv.rts[0].num_steps
    D, A = venv.in_dim, venv.act_dim
    pi = SACPolicy(D, A, cfg.hidden, cfg.init_log_std)
    q1, q2 = QNet(D, A, cfg.hidden), QNet(D, A, cfg.hidden)
    q1_t, q2_t = QNet(D, A, cfg.hidden), QNet(D, A, cfg.hidden)
    q1_t.load_state_dict(q1.state_dict())
    q2_t.load_state_dict(q2.state_dict())
    log_alpha = torch.tensor(math.log(cfg.init_alpha), requires_grad=True)
    target_entropy = -float(A)
    opt_pi = torch.optim.Adam(pi.parameters(), lr=cfg.actor_lr)
    opt_q = torch.optim.Adam(list(q1.parameters()) + list(q2.parameters()), lr=cfg.critic_lr)
    opt_a = torch.optim.Adam([log_alpha], lr=cfg.alpha_lr)
    online = ReplayBuffer(cfg.buffer_size, D, A)
    sources = ("base", "expert") if cfg.demo_source == "both" else (cfg.demo_source,)
    longest = max(env.max_steps for env in venv.envs)           # a kept demo episode is at most this long
    # up to n - 1 extra episodes can end in the step that completes the count
    offline = ReplayBuffer(max(1, (cfg.demo_episodes + venv.n) * longest * len(sources)), D, A)
    res = TrainResult(pi.actor, cfg, "sac")
    t0 = time.perf_counter()
    for src in sources if cfg.demo_episodes > 0 else ():
        res.history.append({"demos": collect_demos(venv, cfg.demo_episodes, offline, src, log)})
    last_val = 0
    save = lambda path: save_checkpoint(path, _payload(res, base, base_sha, cfg, base_num_steps))  # noqa: E731
    selector = Selector(base, cfg, res, out, save, log) if cfg.val_every_steps and out is not None else None
    if selector is not None:
        selector.start({"env_steps": 0})
    x = venv.reset()
    steps, updates_due, last_log, last_ck = 0, 0.0, 0, 0
    successes, magnitudes, stats = [], [], {}
    while steps < cfg.total_steps:
        with torch.no_grad():
            a, _ = pi.sample(torch.as_tensor(x))
        a = a.numpy()
        x2, rew, term, trunc, info = venv.step(cfg.residual_scale * a)
        for i in range(venv.n):
            online.add(x[i], a[i], rew[i], info["final_x"].get(i, x2[i]), float(term[i]))
        successes += info["success"]
        magnitudes += info["residual_abs"]
        x = x2
        steps += venv.n
        updates_due += cfg.updates_per_step * venv.n
        while online.n >= cfg.learning_starts and updates_due >= 1.0:
            updates_due -= 1.0
            n_off = int(round(cfg.batch_size * cfg.offline_ratio)) if offline.n else 0
            parts = [online.sample(rng, cfg.batch_size - n_off)] + ([offline.sample(rng, n_off)] if n_off else [])
            bx, ba, br, bx2, bd = (torch.cat(z) for z in zip(*parts))
            alpha = log_alpha.exp().detach()
            with torch.no_grad():
                a2, logp2 = pi.sample(bx2)
                q_next = torch.min(q1_t(bx2, a2), q2_t(bx2, a2)) - alpha * logp2
                target = br + cfg.gamma * (1.0 - bd) * q_next
            q_loss = F.mse_loss(q1(bx, ba), target) + F.mse_loss(q2(bx, ba), target)
            opt_q.zero_grad()
            q_loss.backward()
            opt_q.step()
            a_new, logp = pi.sample(bx)
            pi_loss = (alpha * logp - torch.min(q1(bx, a_new), q2(bx, a_new))).mean()
            opt_pi.zero_grad()
            pi_loss.backward()
            opt_pi.step()
            a_loss = -(log_alpha * (logp.detach() + target_entropy)).mean()
            opt_a.zero_grad()
            a_loss.backward()
            opt_a.step()
            with torch.no_grad():
                for net, tgt in ((q1, q1_t), (q2, q2_t)):
                    for p, pt in zip(net.parameters(), tgt.parameters()):
                        pt.mul_(1 - cfg.tau).add_(p, alpha=cfg.tau)
            stats = {"q_loss": q_loss.item(), "pi_loss": pi_loss.item(), "alpha": log_alpha.detach().exp().item()}
        res.env_steps, res.wall_s = steps, time.perf_counter() - t0
        if successes and (steps - last_log >= cfg.log_every_steps or steps >= cfg.total_steps):
            last_log = steps
            row = {"env_steps": steps, "wall_s": round(res.wall_s, 1), "episodes": len(successes),
                   "success_rate": float(np.mean(successes)), "residual_abs_mean": float(np.mean(magnitudes)),
                   **stats}
            res.history.append(row)
            log(json.dumps({k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items()}))
            successes, magnitudes = [], []
        stop = cfg.max_wall_s > 0 and res.wall_s > cfg.max_wall_s
        last = stop or steps >= cfg.total_steps
        if selector is not None:
            if steps - last_ck >= cfg.checkpoint_every_steps or last:
                last_ck = steps
                selector.save_last()
            if steps - last_val >= cfg.val_every_steps or last:
                last_val = steps
                selector.validate(pi.actor, {"env_steps": steps})
        elif out is not None and (steps - last_ck >= cfg.checkpoint_every_steps or last):
            last_ck = steps
            save(out)
        if stop:
            log(json.dumps({"stopped": "max_wall_s", "env_steps": steps}))
            break
    return res
