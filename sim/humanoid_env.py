"""G1 legs task envs: ``stand`` (hold the default posture, recover from pushes) and ``walk``
(track commanded vx, vy, yaw rate), batched.

Owns the tasks (commands, initial states, episode length, rewards in the
legged_gym style, fall detection), the 50 Hz policy loop over the 500 Hz
physics + numpy PD of ``sim.g1_model`` (``physics_dt_s``: a coarser 4-5 ms
training sim), the observation builder, the true
delay lines (FIFOs at physics resolution for PD targets and for measured
state), observation noise and pushes.

``HumanoidVecEnv(num_envs, task, dr, seed, history)``: ``num_envs`` robots in one
MuJoCo world (one ``mj_step`` for all), flat float32 observations, auto-reset of
finished robots (their final observations are in ``info``). Returns
``obs`` (n, history * 47), the actor input, and ``info["critic_obs"]``
(n, CRITIC_DIM), the privileged observation for an asymmetric critic.

Observation frame (47, ``OBS_SPEC``, unitree_rl_gym G1 convention): base angular
velocity x0.25 (body), projected gravity (body), velocity command x[2, 2, 0.25],
joint pos - default, joint vel x0.05, last action, sin/cos of the gait phase
(``gait_period_s``, 0.8 s by default). The actor sees the last ``history`` frames, oldest first.
Measurements are delayed by the observation FIFO and noisy when DR says so.

Action (12,): joint offsets; PD target = default_pose + 0.25 * action (clipped
to +-ACTION_CLIP). Torque limits apply in the PD.

Gantry starts (``gantry_starts``, a fraction of episodes): the pelvis is held at
its start pose for U(``gantry_s``) seconds while the policy acts, then let go,
as on the robot and in ``humanoid_sim_node`` when the policy goes ACTIVE before
the gantry releases.

DR is a plug-in (``dr``: False, True = ``config/randomization/g1_12dof_<task>.yaml``,
a path, a config, or any object with ``new_episode(env, idx, rng)``); the
shipped randomizer lives in ``sim2real.humanoid_randomization``, imported
lazily. Never imports policies.
"""
from __future__ import annotations

import contextlib
import math

import mujoco
import numpy as np

from onboard.errors import ConfigError, ContractError
from sim.g1_model import (PHYSICS_DT_S, POLICY_DT_S, RobotIndex, build_model, load_description,
                          quat_rotate_inverse, rpy_from_quat, standing_height_m)

TASKS = ("stand", "walk")
ACTION_SCALE = 0.25
ACTION_CLIP = 10.0
GAIT_PERIOD_S = 0.8                    # s, one left + one right step (unitree_rl_gym's G1); the default gait period
GAIT_PERIOD_RANGE_S = (0.3, 1.2)      # gait periods a policy may be trained with (check_gait_period)
CMD_SCALE = np.array([2.0, 2.0, 0.25])
FIFO_LEN = 16                          # physics steps (32 ms) of history for the delay lines
EPISODE_S = 20.0
FALL_HEIGHT_M = 0.45                   # pelvis below this: fallen
FALL_TILT_RAD = 0.6                    # pelvis tilt above this: fallen (= the safety envelope's roll/pitch limit)
BASE_HEIGHT_TARGET_M = 0.78
WALK_COMMANDS = {"vx": (-0.3, 0.8), "vy": (-0.3, 0.3), "yaw": (-0.5, 0.5), "resample_s": 10.0}
FOOT_SWING_HEIGHT_M = 0.08

OBS_SPEC = [
    {"name": "base_ang_vel", "shape": [3], "units": "rad/s x0.25, body frame (IMU gyro)"},
    {"name": "projected_gravity", "shape": [3], "units": "1, unit gravity in the body frame"},
    {"name": "velocity_command", "shape": [3], "units": "vx, vy [m/s] x2, yaw rate [rad/s] x0.25"},
    {"name": "joint_pos_rel", "shape": [12], "units": "rad, q - default_pose"},
    {"name": "joint_vel", "shape": [12], "units": "rad/s x0.05"},
    {"name": "last_action", "shape": [12], "units": "1, previous action (target = default + 0.25 a)"},
    {"name": "gait_phase", "shape": [2], "units": "sin, cos of 2 pi t / T, T = the gait period (extra.gait_period_s)"},
]
FRAME_DIM = sum(k["shape"][0] for k in OBS_SPEC)          # 47
PRIVILEGED_SPEC = [
    {"name": "base_lin_vel", "shape": [3], "units": "m/s x2, body frame"},
    {"name": "base_height", "shape": [1], "units": "m - 0.78"},
    {"name": "foot_contact", "shape": [2], "units": "1, left/right"},
    {"name": "friction", "shape": [1], "units": "1"},
    {"name": "added_mass", "shape": [1], "units": "kg / 3"},
    {"name": "com_offset", "shape": [3], "units": "m x10"},
    {"name": "kp_scale", "shape": [12], "units": "1 - 1"},
    {"name": "push_vel", "shape": [2], "units": "m/s, last push (decays with 1 s time constant)"},
    {"name": "delays", "shape": [2], "units": "action, observation delay [physics steps] / 10"},
]
CRITIC_DIM = FRAME_DIM + sum(k["shape"][0] for k in PRIVILEGED_SPEC)

REWARD_SCALES = {          # legged_gym / unitree_rl_gym G1 style; multiplied by the policy dt
    "tracking_lin_vel": 1.0, "tracking_ang_vel": 0.5, "lin_vel_z": -2.0, "ang_vel_xy": -0.05,
    "orientation": -1.0, "base_height": -10.0, "torques": -1e-5, "dof_acc": -2.5e-7, "dof_vel": -1e-3,
    "action_rate": -0.01, "dof_pos_limits": -5.0, "alive": 0.15, "hip_pos": -1.0,
    "contact": 0.18, "feet_swing_height": -20.0, "knee_reference": 1.0,
}
TERMINATION_PENALTY = -5.0
TRACKING_SIGMA = 0.25


