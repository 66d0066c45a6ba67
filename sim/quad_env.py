"""Quadrotor task envs: hover at a setpoint, track waypoints or a figure-8, under wind gusts.

Owns the tasks (references, initial states, time limits, reward, crash
detection), the 100 Hz control loop over the 500 Hz plant of
``sim.quadrotor.QuadrotorBatch``, the true latency FIFOs, sensor noise and the
wind process. Two faces over one implementation:

- ``QuadVecEnv(num_envs, ...)``: batched, flat float32 observations
  ``(num_envs, obs_dim)``, auto-reset of finished drones (the final
  observation is in ``info["final_obs"]``). The PPO trainer uses this one.
- ``QuadEnv(...)``: a ``gymnasium.Env`` for one drone with dict observations
  (keys of ``obs_spec``), like ``sim.arm_env.ArmEnv``; no auto-reset.

Action ``(4,)`` in [-1, 1] (documented in ``action_spec``):
``thrust_n = (a0 + 1) / 2 * max_thrust_n`` (nominal max 0.596 N, hover at
a0 = -0.111), ``body_rates_rad_s = a[1:] * MAX_RATES_RAD_S`` (3.84, 3.84,
3.49 rad/s: the safety envelope's limits). Values outside [-1, 1] are clipped.

Observation (``obs_spec``, in this order): ``pos_error_m`` (3, measured
position - reference), ``vel_m_s`` (3, world), ``rot6d`` (6, first two
columns of the body-to-world rotation), ``body_rates_rad_s`` (3, gyro),
``ref_vel_m_s`` (3), ``ref_acc_m_s2`` (3, reference feed-forward),
``last_action`` (4, the previous normalized action). Measurements are delayed
by the observation FIFO and noisy when DR says so; the reference is "now".

Reward per step: ``max(0.5 - |e_p| - 0.05 |v - v_ref| - 0.01 |omega| - 0.02 |a - a_prev|^2, 0) + 0.1``;
a crash adds -10 and terminates. Crash = ground contact faster than
``CRASH_SPEED_M_S``, tilt above ``CRASH_TILT_RAD``, or leaving ``ARENA``.
A slow touch-down also terminates (``info["landed"]``) but is not a crash.

``plant``: ``mujoco`` (``sim.quadrotor``, the training plant) or ``pybullet``
(``sim.quad_pybullet``, an independent implementation for sim-to-sim); the
task, FIFOs, noise, wind and DR draws are the same for both.

DR is a plug-in (``dr``: False, True = ``config/randomization/crazyflie2x_<task>.yaml``,
a path, a ``QuadDRConfig`` or any object with ``new_episode(env, idx, rng)``);
the shipped randomizer lives in ``sim2real`` and is imported lazily.
Never imports policies.
"""
from __future__ import annotations

import math

import gymnasium as gym
import numpy as np

from onboard.errors import ConfigError
from sim.quad_controllers import MAX_RATES_RAD_S
from sim.quadrotor import QuadrotorBatch

TASKS = ("hover", "track")
TRAJECTORIES = ("figure8", "waypoints", "mixed")
CONTROL_HZ = 100.0
CRASH_SPEED_M_S = 0.5
CRASH_TILT_RAD = 1.2
ARENA = (np.array([-2.5, -2.5, 0.0]), np.array([2.5, 2.5, 3.0]))
FIFO_LEN = 32                      # physics steps (64 ms) of history for the delay lines
EPISODE_S = {"hover": 5.0, "track": 10.0}
FIG8 = {"center": (0.0, 0.0, 1.0), "a_m": 1.0, "b_m": 0.5, "period_s": 5.0, "ramp_s": 1.0}
N_WAYPOINTS, WAYPOINT_SEG_S = 6, 2.0
REGION = (np.array([-1.0, -1.0, 0.5]), np.array([1.0, 1.0, 1.5]))

