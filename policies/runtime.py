"""The one policy runtime: raw observations in, safe commands out.

``PolicyRuntime`` opens an artifact (``policies.artifact``), keeps the
observation history, normalizes with the stats from the contract, samples an
action chunk with the numpy DDIM loop (``policies.sampler``; the noise comes
from a seeded numpy RNG and enters the graph as the ``sample`` input),
unnormalizes it and executes it receding-horizon: ``action_horizon`` commands,
then a new chunk. Optional temporal ensembling (ACT, Zhao et al. 2023) replans
every step and averages the overlapping chunks' predictions for the current
step with weights exp(-k * i), i = 0 for the oldest.

A safety object (duck-typed, e.g. ``sim2real.safety.SafetyFilter``) is applied
when given: ``filter_chunk(executed_part, state, t)`` on every new chunk and
``filter(cmd, t, state)`` on every command returned. A non-finite observation
never reaches the network: it is counted, the plan is dropped, and the
command is a hold: ``safety.filter(None, t, state)`` (no fresh command: the
filter holds and its watchdog sees the gap) or, without a filter, the last
command (or the measured position); the runtime replans once observations
are finite again.

Single-step MLP artifacts (``policy_kind`` ``ppo`` / ``residual`` / ``mlp``,
graph ``policy``, written by ``policies.export_mlp``) run through the same
class: the observation is standardized with the contract's stats (clipped at
``extra.obs_clip``); for a residual the baseline controller the contract
names in ``extra.residual`` (``sim.quad_controllers.GeometricController``,
numpy only, with the recorded gains, nominal mass, max thrust and period)
runs on the RAW observation and its normalized action enters the graph as
``base_action``; the graph's ``action`` in [-1, 1] is mapped to physical
units (``action.normalization``: thrust [N], body rates [rad/s]) and passed
through the safety filter. ``act`` serves one robot; ``act_batch`` serves a
batch of simulated drones (one filter per row), with ``reset_envs`` for the
rows whose episode restarts.

Sim evaluation, sim-to-sim and the ROS 2 policy node all call this class.
Imports numpy, onnxruntime (through ``policies.artifact``), onboard.spec and,
for residual artifacts, the numpy baseline controller in ``sim``. Never torch.
"""
from __future__ import annotations

import time
from collections import deque
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from onboard.errors import OnboardError
from onboard.spec.contract import PolicyContract
from onboard.spec.normalize import normalize, unnormalize
from policies.artifact import DEFAULT_INTRA_OP_THREADS, is_mlp_contract, load_artifact
from policies.sampler import ddim_sample

_TIMINGS_KEPT = 4096