def check_gait_period(period_s) -> float:
    """The gait period [s] (one left + one right step), or a ConfigError naming ``gait_period_s``."""
    p = float(period_s)
    if not GAIT_PERIOD_RANGE_S[0] <= p <= GAIT_PERIOD_RANGE_S[1]:
        raise ConfigError(f"gait_period_s {period_s} outside {list(GAIT_PERIOD_RANGE_S)} s", field="gait_period_s",
                          fix=f"pass a gait period between {GAIT_PERIOD_RANGE_S[0]} and {GAIT_PERIOD_RANGE_S[1]} s "
                              f"(unitree_rl_gym's G1: {GAIT_PERIOD_S})")
    return p


def gait_period_of_contract(contract, source: str | None = None) -> float:
    """The gait period [s] an artifact's policy was trained with (``extra.gait_period_s``; 0.8 s for
    artifacts written before it was a choice); a bad value is a ContractError naming the file and field."""
    p = (contract.extra or {}).get("gait_period_s", GAIT_PERIOD_S)
    try:
        return check_gait_period(p)
    except (ConfigError, TypeError, ValueError):
        raise ContractError(f"gait period {p!r} is not a number in {list(GAIT_PERIOD_RANGE_S)} s", file=source,
                            field="extra.gait_period_s",
                            fix="re-export it from its checkpoint (onboard export DIR/policy.pt --out "
                                "DIR/policy.onnx), which writes the period it was trained with") from None


def build_frame(ang_vel, gravity, q, dq, command, last_action, t_s, default_pose,
                period_s: float = GAIT_PERIOD_S) -> np.ndarray:
    """The 47-D observation frame from measured quantities (n, .): the one observation builder
    (MuJoCo env, PyBullet sim2sim, robot nodes). ``period_s``: the policy's gait period (its contract's
    ``extra.gait_period_s``)."""
    phase = 2 * math.pi * np.asarray(t_s, float) / period_s
    return np.concatenate([ang_vel * 0.25, gravity, command * CMD_SCALE, q - default_pose, dq * 0.05,
                           last_action, np.sin(phase)[:, None], np.cos(phase)[:, None]], axis=1).astype(np.float32)


# Stepping-in-place reference, per unit amplitude: row 0 = the left leg's swing, row 1 = the right's. Hip
# pitch -1, knee +2, ankle pitch -1 keeps the sole level and lifts it. The left leg swings while
# sin(phase) < 0, the right while > 0: lift = (relu(-sin), relu(sin)) @ GAIT_LIFT_PATTERN. Used by the
# actor's prior (policies.humanoid_ppo.GaitReferenceActor) and the env's knee_reference reward.
GAIT_LIFT_PATTERN = np.zeros((2, 12))
GAIT_LIFT_PATTERN[0, [0, 3, 4]] = GAIT_LIFT_PATTERN[1, [6, 9, 10]] = [-1.0, 2.0, -1.0]
KNEES = [3, 9]
CLOCK_RATE_RANGE = (0.5, 2.5)          # clock_action: the gait clock runs at 0.5x to 2.5x real time


def physics_substeps(physics_dt_s: float) -> int:
    """Physics steps per 20 ms policy step; a step that does not divide it (or is out of 0.5-10 ms) is a
    ConfigError naming ``physics_dt_s`` and the fix."""
    dt = float(physics_dt_s)
    sub = POLICY_DT_S / dt if dt > 0 else 0.0
    if not 0.0005 <= dt <= 0.01 or abs(sub - round(sub)) > 1e-6:
        raise ConfigError(f"physics_dt_s {physics_dt_s} does not divide the {POLICY_DT_S * 1e3:.0f} ms policy step",
                          field="physics_dt_s", fix="pass --physics-dt 0.002 (reference), 0.004 or 0.005")
    return int(round(sub))


def clock_rate(a) -> np.ndarray:
    """The gait clock's rate for the clock action ``a`` (a = 0: real time): 1 + a / 2, clipped to
    CLOCK_RATE_RANGE."""
    return np.clip(1.0 + 0.5 * np.asarray(a, float), *CLOCK_RATE_RANGE)


def knee_reference(t_s, amplitude_rad: float, default_pose, period_s: float = GAIT_PERIOD_S) -> np.ndarray:
    """(n, 2) left/right knee angle [rad] of the stepping-in-place reference at time ``t_s``."""
    sin = np.sin(2 * math.pi * np.asarray(t_s, float) / period_s)
    lift = np.stack([np.maximum(-sin, 0), np.maximum(sin, 0)], -1)
    return np.asarray(default_pose)[KNEES] + amplitude_rad * lift @ GAIT_LIFT_PATTERN[:, KNEES]


CAPTURE_SIGMA_M = 0.1       # capture_step reward: a touchdown this far from its target scores exp(-1)


def capture_step_reward(foot_xy, base_xy, yaw, v_xy, touchdown, foot_offsets) -> np.ndarray:
    """(n,) the capture-step shaping term: each foot that touches down scores exp(-d^2 / sigma^2), d its
    distance from where it should land to stop the body: its nominal stance spot (``foot_offsets`` (2, 2)
    from the pelvis, heading frame) moved by the instantaneous capture point offset v sqrt(h / g) of a
    linear inverted pendulum of height BASE_HEIGHT_TARGET_M. foot_xy (n, 2, 2), base_xy (n, 2), yaw (n,),
    v_xy (n, 2) world frame, touchdown (n, 2) bool."""
    c, s = np.cos(yaw), np.sin(yaw)
    rot = np.stack([np.stack([c, -s], -1), np.stack([s, c], -1)], -2)          # (n, 2, 2) heading -> world
    spot = base_xy[:, None] + np.einsum("nij,fj->nfi", rot, np.asarray(foot_offsets, float))
    target = spot + v_xy[:, None] * math.sqrt(BASE_HEIGHT_TARGET_M / 9.81)
    d2 = np.sum((np.asarray(foot_xy) - target) ** 2, -1)
    return np.sum(np.asarray(touchdown) * np.exp(-d2 / CAPTURE_SIGMA_M ** 2), 1)