OBS_SPEC = [
    {"name": "pos_error_m", "shape": [3], "units": "m, measured position - reference, world"},
    {"name": "vel_m_s", "shape": [3], "units": "m/s, world"},
    {"name": "rot6d", "shape": [6], "units": "1, first two columns of R (body to world), column-major"},
    {"name": "body_rates_rad_s", "shape": [3], "units": "rad/s, body FLU (gyro)"},
    {"name": "ref_vel_m_s", "shape": [3], "units": "m/s, world, reference feed-forward"},
    {"name": "ref_acc_m_s2", "shape": [3], "units": "m/s^2, world, reference feed-forward"},
    {"name": "last_action", "shape": [4], "units": "1, previous normalized action in [-1, 1]"},
]
OBS_DIM = sum(k["shape"][0] for k in OBS_SPEC)
OBS_SLICES = {}
_o = 0
for _k in OBS_SPEC:
    OBS_SLICES[_k["name"]] = slice(_o, _o + _k["shape"][0])
    _o += _k["shape"][0]


def action_spec(max_thrust_n: float) -> dict:
    return {"names": ["collective_thrust_n", "roll_rate_rad_s", "pitch_rate_rad_s", "yaw_rate_rad_s"],
            "normalized_range": [-1.0, 1.0],
            "physical_min": [0.0, *(-MAX_RATES_RAD_S).tolist()],
            "physical_max": [float(max_thrust_n), *MAX_RATES_RAD_S.tolist()],
            "mapping": "thrust = (a0 + 1) / 2 * max; rates = a[1:] * max (linear minmax)"}


def split_obs(obs: np.ndarray) -> dict:
    """Flat observation(s) (..., OBS_DIM) -> dict of named views."""
    return {name: obs[..., s] for name, s in OBS_SLICES.items()}


def join_obs(obs: dict) -> np.ndarray:
    return np.concatenate([np.asarray(obs[k["name"]], dtype=np.float32) for k in OBS_SPEC], axis=-1)


def _skew_exp(v: np.ndarray) -> np.ndarray:
    """(n, 3) rotation vectors -> (n, 3, 3) rotation matrices (Rodrigues)."""
    th = np.linalg.norm(v, axis=1)
    k = v / np.maximum(th, 1e-12)[:, None]
    K = np.zeros((len(v), 3, 3))
    K[:, 0, 1], K[:, 0, 2], K[:, 1, 2] = -k[:, 2], k[:, 1], -k[:, 0]
    K[:, 1, 0], K[:, 2, 0], K[:, 2, 1] = k[:, 2], -k[:, 1], k[:, 0]
    s, c = np.sin(th)[:, None, None], np.cos(th)[:, None, None]
    return np.eye(3)[None] + s * K + (1 - c) * K @ K


def _quintic(p0, p1, s):
    """Min-jerk blend from p0 to p1 at normalized time s in [0, 1]: pos and d/ds, d2/ds2."""
    s = np.clip(s, 0.0, 1.0)[:, None]
    d = p1 - p0
    return (p0 + d * (10 * s**3 - 15 * s**4 + 6 * s**5), d * (30 * s**2 - 60 * s**3 + 30 * s**4),
            d * (60 * s - 180 * s**2 + 120 * s**3))