class PolicyRuntime:
    def __init__(self, artifact: str | Path, robot=None, safety=None, num_steps: int | None = None,
                 temporal_ensemble: float | None = None, seed: int = 0,
                 intra_op_num_threads: int = DEFAULT_INTRA_OP_THREADS, spacing: str | None = None,
                 num_envs: int = 1):
        self.artifact = load_artifact(artifact, robot=robot, intra_op_num_threads=intra_op_num_threads)
        self.contract: PolicyContract = self.artifact.contract
        self.warnings = list(self.artifact.warnings)
        c = self.contract
        self.safety = safety
        self.seed = seed
        self._keys = c.observation["keys"]
        self._obs_norm = c.observation.get("normalization", {})
        self._act_norm = c.action.get("normalization", {"kind": "identity"})
        self._dt_s = 1.0 / c.control_rate_hz
        self.temporal_ensemble = temporal_ensemble
        self.stats = {"chunks": 0, "commands": 0, "nonfinite_obs": 0, "holds": 0, "chunk_ms": deque(maxlen=_TIMINGS_KEPT)}
        self.kind = "mlp" if is_mlp_contract(c) else c.policy_kind
        if self.kind == "mlp":
            self._init_mlp(num_envs)
            return
        if c.policy_kind != "diffusion":
            fix = ("run it with policies.residual_runtime.ResidualRuntime (a residual over a diffusion base)"
                   if c.policy_kind == "residual" else
                   "run it with policies.vla.runtime.VLARuntime (it needs an instruction and camera images)"
                   if c.policy_kind == "vla" else "export a diffusion, ppo or residual policy")
            raise OnboardError(f"this runtime runs diffusion and MLP (ppo/residual) policies; the artifact is "
                               f"'{c.policy_kind}' with graphs {sorted(c.graphs)}", file=str(artifact),
                               field="policy_kind", fix=fix)
        s = c.sampler
        self.num_steps = int(num_steps if num_steps is not None else s.get("default_steps", 10))
        if not 1 <= self.num_steps <= int(s["train_timesteps"]):
            raise OnboardError(f"num_steps {self.num_steps} outside 1..{s['train_timesteps']}",
                               field="num_steps", fix="pick a sampler step count the schedule allows")
        self.spacing = spacing or s.get("spacing", "leading")
        self.clip_sample = float(s.get("clip_sample", 1.0))
        self.alphas_cumprod = np.asarray(s["alphas_cumprod"], dtype=np.float64)
        self._rng = np.random.default_rng(seed)
        self.reset()

    # ---- properties the callers read -------------------------------------------------------------
    @property
    def action_dim(self) -> int:
        return self.contract.action_dim

    @property
    def obs_keys(self) -> list[str]:
        return self.contract.obs_keys

    # ---- observation handling --------------------------------------------------------------------
    def obs_vector(self, obs: Mapping[str, np.ndarray]) -> np.ndarray:
        """Normalized, concatenated observation (obs_dim,), in contract key order. May hold non-finite values."""
        parts = []
        for k in self._keys:
            name = k["name"]
            v = obs.get(name, obs.get(f"observation.{name}")) if isinstance(obs, Mapping) else None
            if v is None:
                raise OnboardError(f"observation '{name}' is missing (got {sorted(obs) if isinstance(obs, Mapping) else type(obs).__name__})",
                                   field=f"observation.{name}", fix="feed every key the contract lists")
            v = np.asarray(v, dtype=np.float32).reshape(-1)
            if v.size != int(np.prod(k["shape"])):
                raise OnboardError(f"observation '{name}' has {v.size} values, the contract says shape {k['shape']}",
                                   field=f"observation.{name}", fix="check the observation builder")
            st = self._obs_norm.get(name)
            parts.append(normalize(v, st) if st else v)
        return np.concatenate(parts).astype(np.float32)

    def _push(self, vec: np.ndarray) -> None:
        if not self._history:
            self._history.extend([vec] * self.contract.obs_horizon)   # pad by repeating the first obs
        else:
            self._history.append(vec)

    # ---- sampling -------------------------------------------------------------------------------
    def _sample_normalized(self, obs_cond: np.ndarray) -> np.ndarray:
        c = self.contract
        noise = self._rng.standard_normal((1, c.pred_horizon, c.action_dim)).astype(np.float32)
        t0 = time.perf_counter()
        x = ddim_sample(self.artifact.denoise, noise, obs_cond[None, :], self.alphas_cumprod, self.num_steps,
                        spacing=self.spacing, clip_sample=self.clip_sample)
        self.stats["chunk_ms"].append((time.perf_counter() - t0) * 1e3)
        self.stats["chunks"] += 1
        return x[0]

    def _chunk_from_history(self) -> np.ndarray:
        return unnormalize(self._sample_normalized(np.concatenate(list(self._history))), self._act_norm)

    def predict_chunk(self, obs_history: Sequence[Mapping[str, np.ndarray]]) -> np.ndarray:
        """Raw (pred_horizon, action_dim) chunk for a list of observation dicts (oldest first), unfiltered.
        Shorter histories are padded by repeating the first; the runtime's own history is untouched."""
        if not len(obs_history):
            raise OnboardError("empty observation history", field="obs_history", fix="pass at least one observation")
        vecs = [self.obs_vector(o) for o in obs_history][-self.contract.obs_horizon:]
        vecs = [vecs[0]] * (self.contract.obs_horizon - len(vecs)) + vecs
        if not np.all(np.isfinite(np.concatenate(vecs))):
            raise OnboardError("non-finite observation", field="obs_history", fix="feed finite observations")
        return unnormalize(self._sample_normalized(np.concatenate(vecs)), self._act_norm)

    # ---- closed loop ----------------------------------------------------------------------------
    def reset(self, state: Mapping | None = None, t: float = 0.0, seed: int | None = None) -> None:
        """Start an episode: clear history and plan; ramp the safety filter in from ``state``."""
        if self.kind == "mlp":
            self.reset_envs(None, [state] * self.num_envs if state is not None else None, t)
            self._step = 0
            return
        self._history: deque = deque(maxlen=self.contract.obs_horizon)
        self._plan: deque = deque()
        self._ensemble: list[tuple[int, np.ndarray]] = []   # (step planned at, executable actions)
        self._step = 0
        self._last_cmd: np.ndarray | None = None
        if seed is not None:
            self._rng = np.random.default_rng(seed)
        if self.safety is not None and state is not None and hasattr(self.safety, "reset"):
            self.safety.reset(state, t)

    def _executable(self, chunk: np.ndarray) -> np.ndarray:
        # The chunk's index obs_horizon-1 is the current step (training windows align the last
        # observed frame with that index); the steps before it are in the past.
        start = self.contract.obs_horizon - 1
        return chunk[start:]

    def _filter_chunk(self, part: np.ndarray, state, t: float) -> np.ndarray:
        if self.safety is None or not hasattr(self.safety, "filter_chunk"):
            return part
        return np.asarray(self.safety.filter_chunk(part, state, t), dtype=np.float64)

    def _hold_command(self, state) -> np.ndarray:
        if self._last_cmd is not None:
            return self._last_cmd.copy()
        if state is not None and "q" in state:
            return np.asarray(state["q"], dtype=np.float64).reshape(-1)[: self.action_dim].copy()
        return np.full(self.action_dim, np.nan)

    def act(self, obs: Mapping[str, np.ndarray], t: float | None = None, state: Mapping | None = None) -> np.ndarray:
        """The next command (action_dim,), filtered by the safety object when one is set."""
        t = self._step * self._dt_s if t is None else float(t)
        if self.kind == "mlp":
            if self.num_envs != 1:
                raise OnboardError(f"act() serves one robot; this runtime has num_envs={self.num_envs}",
                                   field="num_envs", fix="use act_batch() for batched simulation")
            one = {k: np.asarray(v, dtype=np.float32).reshape(1, -1) for k, v in obs.items()}
            safety = None if self.safety is None else [self.safety]
            cmd = self._act_rows(one, t, [state], safety)[0]
            self._step += 1
            return cmd
        vec = self.obs_vector(obs)
        if not np.all(np.isfinite(vec)):
            self.stats["nonfinite_obs"] += 1
            self.stats["holds"] += 1
            self._plan.clear()          # the plan was made for a world we can no longer see: replan later
            self._ensemble.clear()
            if self.safety is not None:
                # No fresh command: the filter holds (and its watchdog sees the gap).
                return self._emit(np.asarray(self.safety.filter(None, t, state), dtype=np.float64))
            cmd = self._hold_command(state)
            if not np.all(np.isfinite(cmd)):
                raise OnboardError("non-finite observation before any command, with no state to hold",
                                   field="obs", fix="pass state={'q': ...} or a safety filter")
            return self._emit(cmd)
        self._push(vec)

        if self.temporal_ensemble is None:
            if not self._plan:
                part = self._executable(self._chunk_from_history())[: self.contract.action_horizon]
                self._plan.extend(self._filter_chunk(part, state, t))
            cmd = np.asarray(self._plan.popleft(), dtype=np.float64)
        else:
            part = self._filter_chunk(self._executable(self._chunk_from_history()), state, t)
            self._ensemble.append((self._step, part))
            self._ensemble = [(s, p) for s, p in self._ensemble if self._step - s < len(p)]
            preds = np.stack([p[self._step - s] for s, p in self._ensemble])   # oldest first
            w = np.exp(-float(self.temporal_ensemble) * np.arange(len(preds)))
            cmd = (w[:, None] * preds).sum(0) / w.sum()
        if self.safety is not None:
            cmd = np.asarray(self.safety.filter(cmd, t, state), dtype=np.float64)
        return self._emit(cmd)

    def _emit(self, cmd: np.ndarray) -> np.ndarray:
        self._step += 1
        self.stats["commands"] += 1
        if np.all(np.isfinite(cmd)):
            self._last_cmd = cmd.copy()
        return cmd

    # ---- single-step MLP policies (ppo / residual) ------------------------------------------------
    def _init_mlp(self, num_envs: int) -> None:
        c = self.contract
        self.num_envs = int(num_envs)
        if self.num_envs < 1:
            raise OnboardError(f"num_envs must be >= 1, got {num_envs}", field="num_envs", fix="pass 1 or more")
        if self.safety is not None and not isinstance(self.safety, (list, tuple)) and self.num_envs != 1:
            raise OnboardError(f"one safety filter for num_envs={self.num_envs}", field="safety",
                               fix="pass a list with one filter per row (filters keep per-robot state)")
        self.obs_clip = float(c.extra.get("obs_clip", 10.0))
        self.residual = c.extra.get("residual")
        self.baseline = None
        if self.residual is not None:
            from sim.quad_controllers import GeometricController, GeometricGains   # numpy only
            r = self.residual
            gains = GeometricGains(**{k: (np.asarray(v, dtype=float) if isinstance(v, list) else v)
                                      for k, v in r["gains"].items()})
            self.baseline = GeometricController(r["mass_kg"], r["max_thrust_n"], r["dt_s"], self.num_envs, gains)
        self._last_rows = np.full((self.num_envs, self.action_dim), np.nan)
        self._step = 0
        self._last_cmd = None

    def standardize(self, obs: Mapping[str, np.ndarray]) -> np.ndarray:
        """Raw batched observation dict ((n, d) per key) -> standardized, clipped (n, obs_dim) float32."""
        parts = []
        n = None
        for k in self._keys:
            name = k["name"]
            v = obs.get(name, obs.get(f"observation.{name}")) if isinstance(obs, Mapping) else None
            if v is None:
                raise OnboardError(f"observation '{name}' is missing (got {sorted(obs) if isinstance(obs, Mapping) else type(obs).__name__})",
                                   field=f"observation.{name}", fix="feed every key the contract lists")
            d = int(np.prod(k["shape"]))
            v = np.asarray(v, dtype=np.float32)
            if v.size % d or (n is not None and v.size // d != n):
                raise OnboardError(f"observation '{name}' has {v.size} values, the contract says shape {k['shape']}"
                                   + (f" x {n} rows" if n else ""), field=f"observation.{name}",
                                   fix="check the observation builder")
            v = v.reshape(-1, d)
            n = v.shape[0]
            st = self._obs_norm.get(name)
            parts.append(normalize(v, st) if st else v)
        return np.clip(np.concatenate(parts, axis=1), -self.obs_clip, self.obs_clip).astype(np.float32)

    def act_normalized_batch(self, obs: Mapping[str, np.ndarray]) -> np.ndarray:
        """(n, action_dim) policy action in [-1, 1] (residual composed with the baseline), unfiltered.
        Advances the baseline controller's integrator, exactly as a control step does."""
        obs_std = self.standardize(obs)
        n = obs_std.shape[0]
        if n != self.num_envs:
            raise OnboardError(f"{n} observation rows for a runtime with num_envs={self.num_envs}",
                               field="num_envs", fix="construct PolicyRuntime(..., num_envs=n)")
        base = None
        if self.baseline is not None:
            raw = {k["name"]: np.asarray(obs.get(k["name"], obs.get(f"observation.{k['name']}")),
                                         dtype=float).reshape(n, -1) for k in self._keys}
            base = self.baseline.act(raw)
        t0 = time.perf_counter()
        out = self.artifact.policy(obs_std, base)
        self.stats["chunk_ms"].append((time.perf_counter() - t0) * 1e3)
        self.stats["chunks"] += 1
        return np.asarray(out, dtype=np.float64)

    def to_physical(self, action: np.ndarray) -> np.ndarray:
        """Normalized action(s) in [-1, 1] -> physical command(s) (contract's action.normalization)."""
        return unnormalize(np.clip(action, -1.0, 1.0), self._act_norm).astype(np.float64)

    def to_normalized(self, cmd: np.ndarray) -> np.ndarray:
        """Physical command(s) -> the normalized action the env/graph uses (inverse of ``to_physical``)."""
        return normalize(np.asarray(cmd, dtype=np.float64), self._act_norm).astype(np.float64)

    def reset_envs(self, idx=None, states=None, t: float = 0.0) -> None:
        """Restart rows ``idx`` (None = all): baseline integrators, and each row's filter ramps in from its state."""
        rows = np.arange(self.num_envs) if idx is None else np.atleast_1d(idx)
        if self.baseline is not None:
            self.baseline.reset(None if idx is None else rows)
        self._last_rows[rows] = np.nan
        filters = self._filters()
        if filters is not None and states is not None:
            for j, i in enumerate(rows):
                st = states[j] if len(states) == len(rows) else states[i]
                if st is not None and hasattr(filters[i], "reset"):
                    filters[i].reset(st, t)

    def _filters(self):
        if self.safety is None:
            return None
        if isinstance(self.safety, (list, tuple)):
            if len(self.safety) != self.num_envs:
                raise OnboardError(f"{len(self.safety)} safety filters for num_envs={self.num_envs}",
                                   field="safety", fix="pass one filter per row")
            return list(self.safety)
        return [self.safety]

    def act_batch(self, obs: Mapping[str, np.ndarray], t=None, states=None) -> np.ndarray:
        """(n, action_dim) physical commands for n rows; row i through filter i with states[i]."""
        tt = np.full(self.num_envs, self._step * self._dt_s) if t is None else np.broadcast_to(
            np.asarray(t, dtype=float), (self.num_envs,))
        out = self._act_rows(obs, tt, states, self._filters())
        self._step += 1
        return out

    def _act_rows(self, obs, t, states, filters) -> np.ndarray:
        n = self.num_envs
        tt = np.broadcast_to(np.asarray(t, dtype=float), (n,))
        states = [None] * n if states is None else states
        vec = self.standardize(obs)   # validates keys and shapes
        finite = np.all(np.isfinite(vec), axis=1)
        for k in self._keys:          # the clip hides inf: check the raw values too
            v = np.asarray(obs.get(k["name"], obs.get(f"observation.{k['name']}")), dtype=float).reshape(n, -1)
            finite &= np.all(np.isfinite(v), axis=1)
        if finite.all():
            cmd = self.to_physical(self.act_normalized_batch(obs))
        else:
            # Rows with a non-finite observation never reach the network (nor the baseline's integrator).
            # (Their rows are filled with the training mean so the batch still runs; the output is dropped.)
            safe = {}
            for k in self._keys:
                v = np.asarray(obs.get(k["name"], obs.get(f"observation.{k['name']}")), dtype=float).reshape(n, -1)
                st = self._obs_norm.get(k["name"]) or {}
                fill = np.asarray(st.get("mean", np.zeros(v.shape[1])), dtype=float)
                safe[k["name"]] = np.where(finite[:, None], v, fill[None, :])
            integ = None if self.baseline is None else self.baseline.integral.copy()
            with np.errstate(invalid="ignore", divide="ignore"):
                cmd = self.to_physical(self.act_normalized_batch(safe))
            if integ is not None:
                self.baseline.integral[~finite] = integ[~finite]
            cmd[~finite] = np.nan
        for i in np.flatnonzero(~finite):
            self.stats["nonfinite_obs"] += 1
            self.stats["holds"] += 1
        if filters is not None:
            for i in range(n):
                if finite[i]:
                    cmd[i] = np.asarray(filters[i].filter(cmd[i], float(tt[i]), states[i]), dtype=np.float64)
                else:   # no fresh command: the filter holds, and its watchdog sees the gap
                    cmd[i] = np.asarray(filters[i].filter(None, float(tt[i]), states[i]), dtype=np.float64)
        else:
            for i in np.flatnonzero(~finite):
                hold = self._last_rows[i]
                if not np.all(np.isfinite(hold)):
                    hold = self._hover_command()
                cmd[i] = hold
        good = np.all(np.isfinite(cmd), axis=1)
        self._last_rows[good] = cmd[good]
        self.stats["commands"] += n
        if n == 1 and good[0]:
            self._last_cmd = cmd[0].copy()
        return cmd

    def _hover_command(self) -> np.ndarray:
        """Hold without a filter: the baseline's nominal hover (or zero rates at mid thrust)."""
        out = np.zeros(self.action_dim)
        if self.residual is not None:
            out[0] = 9.81 * float(self.residual["mass_kg"])
        else:
            out[:] = self.to_physical(np.zeros(self.action_dim))
            out[1:] = 0.0
        return out

    def planned(self) -> list[np.ndarray]:
        """The commands still queued from the current chunk (already chunk-checked, not yet step-filtered),
        oldest first: what a JointTrajectoryController publisher sends ahead."""
        return [np.asarray(c, dtype=np.float64) for c in self._plan]

    def timing_summary(self) -> dict:
        ms = np.asarray(self.stats["chunk_ms"], dtype=float)
        out = {"chunks": self.stats["chunks"], "commands": self.stats["commands"],
               "nonfinite_obs": self.stats["nonfinite_obs"], "holds": self.stats["holds"],
               "num_steps": getattr(self, "num_steps", 1)}
        if ms.size:
            out.update({"chunk_ms_mean": float(ms.mean()), "chunk_ms_p50": float(np.percentile(ms, 50)),
                        "chunk_ms_p99": float(np.percentile(ms, 99)), "chunk_ms_max": float(ms.max())})
        return out