def history_layout(history: int):
    """(perm, slices): flat (history * 47) frame-major -> key-major index, and each key's slice."""
    perm, slices, o, a = [], {}, 0, 0
    for k in OBS_SPEC:
        d = k["shape"][0]
        perm += [h * FRAME_DIM + a + j for h in range(history) for j in range(d)]
        slices[k["name"]] = slice(o, o + history * d)
        o, a = o + history * d, a + d
    return np.asarray(perm), slices


# ---- left/right mirror symmetry (reflection in the sagittal x-z plane) ------------------------------
# Per leg: hip pitch, hip roll, hip yaw, knee, ankle pitch, ankle roll. Mirroring swaps the legs and flips
# the roll and yaw joints; vectors flip y, angular velocities flip x and z; the gait phase moves half a period.
_LEG_SIGN = np.array([1.0, -1.0, -1.0, 1.0, 1.0, -1.0])
JOINT_MIRROR = (np.r_[6:12, 0:6], np.r_[_LEG_SIGN, _LEG_SIGN])


def _signed_perm(blocks) -> tuple[np.ndarray, np.ndarray]:
    perm, sign, o = [], [], 0
    for idx, sg in blocks:
        perm += list(o + np.asarray(idx))
        sign += list(sg)
        o += len(idx)
    return np.asarray(perm), np.asarray(sign, np.float32)


_VEC_Y, _ANG = (np.arange(3), [1.0, -1.0, 1.0]), (np.arange(3), [-1.0, 1.0, -1.0])
FRAME_MIRROR = _signed_perm([_ANG, _VEC_Y, (np.arange(3), [1.0, -1.0, -1.0]), JOINT_MIRROR, JOINT_MIRROR,
                             JOINT_MIRROR, (np.arange(2), [-1.0, -1.0])])
CRITIC_MIRROR = _signed_perm([(FRAME_MIRROR[0], FRAME_MIRROR[1]), _VEC_Y, ([0], [1.0]), ([1, 0], [1.0, 1.0]),
                              ([0], [1.0]), ([0], [1.0]), _VEC_Y, (np.r_[6:12, 0:6], np.ones(12)),
                              (np.arange(2), [1.0, -1.0]), (np.arange(2), [1.0, 1.0])])


def actor_mirror(history: int) -> tuple[np.ndarray, np.ndarray]:
    """Signed permutation of the key-major actor observation: ``mirrored = sign * obs[..., perm]``."""
    layout, _ = history_layout(history)                 # actor index -> frame-major index
    where = np.empty_like(layout)
    where[layout] = np.arange(len(layout))               # frame-major index -> actor index
    h, j = np.divmod(layout, FRAME_DIM)
    return where[h * FRAME_DIM + FRAME_MIRROR[0][j]], FRAME_MIRROR[1][j]


def mirror(x: np.ndarray, signed_perm) -> np.ndarray:
    perm, sign = signed_perm
    return (np.asarray(x)[..., perm] * sign).astype(np.float32)


GANTRY_S = (0.0, 1.5)           # gantry starts: how long the pelvis is held [s], uniform