def figure8(t_s) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Figure-8 offset from its centre, velocity and acceleration (n, 3) at episode times ``t_s`` (n,)."""
    t = np.atleast_1d(np.asarray(t_s, dtype=float))
    w, tr = 2 * math.pi / FIG8["period_s"], FIG8["ramp_s"]
    # Smooth start: the phase accelerates from rest over ramp_s, then runs at w.
    tau = np.where(t < tr, t**2 / (2 * tr), t - tr / 2)
    dtau = np.where(t < tr, t / tr, 1.0)
    ddtau = np.where(t < tr, 1.0 / tr, 0.0)
    th, dth, ddth = w * tau, w * dtau, w * ddtau
    a, b = FIG8["a_m"], FIG8["b_m"]
    shape = np.stack([a * np.sin(th), b * np.sin(2 * th), 0 * th], 1)
    d1 = np.stack([a * np.cos(th), 2 * b * np.cos(2 * th), 0 * th], 1)
    d2 = np.stack([-a * np.sin(th), -4 * b * np.sin(2 * th), 0 * th], 1)
    return shape, d1 * dth[:, None], d1 * ddth[:, None] + d2 * (dth**2)[:, None]


def observation_from_state(pos, vel, rot, gyro, ref_pos, ref_vel, ref_acc, last_action) -> np.ndarray:
    """The policy observation (n, OBS_DIM) float32 from measured state and reference, in ``OBS_SPEC`` order.
    ``rot``: (n, 3, 3) body-to-world. The sim env and the ROS policy node both build it here."""
    n = len(pos)
    rot6d = np.asarray(rot)[:, :, :2].transpose(0, 2, 1).reshape(n, 6)
    return np.concatenate([np.asarray(pos) - ref_pos, vel, rot6d, gyro, ref_vel, ref_acc, last_action],
                          axis=1).astype(np.float32)


class QuadVecEnv:
    """``num_envs`` quadrotors flying one task, batched. See the module docstring."""

    def __init__(self, num_envs: int = 1, task: str = "hover", trajectory: str | None = None, dr=False,
                 seed: int = 0, robot: str = "crazyflie2x", ground_effect: bool = True,
                 episode_s: float | None = None, plant: str = "mujoco"):
        if task not in TASKS:
            raise ConfigError(f"unknown quadrotor task '{task}'", field="task", fix=f"use one of {list(TASKS)}")
        trajectory = trajectory or ("figure8" if task == "track" else None)
        if task == "track" and trajectory not in TRAJECTORIES:
            raise ConfigError(f"unknown trajectory '{trajectory}'", field="trajectory",
                              fix=f"use one of {list(TRAJECTORIES)}")
        self.num_envs, self.task, self.trajectory = int(num_envs), task, trajectory
        if plant == "mujoco":
            self.sim = QuadrotorBatch(self.num_envs, robot=robot, ground_effect=ground_effect)
        elif plant == "pybullet":    # the independent implementation (sim-to-sim)
            from sim.quad_pybullet import PyBulletQuadBatch
            self.sim = PyBulletQuadBatch(self.num_envs, robot=robot, ground_effect=ground_effect)
        else:
            raise ConfigError(f"unknown quadrotor plant '{plant}'", field="plant", fix="use mujoco or pybullet")
        self.plant = plant
        self.substeps = int(round(1.0 / (CONTROL_HZ * self.sim.dt_s)))
        self.dt_s = self.substeps * self.sim.dt_s
        self.max_steps = int(round((episode_s or EPISODE_S[task]) / self.dt_s))
        self.max_thrust_n = self.sim.nominal.max_thrust_n
        self.hover_action = np.array([2 * self.sim.nominal.weight_n / self.max_thrust_n - 1, 0, 0, 0])
        self.obs_spec = [dict(k) for k in OBS_SPEC]
        self.action_spec = action_spec(self.max_thrust_n)
        self.obs_dim, self.action_dim = OBS_DIM, 4
        self.randomizer = self._make_randomizer(dr, task)
        self._seed_all(seed)
        n = self.num_envs
        # Disturbance and sensor knobs (the randomizer writes these per episode).
        self.action_delay_steps = np.zeros(n, int)
        self.obs_delay_steps = np.zeros(n, int)
        self.pos_noise_std, self.vel_noise_std, self.att_noise_std = np.zeros(n), np.zeros(n), np.zeros(n)
        self.wind_mean = np.zeros((n, 3))
        self.gust = np.zeros((n, 3))
        self.gust_std, self.gust_tau = np.zeros(n), np.ones(n)
        # Delay lines at physics rate: commands (thrust, rates) and measured state (pos, vel, rot6d, gyro).
        self._cmd_fifo = np.zeros((FIFO_LEN, n, 4))
        self._state_fifo = np.zeros((FIFO_LEN, n, 15))
        self._k = 0                                   # physics-step counter (FIFO write index)
        # Episode state.
        self.t_step = np.zeros(n, int)
        self.last_action = np.zeros((n, 4))
        self._ref_kind = np.zeros(n, int)             # 0 hover, 1 figure8, 2 waypoints
        self._center = np.zeros((n, 3))
        self._waypoints = np.zeros((n, N_WAYPOINTS + 1, 3))
        self.episode_return = np.zeros(n)
        self.sq_err_sum = np.zeros(n)

    # ---- configuration ------------------------------------------------------------------------
    @staticmethod
    def _make_randomizer(dr, task):
        if dr is False or dr is None:
            return None
        if hasattr(dr, "new_episode"):
            return dr
        import importlib   # sim2real sits above sim: resolved only when DR is asked for
        rnd = importlib.import_module("sim2real.quad_randomization")
        if dr is True:
            cfg = rnd.load_quad_dr_config(task=task)
        elif isinstance(dr, rnd.QuadDRConfig):
            cfg = dr
        else:
            cfg = rnd.load_quad_dr_config(dr)
        return rnd.QuadDomainRandomizer(cfg)

    def set_disturbances(self, idx, *, action_delay_steps=None, obs_delay_steps=None, pos_noise_std=None,
                         vel_noise_std=None, att_noise_std=None, wind_mean_m_s=None, gust_std_m_s=None,
                         gust_tau_s=None) -> None:
        """Per-drone latency [physics steps], noise stds and wind (the DR plug-in calls this)."""
        for name, val in (("action_delay_steps", action_delay_steps), ("obs_delay_steps", obs_delay_steps),
                          ("pos_noise_std", pos_noise_std), ("vel_noise_std", vel_noise_std),
                          ("att_noise_std", att_noise_std), ("wind_mean", wind_mean_m_s),
                          ("gust_std", gust_std_m_s), ("gust_tau", gust_tau_s)):
            if val is not None:
                getattr(self, name)[idx] = val
        if np.any(self.action_delay_steps >= FIFO_LEN) or np.any(self.obs_delay_steps >= FIFO_LEN):
            raise ConfigError(f"delay above {FIFO_LEN - 1} physics steps", field="latency",
                              fix=f"keep latencies under {(FIFO_LEN - 1) * self.sim.dt_s * 1e3:.0f} ms")

    # ---- references ---------------------------------------------------------------------------
    def reference(self, t_s: np.ndarray):
        """(pos, vel, acc) references (n, 3) at episode times ``t_s`` (n,)."""
        n = self.num_envs
        pos, vel, acc = self._center.copy(), np.zeros((n, 3)), np.zeros((n, 3))
        f8 = self._ref_kind == 1
        if f8.any():
            shape, vel[f8], acc[f8] = figure8(t_s[f8])
            pos[f8] += shape
        wp = self._ref_kind == 2
        if wp.any():
            seg = np.minimum((t_s[wp] // WAYPOINT_SEG_S).astype(int), N_WAYPOINTS - 1)
            s = t_s[wp] / WAYPOINT_SEG_S - seg
            rows = np.flatnonzero(wp)
            p, dp, ddp = _quintic(self._waypoints[rows, seg], self._waypoints[rows, seg + 1], s)
            pos[wp], vel[wp], acc[wp] = p, dp / WAYPOINT_SEG_S, ddp / WAYPOINT_SEG_S**2
        return pos, vel, acc

    # ---- reset --------------------------------------------------------------------------------
    def _seed_all(self, seed: int) -> None:
        """Per-slot generators for episode draws; one more for the per-step noise and gusts."""
        self.seed = seed
        self._rngs = [np.random.default_rng([seed, i]) for i in range(self.num_envs)]
        self.sim.rng = np.random.default_rng([seed, self.num_envs, 0x51])

    def reset(self, seed: int | None = None):
        if seed is not None:
            self._seed_all(seed)
        self._reset_envs(np.arange(self.num_envs))
        return self._observe(), {}

    def _reset_envs(self, idx: np.ndarray) -> None:
        n = len(idx)
        if self.randomizer is not None:
            for i in idx:   # one generator per env, so env i's draws never depend on the others
                self.randomizer.new_episode(self, np.array([i]), self._rngs[i])
        pos0, quat0, vel0 = np.zeros((n, 3)), np.tile([1.0, 0, 0, 0], (n, 1)), np.zeros((n, 3))
        for j, i in enumerate(idx):
            rng = self._rngs[i]
            if self.task == "hover":
                kind = 0
                self._center[i] = rng.uniform(*REGION)
                pos0[j] = self._center[i] + rng.uniform(-0.3, 0.3, 3)
                vel0[j] = rng.uniform(-0.3, 0.3, 3)
                rv = rng.uniform(-0.2, 0.2, 3)
                ang = np.linalg.norm(rv)
                quat0[j] = np.concatenate([[math.cos(ang / 2)], math.sin(ang / 2) * rv / max(ang, 1e-12)])
            else:
                kind = {"figure8": 1, "waypoints": 2}.get(self.trajectory) or int(rng.integers(1, 3))
                if kind == 1:
                    self._center[i] = FIG8["center"]
                    pos0[j] = self._center[i] + rng.uniform(-0.05, 0.05, 3)
                else:
                    self._waypoints[i] = rng.uniform(*REGION, size=(N_WAYPOINTS + 1, 3))
                    self._center[i] = 0.0
                    pos0[j] = self._waypoints[i, 0] + rng.uniform(-0.05, 0.05, 3)
            self._ref_kind[i] = kind
            self.gust[i] = rng.standard_normal(3) * self.gust_std[i]
        self.sim.reset_drones(idx, pos0, quat0, vel0)
        hover_cmd = np.array([self.sim.nominal.weight_n, 0.0, 0.0, 0.0])
        self._cmd_fifo[:, idx] = hover_cmd
        self._state_fifo[:, idx] = self._measure()[idx]
        self.t_step[idx] = 0
        self.last_action[idx] = self.hover_action
        self.episode_return[idx] = 0.0
        self.sq_err_sum[idx] = 0.0
        self.sim.wind_m_s[idx] = self.wind_mean[idx] + self.gust[idx]

    # ---- measurement & observation ------------------------------------------------------------
    def _measure(self) -> np.ndarray:
        """True state at this physics step (n, 15): pos, vel, rot6d, body rates."""
        rot = self.sim.rotation()
        rot6d = rot[:, :, :2].transpose(0, 2, 1).reshape(self.num_envs, 6)
        return np.concatenate([self.sim.pos, self.sim.vel, rot6d, self.sim.omega_body], axis=1)

    def _observe(self) -> np.ndarray:
        m = self.measured()
        pref, vref, aref = self.reference(self.t_step * self.dt_s)
        obs = np.concatenate([m[:, 0:3] - pref, m[:, 3:6], m[:, 6:12], m[:, 12:15], vref, aref,
                              self.last_action], axis=1)
        return obs.astype(np.float32)

    def measured(self) -> np.ndarray:
        """What the sensors report now (n, 15): delayed (observation FIFO) and noisy (DR) position,
        world velocity, rot6d and gyro. Draws fresh noise on every call."""
        n = self.num_envs
        rows = (self._k - self.obs_delay_steps) % FIFO_LEN
        m = self._state_fifo[rows, np.arange(n)].copy()
        rng = self.sim.rng
        if np.any(self.pos_noise_std > 0):
            m[:, 0:3] += rng.standard_normal((n, 3)) * self.pos_noise_std[:, None]
            m[:, 3:6] += rng.standard_normal((n, 3)) * self.vel_noise_std[:, None]
        if np.any(self.att_noise_std > 0):
            r = m[:, 6:12].reshape(n, 2, 3).transpose(0, 2, 1)
            r = _skew_exp(rng.standard_normal((n, 3)) * self.att_noise_std[:, None]) @ r
            m[:, 6:12] = r.transpose(0, 2, 1).reshape(n, 6)
        m[:, 12:15] += self.sim.gyro_bias
        if np.any(self.sim.gyro_noise_std > 0):
            m[:, 12:15] += rng.standard_normal((n, 3)) * self.sim.gyro_noise_std[:, None]
        return m

    # ---- step ---------------------------------------------------------------------------------
    def action_to_command(self, action: np.ndarray) -> np.ndarray:
        """Normalized (n, 4) -> physical (n, 4) = thrust [N], body rates [rad/s]."""
        a = np.clip(action, -1.0, 1.0)
        return np.concatenate([(a[:, :1] + 1.0) * 0.5 * self.max_thrust_n, a[:, 1:] * MAX_RATES_RAD_S], 1)

    def step(self, action):
        action = np.clip(np.asarray(action, dtype=float).reshape(self.num_envs, 4), -1.0, 1.0)
        cmd = self.action_to_command(action)
        n, ar = self.num_envs, np.arange(self.num_envs)
        # Wind gusts: Ornstein-Uhlenbeck, updated at the control rate.
        dt = self.dt_s
        decay = np.exp(-dt / self.gust_tau)[:, None]
        self.gust = self.gust * decay + self.gust_std[:, None] * np.sqrt(1 - decay**2) * \
            self.sim.rng.standard_normal((n, 3))
        self.sim.wind_m_s = self.wind_mean + self.gust
        for _ in range(self.substeps):
            self._k += 1
            self._cmd_fifo[self._k % FIFO_LEN] = cmd
            applied = self._cmd_fifo[(self._k - self.action_delay_steps) % FIFO_LEN, ar]
            self.sim.set_command(applied[:, 0], applied[:, 1:])
            self.sim.step()
            self._state_fifo[self._k % FIFO_LEN] = self._measure()
        self.t_step += 1
        # True (not measured) errors score the episode.
        pref, vref, _ = self.reference(self.t_step * dt)
        e_p = np.linalg.norm(self.sim.pos - pref, axis=1)
        e_v = np.linalg.norm(self.sim.vel - vref, axis=1)
        rate = np.linalg.norm(self.sim.omega_body, axis=1)
        da = np.sum((action - self.last_action) ** 2, axis=1)
        # Floored at 0 plus an alive bonus, so surviving always beats crashing (a from-scratch
        # policy far from the reference must not learn that ending the episode pays).
        reward = np.maximum(0.5 - e_p - 0.05 * e_v - 0.01 * rate - 0.02 * da, 0.0) + 0.1
        self.last_action = action
        self.sq_err_sum += e_p**2
        tilt = np.arccos(np.clip(self.sim.rotation()[:, 2, 2], -1.0, 1.0))
        speed = np.linalg.norm(self.sim.vel, axis=1)
        ground = self.sim.on_ground()
        out = np.any(self.sim.pos < ARENA[0], axis=1) | np.any(self.sim.pos > ARENA[1], axis=1)
        crash = (ground & (speed > CRASH_SPEED_M_S)) | (tilt > CRASH_TILT_RAD) | out | \
            ~np.all(np.isfinite(self.sim.pos), axis=1)
        landed = ground & ~crash
        terminated = crash | landed
        truncated = (self.t_step >= self.max_steps) & ~terminated
        reward = reward - 10.0 * crash
        self.episode_return += reward
        obs = self._observe()
        info = {"crash": crash, "landed": landed, "pos_error_m": e_p, "tilt_rad": tilt}
        done = terminated | truncated
        if done.any():
            idx = np.flatnonzero(done)
            info["final_obs"] = obs[idx].copy()
            info["done_idx"] = idx
            info["episode_return"] = self.episode_return[idx].copy()
            info["episode_rmse_m"] = np.sqrt(self.sq_err_sum[idx] / np.maximum(self.t_step[idx], 1))
            info["episode_steps"] = self.t_step[idx].copy()
            self._reset_envs(idx)
            obs[idx] = self._observe()[idx]
        return obs, reward.astype(np.float32), terminated, truncated, info

    def true_reference_error(self) -> np.ndarray:
        pref, _, _ = self.reference(self.t_step * self.dt_s)
        return self.sim.pos - pref


class QuadEnv(gym.Env):
    """One quadrotor, gymnasium API, dict observations (keys of ``obs_spec``); no auto-reset."""

    metadata = {"render_modes": []}

    def __init__(self, task: str = "hover", trajectory: str | None = None, dr=False, seed: int = 0, **kw):
        self.vec = QuadVecEnv(1, task=task, trajectory=trajectory, dr=dr, seed=seed, **kw)
        self.obs_spec = self.vec.obs_spec
        self.action_spec = self.vec.action_spec
        self.task, self.dt_s = task, self.vec.dt_s
        self.action_space = gym.spaces.Box(-1.0, 1.0, (4,), np.float32)
        self.observation_space = gym.spaces.Dict(
            {k["name"]: gym.spaces.Box(-np.inf, np.inf, tuple(k["shape"]), np.float32) for k in OBS_SPEC})
        self._done = False

    @property
    def sim(self) -> QuadrotorBatch:
        return self.vec.sim

    def reset(self, *, seed: int | None = None, options=None):
        super().reset(seed=seed)
        obs, _ = self.vec.reset(seed=seed)
        self._done = False
        return {k: v[0].copy() for k, v in split_obs(obs).items()}, {}

    def step(self, action):
        if self._done:
            raise gym.error.ResetNeeded("call reset() after the episode ended")
        a = np.asarray(action, dtype=float).reshape(1, 4)
        # Step without the vec env's auto-reset: the final observation is the one returned.
        obs, r, term, trunc, info = self.vec.step(a)
        if "final_obs" in info:
            obs = info["final_obs"]
            self._done = True
        out = {k: v[0].copy() for k, v in split_obs(obs).items()}
        i = {k: (v[0] if isinstance(v, np.ndarray) and v.shape[:1] == (1,) else v) for k, v in info.items()}
        return out, float(r[0]), bool(term[0]), bool(trunc[0]), i