class HumanoidVecEnv:
    """``num_envs`` G1 leg robots on one task, batched. See the module docstring."""

    def __init__(self, num_envs: int = 1, task: str = "stand", dr=False, seed: int = 0, history: int = 5,
                 episode_s: float = EPISODE_S, reward_scales: dict | None = None, step_in_place: bool = False,
                 gait_reference: float = 0.0, capture_reward: float = 0.0, gantry_starts: float = 0.0,
                 gantry_s: tuple = GANTRY_S, physics_dt_s: float = PHYSICS_DT_S, clock_action: bool = False,
                 gait_period_s: float = GAIT_PERIOD_S):
        if task not in TASKS:
            raise ConfigError(f"unknown humanoid task '{task}'", field="task", fix=f"use one of {list(TASKS)}")
        if int(history) < 1:
            raise ConfigError(f"history {history} < 1", field="history", fix="use 1 or more frames")
        # physics_dt_s: the physics and PD step. 2 ms is the reference sim (evaluation, sim2sim, the robot
        # nodes); a coarser step (4 or 5 ms, legged_gym's 200 Hz) is a cheaper training sim, a divisor of 20 ms.
        substeps = physics_substeps(physics_dt_s)
        # gait_period_s: one left + one right step of the gait clock (the observation's phase, the stance
        # windows of the contact reward, the knee reference); a policy keeps the period it was trained with.
        self.gait_period_s = check_gait_period(gait_period_s)
        self.num_envs, self.task, self.history = int(num_envs), task, int(history)
        self.physics_dt_s = float(physics_dt_s)
        self.desc = load_description()
        self.model = build_model(self.num_envs, self.desc)
        self.model.opt.timestep = self.physics_dt_s
        self.data = mujoco.MjData(self.model)
        self.ix = RobotIndex.of(self.model, self.num_envs, self.desc)
        n, m = self.num_envs, self.model
        # Robots are added one after the other, so their state is a regular (n, k) layout: use views.
        nq, nv = 19, 18
        assert m.nq == n * nq and m.nv == n * nv and m.nu == n * 12
        assert np.array_equal(self.ix.qpos_joint, np.arange(n)[:, None] * nq + 7 + np.arange(12))
        self.qpos = self.data.qpos.reshape(n, nq)
        self.qvel = self.data.qvel.reshape(n, nv)
        self.qacc = self.data.qacc.reshape(n, nv)
        self.ctrl = self.data.ctrl.reshape(n, 12)
        self.substeps = substeps
        self.dt_s = POLICY_DT_S
        self.max_steps = int(round(episode_s / self.dt_s))
        self.default_pose = self.desc.default_pose.copy()
        self.stand_height = standing_height_m()
        # Actor observation layout: key-major, each key's last ``history`` frames oldest first, so that
        # every contract key is one flat (history * k,) block: [ang_vel(t-H+1..t), gravity(t-H+1..t), ...].
        self.obs_spec = [dict(k, shape=[self.history * k["shape"][0]],
                              units=k["units"] + f"; last {self.history} frames, oldest first") for k in OBS_SPEC]
        self._perm, self.obs_slices = history_layout(self.history)
        # clock_action: the gait clock is the policy's to pace. The action gets a 13th entry a_c and the clock
        # runs at clock_rate(a_c) x real time (CLOCK_RATE_RANGE), so a robot pushed toward its stance leg can
        # hurry that leg's turn to step; the observation's gait phase, the stance windows of the contact reward
        # and the knee reference all follow the clock. Off: the clock is the episode time.
        self.clock_action = bool(clock_action)
        self.clock_s = np.zeros(num_envs)
        self.frame_dim, self.obs_dim, self.critic_dim, self.action_dim = (
            FRAME_DIM, FRAME_DIM * self.history, CRITIC_DIM, 13 if self.clock_action else 12)
        self.reward_scales = dict(REWARD_SCALES, **(reward_scales or {}))
        self.fall_tilt_rad = FALL_TILT_RAD
        # step_in_place: the gait terms (stance/swing by phase, swing height) also apply at zero command,
        # so the robot marches in place (as unitree_rl_gym's G1) and always has a foot ready to catch a push.
        self.step_in_place = bool(step_in_place)
        # gait_reference [rad]: the knee-flexion reference of a stepping-in-place prior (the actor's
        # GaitReferenceActor, policies.humanoid_ppo); the "knee_reference" term rewards following it so that
        # the policy cannot simply cancel the stepping (humanoid-gym's reference-tracking reward, knees only,
        # leaving the hips free to place the foot).
        self.gait_reference = float(gait_reference)
        # capture_reward: weight of the capture_step term (capture_step_reward): a foot touching down where
        # it would stop the body (its stance spot + the capture point offset) is rewarded; 0 = off.
        if capture_reward:
            self.reward_scales["capture_step"] = float(capture_reward)
        self.foot_offsets = self._nominal_foot_offsets() if capture_reward else None
        self.last_contact = np.ones((n, 2), bool)
        if task == "stand" and not self.step_in_place:
            self.reward_scales["contact"] = 0.0
            self.reward_scales["feet_swing_height"] = 0.0
        # Push curriculum: the drawn push size is multiplied by this (1.0 = the DR YAML's pushes; the
        # trainer raises it as the policy survives, see policies.humanoid_ppo).
        self.push_scale = 1.0
        # push_log: None, or a list the env appends (robot, episode time [s], dvx, dvy) to at each push
        # (the evaluation's per-push outcome; off in training).
        self.push_log: list | None = None
        # Gantry starts: this fraction of episodes begins with the pelvis held at its start pose for
        # U(gantry_s) seconds while the policy already acts (the feet 2 mm above the floor), then let go,
        # as humanoid_sim_node's gantry does when the policy goes ACTIVE before the release. 0 = off (and
        # no extra random draws, so the episodes of a seed stay what they were).
        if not 0.0 <= float(gantry_starts) <= 1.0 or not 0.0 <= gantry_s[0] <= gantry_s[1]:
            raise ConfigError(f"gantry_starts {gantry_starts} / gantry_s {gantry_s} out of range",
                              field="gantry_starts", fix="a fraction in [0, 1] and 0 <= low <= high seconds")
        self.gantry_starts, self.gantry_s = float(gantry_starts), tuple(float(x) for x in gantry_s)
        self.hang_steps = np.zeros(n, np.int64)
        self._hang_pose = np.zeros((n, 7))
        lim = self.desc.joint_range
        mid, half = lim.mean(1), (lim[:, 1] - lim[:, 0]) / 2
        self.soft_lo, self.soft_hi = mid - 0.9 * half, mid + 0.9 * half
        self.foot_geom_flat = self.ix.foot_geoms.reshape(n, 8)
        self.nominal_mass = m.body_mass.copy()
        self.nominal_ipos = m.body_ipos.copy()
        self.nominal_friction = m.geom_friction.copy()
        # Per-robot knobs (the DR plug-in writes them per episode through set_episode_params).
        self.kp = np.tile(self.desc.kp, (n, 1))
        self.kd = np.tile(self.desc.kd, (n, 1))
        self.kp_scale = np.ones((n, 12))
        self.kd_scale = np.ones((n, 12))
        self.joint_offset = np.zeros((n, 12))
        self.action_delay_steps = np.zeros(n, int)
        self.obs_delay_steps = np.zeros(n, int)
        self.noise_std = np.zeros((n, 4))     # ang vel, gravity, joint pos, joint vel (unscaled units)
        self.friction = np.full(n, self.nominal_friction[self.foot_geom_flat[0, 0], 0])
        self.added_mass = np.zeros(n)
        self.com_offset = np.zeros((n, 3))
        self.push_interval_s = np.full((n, 2), np.inf)
        self.push_max_vel = np.zeros(n)
        self.randomizer = self._make_randomizer(dr, task)
        # Delay lines at physics rate: PD targets and raw measured state (qpos, qvel).
        self._target_fifo = np.zeros((FIFO_LEN, n, 12))
        self._qpos_fifo = np.zeros((FIFO_LEN, n, nq))
        self._qvel_fifo = np.zeros((FIFO_LEN, n, nv))
        self._k = 0
        # Episode state.
        self.t_step = np.zeros(n, int)
        self._prev_clock_s = np.zeros(n)       # the clock of the last observation (the one an action answers)
        self.command = np.zeros((n, 3))
        self.last_action = np.zeros((n, 12))
        self.target = np.tile(self.default_pose, (n, 1))
        self.hist = np.zeros((n, self.history, FRAME_DIM), np.float32)
        self.next_push_step = np.full(n, np.iinfo(np.int64).max)
        self.push_vel = np.zeros((n, 2))
        self.last_dq = np.zeros((n, 12))
        self.tau = np.zeros((n, 12))
        self.episode_return = np.zeros(n)
        self.err_lin = np.zeros(n)
        self.err_yaw = np.zeros(n)
        self._seed_all(seed)

    # ---- configuration ------------------------------------------------------------------------
    def _nominal_foot_offsets(self) -> np.ndarray:
        """(2, 2) left/right foot xy from the pelvis at the default pose, heading frame."""
        m = build_model(1, self.desc)
        d = mujoco.MjData(m)
        d.qpos[:] = np.r_[0.0, 0.0, BASE_HEIGHT_TARGET_M, 1.0, 0.0, 0.0, 0.0, self.default_pose]
        mujoco.mj_forward(m, d)
        return d.xpos[RobotIndex.of(m, 1, self.desc).foot_bodies[0], :2].copy()

    @staticmethod
    def _make_randomizer(dr, task):
        if dr is False or dr is None:
            return None
        if hasattr(dr, "new_episode"):
            return dr
        import importlib   # sim2real sits above sim: resolved only when DR is asked for
        rnd = importlib.import_module("sim2real.humanoid_randomization")
        if dr is True:
            cfg = rnd.load_humanoid_dr_config(task=task)
        elif isinstance(dr, rnd.HumanoidDRConfig):
            cfg = dr
        else:
            cfg = rnd.load_humanoid_dr_config(dr)
        return rnd.HumanoidDomainRandomizer(cfg)

    def set_episode_params(self, i: int, *, friction=None, added_mass_kg=None, com_offset_m=None,
                           link_mass_scale=None, kp_scale=None, kd_scale=None, joint_offset_rad=None,
                           action_delay_steps=None, obs_delay_steps=None, noise_std=None,
                           push_interval_s=None, push_max_vel_m_s=None) -> None:
        """Per-robot physics, gains, delays [physics steps], noise and pushes (the DR plug-in calls this).

        Everything not given goes back to nominal, so episodes never compound."""
        m, ix = self.model, self.ix
        bodies = ix.body_ids[i]
        pel = ix.pelvis_body[i]
        m.body_mass[bodies] = self.nominal_mass[bodies] * (1.0 if link_mass_scale is None else
                                                           np.asarray(link_mass_scale))
        m.body_mass[pel] = self.nominal_mass[pel] + (added_mass_kg or 0.0)
        m.body_ipos[pel] = self.nominal_ipos[pel] + (0.0 if com_offset_m is None else np.asarray(com_offset_m))
        feet = self.foot_geom_flat[i]
        mu = self.nominal_friction[feet[0], 0] if friction is None else float(friction)
        m.geom_friction[feet, 0] = mu
        self.friction[i], self.added_mass[i] = mu, added_mass_kg or 0.0
        self.com_offset[i] = 0.0 if com_offset_m is None else com_offset_m
        self.kp_scale[i] = 1.0 if kp_scale is None else kp_scale
        self.kp[i] = self.desc.kp * self.kp_scale[i]
        self.kd_scale[i] = 1.0 if kd_scale is None else kd_scale
        self.kd[i] = self.desc.kd * self.kd_scale[i]
        self.joint_offset[i] = 0.0 if joint_offset_rad is None else joint_offset_rad
        self.action_delay_steps[i] = action_delay_steps or 0
        self.obs_delay_steps[i] = obs_delay_steps or 0
        self.noise_std[i] = 0.0 if noise_std is None else noise_std
        self.push_interval_s[i] = np.inf if push_interval_s is None else push_interval_s
        self.push_max_vel[i] = push_max_vel_m_s or 0.0
        if max(self.action_delay_steps[i], self.obs_delay_steps[i]) >= FIFO_LEN:
            raise ConfigError(f"delay above {FIFO_LEN - 1} physics steps", field="latency",
                              fix=f"keep delays under {(FIFO_LEN - 1) * self.physics_dt_s * 1e3:.0f} ms")

    # ---- reset --------------------------------------------------------------------------------
    def _seed_all(self, seed: int) -> None:
        """Per-slot generators for episode draws; one more for per-step noise."""
        self.seed = seed
        self._rngs = [np.random.default_rng([seed, i]) for i in range(self.num_envs)]
        self.noise_rng = np.random.default_rng([seed, self.num_envs, 0x61])

    def reset(self, seed: int | None = None):
        if seed is not None:
            self._seed_all(seed)
        self._reset_envs(np.arange(self.num_envs))
        return self._observe(), {"critic_obs": self._critic_obs()}

    def _reset_envs(self, idx: np.ndarray) -> None:
        for i in idx:   # one generator per env, so env i's draws never depend on the others
            rng = self._rngs[i]
            if self.randomizer is not None:
                self.randomizer.new_episode(self, i, rng)
            yaw = rng.uniform(-math.pi, math.pi)
            q = self.qpos[i]
            q[2] = self.stand_height + 0.002
            q[3:7] = [math.cos(yaw / 2), 0, 0, math.sin(yaw / 2)]
            q[7:] = self.default_pose + rng.uniform(-0.05, 0.05, 12)
            self.qvel[i] = 0.0
            self.command[i] = self._sample_command(rng)
            self.next_push_step[i] = self._next_push(i, 0, rng)
            if self.gantry_starts > 0:
                hang = rng.uniform() < self.gantry_starts
                self.hang_steps[i] = int(round(rng.uniform(*self.gantry_s) / self.dt_s)) if hang else 0
        self.qpos[idx, 0:2] = self._home_xy(idx)
        self._hang_pose[idx] = self.qpos[idx, 0:7]
        mujoco.mj_forward(self.model, self.data)
        self.target[idx] = self.default_pose
        self._target_fifo[:, idx] = self.default_pose
        self._qpos_fifo[:, idx] = self.qpos[idx]
        self._qvel_fifo[:, idx] = self.qvel[idx]
        self.t_step[idx] = 0
        self.clock_s[idx] = 0.0
        self._prev_clock_s[idx] = 0.0
        self.last_action[idx] = 0.0
        self.last_dq[idx] = 0.0
        self.push_vel[idx] = 0.0
        self.last_contact[idx] = True
        self.episode_return[idx] = 0.0
        self.err_lin[idx] = 0.0
        self.err_yaw[idx] = 0.0
        self.hist[idx] = self._frame()[idx][:, None, :]

    def _home_xy(self, idx):
        cols = max(1, int(math.ceil(math.sqrt(self.num_envs))))
        return np.stack([(idx % cols) * 3.0, (idx // cols) * 3.0], 1)

    def _sample_command(self, rng) -> np.ndarray:
        if self.task == "stand":
            return np.zeros(3)
        c = WALK_COMMANDS
        return np.array([rng.uniform(*c["vx"]), rng.uniform(*c["vy"]), rng.uniform(*c["yaw"])])

    def _next_push(self, i, now_step, rng) -> int:
        lo, hi = self.push_interval_s[i]
        if not np.isfinite(hi) or self.push_max_vel[i] <= 0:
            return np.iinfo(np.int64).max
        return now_step + max(1, int(round(rng.uniform(lo, hi) / self.dt_s)))

    # ---- measurement & observation ------------------------------------------------------------
    def _measured(self, qpos, qvel, noisy: bool):
        """(ang vel body, projected gravity, q measured, dq) from raw state rows."""
        quat = qpos[:, 3:7]
        ang = qvel[:, 3:6].copy()                      # free joint: angular velocity in the body frame
        grav = quat_rotate_inverse(quat, np.tile([0.0, 0.0, -1.0], (len(quat), 1)))
        q = qpos[:, 7:] + self.joint_offset            # encoders read from a mis-calibrated zero
        dq = qvel[:, 6:].copy()
        if noisy and np.any(self.noise_std > 0):
            r, n, s = self.noise_rng, len(quat), self.noise_std
            ang += r.standard_normal((n, 3)) * s[:, 0:1]
            grav += r.standard_normal((n, 3)) * s[:, 1:2]
            q = q + r.standard_normal((n, 12)) * s[:, 2:3]
            dq += r.standard_normal((n, 12)) * s[:, 3:4]
        return ang, grav, q, dq

    def _frame(self, delayed: bool = True, noisy: bool = True) -> np.ndarray:
        n = self.num_envs
        if delayed:
            rows = (self._k - self.obs_delay_steps) % FIFO_LEN
            qpos, qvel = self._qpos_fifo[rows, np.arange(n)], self._qvel_fifo[rows, np.arange(n)]
        else:
            qpos, qvel = self.qpos, self.qvel
        ang, grav, q, dq = self._measured(qpos, qvel, noisy)
        return build_frame(ang, grav, q, dq, self.command, self.last_action, self.gait_clock_s(),
                           self.default_pose, self.gait_period_s)

    def gait_clock_s(self) -> np.ndarray:
        """(n,) the gait clock [s]: the episode time, or with ``clock_action`` the policy-paced clock."""
        return self.clock_s if self.clock_action else self.t_step * self.dt_s

    def _observe(self) -> np.ndarray:
        return self.hist.reshape(self.num_envs, -1)[:, self._perm]

    def split_obs(self, obs: np.ndarray) -> dict:
        """Flat actor observation(s) (n, obs_dim) -> {key: (n, history * k)} (the contract's keys)."""
        return {name: obs[..., sl] for name, sl in self.obs_slices.items()}

    def foot_contact(self) -> np.ndarray:
        """(n, 2) bool: any sphere of the left/right foot touches the floor."""
        d = self.data
        c = np.zeros((self.num_envs, 2), bool)
        if d.ncon:
            g = np.concatenate([d.contact.geom1[:d.ncon], d.contact.geom2[:d.ncon]])
            hit = np.isin(self.foot_geom_flat, g).reshape(self.num_envs, 2, 4)
            c = hit.any(2)
        return c

    def _critic_obs(self, contact=None) -> np.ndarray:
        quat = self.qpos[:, 3:7]
        v_body = quat_rotate_inverse(quat, self.qvel[:, 0:3])
        contact = self.foot_contact() if contact is None else contact
        return np.concatenate([
            self._frame(delayed=False, noisy=False), v_body * 2.0,
            (self.qpos[:, 2:3] - BASE_HEIGHT_TARGET_M), contact.astype(float), self.friction[:, None],
            self.added_mass[:, None] / 3.0, self.com_offset * 10.0, self.kp_scale - 1.0, self.push_vel,
            np.stack([self.action_delay_steps, self.obs_delay_steps], 1) / 10.0], axis=1).astype(np.float32)

    def robot_state(self, i: int = 0) -> dict:
        """What the robot's drivers report (measured, delayed, noisy), for the safety filter and runtime."""
        rows = (self._k - self.obs_delay_steps[i]) % FIFO_LEN
        qpos, qvel = self._qpos_fifo[rows, i][None], self._qvel_fifo[rows, i][None]
        sub = self.joint_offset[i:i + 1]
        q = qpos[:, 7:] + sub
        return {"q": q[0], "dq": qvel[0, 6:], "rpy": rpy_from_quat(qpos[:, 3:7])[0],
                "gyro": qvel[0, 3:6], "quat": qpos[0, 3:7]}

    # ---- step ---------------------------------------------------------------------------------
    def step(self, action: np.ndarray):
        n = self.num_envs
        action = np.clip(np.asarray(action, dtype=float).reshape(n, self.action_dim), -ACTION_CLIP, ACTION_CLIP)
        rate = clock_rate(action[:, 12]) if self.clock_action else None
        return self.step_targets(self.default_pose + ACTION_SCALE * action[:, :12], action[:, :12], clock_rate=rate)

    def step_targets_clock(self, target_and_rate: np.ndarray):
        """``step_targets`` with the clock rate as a 13th column (one array, for the worker shards)."""
        x = np.asarray(target_and_rate, float)
        return self.step_targets(x[:, :12], clock_rate=x[:, 12])

    def step_targets(self, target: np.ndarray, action: np.ndarray | None = None, kp=None, kd=None,
                     clock_rate: np.ndarray | None = None):
        """One 50 Hz step with absolute PD targets (n, 12) [rad] (a runtime / safety filter path).

        ``kp``/``kd`` (n, 12): commanded gains (a LowCmd's), scaled by the robot's drawn gain error;
        None = the nominal gains. ``clock_rate`` (n,): with ``clock_action``, how fast the gait clock runs
        this step (None = real time)."""
        n = self.num_envs
        kp = self.kp if kp is None else np.asarray(kp, float) * self.kp_scale
        kd = self.kd if kd is None else np.asarray(kd, float) * self.kd_scale
        target = np.asarray(target, dtype=float).reshape(n, 12)
        if action is None:
            action = (target - self.default_pose) / ACTION_SCALE
        self.target = target
        ar = np.arange(n)
        pushed = self.t_step >= self.next_push_step
        if pushed.any():
            for i in np.flatnonzero(pushed):
                rng = self._rngs[i]
                ang = rng.uniform(0, 2 * math.pi)
                r = self.push_max_vel[i] * self.push_scale * math.sqrt(rng.uniform())
                dv = r * np.array([math.cos(ang), math.sin(ang)])
                self.qvel[i, 0:2] += dv
                self.push_vel[i] = dv
                if self.push_log is not None:
                    self.push_log.append((int(i), float(self.t_step[i] * self.dt_s), float(dv[0]), float(dv[1])))
                self.next_push_step[i] = self._next_push(i, self.t_step[i], rng)
        hanging = np.flatnonzero(self.t_step < self.hang_steps)
        for _ in range(self.substeps):
            self._k += 1
            self._target_fifo[self._k % FIFO_LEN] = target
            applied = self._target_fifo[(self._k - self.action_delay_steps) % FIFO_LEN, ar]
            q = self.qpos[:, 7:] + self.joint_offset
            self.tau = np.clip(kp * (applied - q) - kd * self.qvel[:, 6:],
                               -self.desc.torque_limit, self.desc.torque_limit)
            self.ctrl[:] = self.tau
            mujoco.mj_step(self.model, self.data)
            if len(hanging):          # on the gantry: the pelvis is held where the episode started
                self.qpos[hanging, 0:7] = self._hang_pose[hanging]
                self.qvel[hanging, 0:6] = 0.0
            row = self._k % FIFO_LEN
            self._qpos_fifo[row] = self.qpos
            self._qvel_fifo[row] = self.qvel
        self._prev_clock_s[:] = self.gait_clock_s()
        self.t_step += 1
        if self.clock_action:
            self.clock_s += self.dt_s * (1.0 if clock_rate is None else np.asarray(clock_rate, float).reshape(n))
        self.push_vel *= math.exp(-self.dt_s / 1.0)
        if self.task == "walk":
            resample = (self.t_step % int(WALK_COMMANDS["resample_s"] / self.dt_s)) == 0
            for i in np.flatnonzero(resample):
                self.command[i] = self._sample_command(self._rngs[i])
        contact = self.foot_contact()
        reward, fell, e_lin, e_yaw = self._reward(action, contact)
        self.last_action = action
        self.err_lin += e_lin
        self.err_yaw += e_yaw
        terminated = fell
        truncated = (self.t_step >= self.max_steps) & ~terminated
        reward = reward + TERMINATION_PENALTY * fell
        self.episode_return += reward
        self.hist[:, :-1] = self.hist[:, 1:]
        self.hist[:, -1] = self._frame()
        obs = self._observe()
        critic = self._critic_obs(contact)
        info = {"critic_obs": critic, "fell": fell}
        done = terminated | truncated
        if done.any():
            idx = np.flatnonzero(done)
            info.update(done_idx=idx, final_obs=obs[idx].copy(), final_critic_obs=critic[idx].copy(),
                        episode_return=self.episode_return[idx].copy(), episode_steps=self.t_step[idx].copy(),
                        episode_lin_vel_err=self.err_lin[idx] / np.maximum(self.t_step[idx], 1),
                        episode_yaw_rate_err=self.err_yaw[idx] / np.maximum(self.t_step[idx], 1),
                        episode_fell=fell[idx].copy())
            self._reset_envs(idx)
            obs[idx] = self._observe()[idx]
            info["critic_obs"][idx] = self._critic_obs()[idx]
        return obs, reward.astype(np.float32), terminated, truncated, info

    def _reward(self, action, contact):
        s, dt = self.reward_scales, self.dt_s
        quat = self.qpos[:, 3:7]
        v = quat_rotate_inverse(quat, self.qvel[:, 0:3])
        w = self.qvel[:, 3:6]
        g = quat_rotate_inverse(quat, np.tile([0.0, 0.0, -1.0], (self.num_envs, 1)))
        q, dq = self.qpos[:, 7:], self.qvel[:, 6:]
        ddq = (dq - self.last_dq) / dt
        self.last_dq = dq.copy()
        e_lin_sq = np.sum((self.command[:, :2] - v[:, :2]) ** 2, 1)
        e_yaw_sq = (self.command[:, 2] - w[:, 2]) ** 2
        phase = (self.gait_clock_s() / self.gait_period_s) % 1.0
        stance = np.stack([phase < 0.55, (phase + 0.5) % 1.0 < 0.55], 1)
        hip = np.r_[1, 2, 7, 8]
        height = self.qpos[:, 2]
        tilt = np.arccos(np.clip(-g[:, 2], -1.0, 1.0))
        fell = (height < FALL_HEIGHT_M) | (tilt > self.fall_tilt_rad) | ~np.all(np.isfinite(self.qpos), 1)
        terms = {
            "tracking_lin_vel": np.exp(-e_lin_sq / TRACKING_SIGMA),
            "tracking_ang_vel": np.exp(-e_yaw_sq / TRACKING_SIGMA),
            "lin_vel_z": v[:, 2] ** 2,
            "ang_vel_xy": np.sum(w[:, :2] ** 2, 1),
            "orientation": np.sum(g[:, :2] ** 2, 1),
            "base_height": (height - BASE_HEIGHT_TARGET_M) ** 2,
            "torques": np.sum(self.tau ** 2, 1),
            "dof_acc": np.sum(ddq ** 2, 1),
            "dof_vel": np.sum(dq ** 2, 1),
            "action_rate": np.sum((action - self.last_action) ** 2, 1),
            "dof_pos_limits": np.sum(np.maximum(self.soft_lo - q, 0) + np.maximum(q - self.soft_hi, 0), 1),
            "alive": np.ones(self.num_envs),
            "hip_pos": np.sum(q[:, hip] ** 2, 1),
        }
        if s.get("contact", 0.0) or s.get("feet_swing_height", 0.0):
            moving = (np.linalg.norm(self.command, axis=1) > 0.1) | self.step_in_place
            terms["contact"] = np.sum(contact == stance, 1) * moving
            fz = self.data.xpos[self.ix.foot_bodies, 2]
            terms["feet_swing_height"] = np.sum((fz - 0.04 - FOOT_SWING_HEIGHT_M) ** 2 * ~contact, 1) * moving
        if self.gait_reference > 0:
            # the reference the actor saw: the phase of the observation this action answered (one step ago)
            answered = self._prev_clock_s if self.clock_action else (self.t_step - 1) * dt
            knee_ref = knee_reference(answered, self.gait_reference, self.default_pose, self.gait_period_s)
            terms["knee_reference"] = np.exp(-4.0 * np.abs(q[:, KNEES] - knee_ref).sum(1))
        if s.get("capture_step", 0.0):
            touchdown = contact & ~self.last_contact
            yaw = rpy_from_quat(quat)[:, 2]
            feet = self.data.xpos[self.ix.foot_bodies][..., :2]
            terms["capture_step"] = capture_step_reward(feet, self.qpos[:, 0:2], yaw, self.qvel[:, 0:2], touchdown,
                                                        self.foot_offsets)
        self.last_contact = contact
        r = sum(s[k] * terms[k] for k in terms if s.get(k, 0.0)) * dt
        return r, fell, np.sqrt(e_lin_sq), np.sqrt(e_yaw_sq)


# ---- two processes, one batch ---------------------------------------------------------------------
def _shard_worker(conn, kwargs) -> None:
    env = HumanoidVecEnv(**kwargs)
    while True:
        cmd, arg = conn.recv()
        if cmd == "close":
            break
        if cmd == "reset":
            conn.send(env.reset(seed=arg))
        elif cmd in ("step", "step_targets", "step_targets_clock"):
            conn.send(getattr(env, cmd)(arg))
        elif cmd == "push_scale":
            env.push_scale = arg
        elif cmd == "q":
            conn.send([env.robot_state(i)["q"] for i in arg])
    conn.close()


class ShardedHumanoidEnv:
    """``HumanoidVecEnv`` split across processes so that training uses every core: shard 0 steps in this
    process while the others step in worker processes at the same time; the results are joined into one
    batch (same interface as the env for the trainer: ``reset``, ``step``, ``step_targets``,
    ``robot_state``, ``push_scale``). Shard k draws its episodes from seed ``seed + 7919 k``, so no two
    robots share a stream."""

    def __init__(self, num_envs: int, shards: int = 2, seed: int = 0, **kwargs):
        import multiprocessing as mp
        if shards < 2 or num_envs % shards:
            raise ConfigError(f"{num_envs} robots cannot be split into {shards} equal shards", field="workers",
                              fix="use 2 or more workers that divide num_envs")
        self.shard_n = num_envs // shards
        self._seeds = [seed + 7919 * k for k in range(shards)]
        self.local = HumanoidVecEnv(self.shard_n, seed=seed, **kwargs)
        ctx = mp.get_context("spawn")          # never fork a process that holds torch's thread pools
        self._conns, self._procs = [], []
        for k in range(1, shards):
            a, b = ctx.Pipe()
            p = ctx.Process(target=_shard_worker, args=(b, dict(kwargs, num_envs=self.shard_n, seed=self._seeds[k])),
                            daemon=True)
            p.start()
            self._conns.append(a)
            self._procs.append(p)
        for name in ("dt_s", "default_pose", "obs_dim", "critic_dim", "action_dim", "obs_spec", "history",
                     "randomizer", "obs_slices", "_perm", "task"):
            setattr(self, name, getattr(self.local, name))
        self.num_envs = num_envs
        self._push_scale = 1.0

    @property
    def push_scale(self) -> float:
        return self._push_scale

    @push_scale.setter
    def push_scale(self, value: float) -> None:
        self._push_scale = self.local.push_scale = float(value)
        for c in self._conns:
            c.send(("push_scale", float(value)))

    def _join(self, results):
        obs = np.concatenate([r[0] for r in results])
        out = [obs] + [np.concatenate([r[j] for r in results]) for j in (1, 2, 3)]
        infos = [r[4] for r in results]
        info = {"critic_obs": np.concatenate([i["critic_obs"] for i in infos]),
                "fell": np.concatenate([i["fell"] for i in infos])}
        done = [(k, i) for k, i in enumerate(infos) if "done_idx" in i]
        if done:
            info["done_idx"] = np.concatenate([i["done_idx"] + k * self.shard_n for k, i in done])
            for key in infos[done[0][0]]:
                if key not in info:
                    info[key] = np.concatenate([i[key] for _, i in done])
        return (*out, info)

    def _run(self, cmd, arg: np.ndarray):
        """Send each worker its rows of ``arg``, step shard 0 here meanwhile, then gather."""
        n = self.shard_n
        for k, c in enumerate(self._conns, start=1):
            c.send((cmd, arg[k * n:(k + 1) * n]))
        local = getattr(self.local, cmd)(arg[:n])
        return [local] + [c.recv() for c in self._conns]

    def reset(self, seed: int | None = None):
        for k, c in enumerate(self._conns, start=1):
            c.send(("reset", None if seed is None else seed + 7919 * k))
        results = [self.local.reset(seed=seed)] + [c.recv() for c in self._conns]
        return (np.concatenate([r[0] for r in results]),
                {"critic_obs": np.concatenate([r[1]["critic_obs"] for r in results])})

    def step(self, action):
        return self._join(self._run("step", np.asarray(action)))

    def step_targets(self, target):
        return self._join(self._run("step_targets", np.asarray(target)))

    def step_targets_clock(self, target_and_rate):
        return self._join(self._run("step_targets_clock", np.asarray(target_and_rate)))

    def robot_state(self, i: int) -> dict:
        """Robot ``i``'s measured state; from a worker shard only ``q`` (what the trainer resets with)."""
        k, j = divmod(int(i), self.shard_n)
        if k == 0:
            return self.local.robot_state(j)
        self._conns[k - 1].send(("q", [j]))
        return {"q": self._conns[k - 1].recv()[0]}

    def close(self) -> None:
        for c in getattr(self, "_conns", []):
            with contextlib.suppress(Exception):
                c.send(("close", None))
        for p in getattr(self, "_procs", []):
            p.join(timeout=5)
            if p.is_alive():
                p.terminate()
        self._conns, self._procs = [], []

    def __del__(self):
        self.close()
