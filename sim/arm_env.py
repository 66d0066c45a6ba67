"""``ArmEnv``: the Franka Panda gymnasium env for reach, push and pick-and-place.

Owns the task definitions (initial-state regions, targets, success, reward,
time limits), the control loop (10 Hz policy over 500 Hz physics, one
``mj_step(nstep=...)`` call per control step) and the observation dict.

Action: ``(8,)`` = 7 absolute joint-position targets [rad] + gripper width [m].
Observation: float32 arrays named in ``env.obs_spec`` (name, shape, units), in
that order; camera images ``image.<camera>`` (H, W, 3) uint8 when cameras are on.

Reward (dense, documented here): ``reach``: ``-|ee - target|``; ``push``:
``-|object_xy - target_xy| - 0.2 |ee - pre-push point|``; ``pick_place``:
``-|object - target| - 0.2 |ee - object|``. Each task adds +10 on success.
An episode terminates on success and truncates at the time limit.

Domain randomization is a plug-in: ``dr`` may be ``False``, ``True`` (the
shipped ``config/randomization/franka_panda_<task>.yaml``), a path, a
``sim2real.randomization.DRConfig`` or any object with ``new_episode(model,
rng, ctx) -> draw`` (see ``sim2real.randomization.DomainRandomizer``). The
shipped randomizer lives in ``sim2real`` (a higher layer), so it is imported
lazily, only when ``dr`` asks for it; this module never imports policies.
"""
from __future__ import annotations

import collections
import math
from dataclasses import dataclass

import gymnasium as gym
import mujoco
import numpy as np

from onboard.errors import ConfigError
from onboard.spec.robot import load_robot
from sim.panda_model import ObjectSpec, build_scene

TASKS = ("reach", "push", "pick_place")


@dataclass(frozen=True)
class TaskSpec:
    """Everything that defines a task, as plain numbers (metres, radians, seconds)."""
    name: str
    instruction: str
    time_limit_s: float
    object_half_size: tuple
    object_mass_kg: float
    object_xy_low: tuple           # initial object region (uniform)
    object_xy_high: tuple
    object_yaw_range: float        # initial yaw uniform in [-r, r]
    target_low: tuple              # target region (uniform), xyz
    target_high: tuple
    success_pos_tol_m: float
    success_yaw_tol_rad: float = math.inf    # yaw error modulo 90 deg (push)
    joint_noise_rad: float = 0.02            # initial joint noise around the ready pose


TASK_SPECS = {
    # Reach: the TCP to a point in front of the robot; the block waits off to the side.
    "reach": TaskSpec("reach", "move the gripper to the target", 6.0,
                      (0.025, 0.025, 0.025), 0.1, (0.75, 0.40), (0.75, 0.40), 0.0,
                      (0.35, -0.20, 0.10), (0.60, 0.20, 0.35), 0.02),
    # Push: the block starts far from the robot; the gripper goes around it (left or right)
    # and pushes it back toward the robot onto a target near x = 0.42 with yaw 0 (mod 90 deg).
    "push": TaskSpec("push", "push the block to the target", 12.0,
                     (0.03, 0.03, 0.025), 0.15, (0.58, -0.04), (0.64, 0.04), 0.4,
                     (0.40, -0.01, 0.025), (0.44, 0.01, 0.025), 0.03, 0.35),
    # Pick and place: grasp the cube and put it down on the target.
    "pick_place": TaskSpec("pick_place", "pick up the cube and place it on the target", 12.0,
                           (0.025, 0.025, 0.025), 0.08, (0.45, -0.18), (0.60, -0.05), 0.6,
                           (0.45, 0.08, 0.025), (0.60, 0.18, 0.025), 0.03),
}


def yaw_of_quat(q) -> float:
    """Yaw [rad] of a (w, x, y, z) quaternion."""
    w, x, y, z = q
    return math.atan2(2 * (w * z + x * y), 1 - 2 * (y * y + z * z))


def yaw_error_mod90(yaw: float, target_yaw: float = 0.0) -> float:
    """Smallest |yaw - target| for a body that is symmetric under 90 deg turns."""
    e = (yaw - target_yaw + math.pi / 4) % (math.pi / 2) - math.pi / 4
    return abs(e)


class PandaEnvBase(gym.Env):
    """What the Panda task envs (``ArmEnv``, ``sim.lang_env.LangArmEnv``) share: the control step (true FIFO
    action delay, 10 Hz over ``n_substeps`` physics steps), TCP / gripper state and offscreen cameras.

    Subclasses own ``model``, ``data``, ``ix`` (a ``SceneIndex``), ``_ctrl_low/_ctrl_high``, ``_queue``,
    ``n_substeps``, ``max_steps``, ``t``, ``cameras``, ``image_size`` and the task: ``_success``,
    ``_reward`` and ``_obs``.
    """
    _renderer = None

    def step(self, action):
        a = np.asarray(action, dtype=float).reshape(8)
        if not np.all(np.isfinite(a)):
            raise ValueError(f"non-finite action {a}")
        a = np.clip(a, self._ctrl_low, self._ctrl_high)
        self._queue.append(a)
        applied = self._queue.popleft()       # a true delay: the command from `delay` steps ago
        d, ix = self.data, self.ix
        d.ctrl[ix.arm_actuator_ids] = applied[:7]
        d.ctrl[ix.gripper_actuator_id] = applied[7]
        mujoco.mj_step(self.model, d, nstep=self.n_substeps)
        self.t += 1
        success = self._success()
        reward = self._reward() + (10.0 if success else 0.0)
        truncated = self.t >= self.max_steps and not success
        obs = self._obs()
        return obs, reward, bool(success), bool(truncated), {"success": bool(success),
                                                             "applied_action": applied}

    def ee_pos(self) -> np.ndarray:
        return self.data.site_xpos[self.ix.tcp_site_id].copy()

    def gripper_width(self) -> float:
        return float(self.data.qpos[self.ix.finger_qpos_adr].sum())

    def is_success(self) -> bool:
        """Whether the task is solved in the current physics state (what ``info["success"]`` reports)."""
        return self._success()

    def observe(self) -> dict:
        """The observation of the current physics state (with DR noise when DR is on), without stepping."""
        return self._obs()


    def render_camera(self, camera: str = "front") -> np.ndarray:
        if self._renderer is None:
            h, w = self.image_size
            self._renderer = mujoco.Renderer(self.model, height=h, width=w)
        self._renderer.update_scene(self.data, camera=camera)
        return self._renderer.render().copy()

    def render(self):
        return self.render_camera(self.cameras[0] if self.cameras else "front")

    def close(self):
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None


class ArmEnv(PandaEnvBase):
    metadata = {"render_modes": ["rgb_array"]}

    def __init__(self, task: str = "push", dr=True, seed: int | None = 0, cameras=(),
                 image_size=(96, 96), control_hz: float | None = None, robot: str = "franka_panda"):
        if task not in TASKS:
            raise ConfigError(f"unknown task '{task}'", field="task", fix=f"use one of {list(TASKS)}")
        self.task = task
        self.spec_task = TASK_SPECS[task]
        self.profile = load_robot(robot)
        self.cameras = tuple(cameras)
        self.image_size = (int(image_size[0]), int(image_size[1]))
        ts = self.spec_task
        obj = ObjectSpec(half_size=ts.object_half_size, mass_kg=ts.object_mass_kg)
        self.model, self.ix = build_scene(self.profile, obj, cameras=tuple(set(self.cameras) | {"front"}))
        self.data = mujoco.MjData(self.model)
        self.control_hz = float(control_hz or self.profile.rates_hz["control_hz"])
        if not 5.0 <= self.control_hz <= 50.0:
            raise ConfigError(f"control rate {self.control_hz} Hz is out of range", field="control_hz",
                              fix="use 10-20 Hz")
        self.n_substeps = int(round(1.0 / (self.control_hz * self.model.opt.timestep)))
        self.max_steps = int(round(ts.time_limit_s * self.control_hz))
        self.ready_pose = np.asarray(self.profile.default_pose, dtype=float)
        self.max_width = float(self.profile.gripper.get("max_width_m", 0.08))

        lim = self.profile.limits.position
        low = np.concatenate([lim[:, 0], [0.0]]).astype(np.float32)
        high = np.concatenate([lim[:, 1], [self.max_width]]).astype(np.float32)
        self.action_space = gym.spaces.Box(low, high, dtype=np.float32)
        self.obs_spec = self._make_obs_spec()
        spaces = {s["name"]: gym.spaces.Box(-np.inf, np.inf, shape=tuple(s["shape"]), dtype=np.float32)
                  for s in self.obs_spec}
        for cam in self.cameras:
            spaces[f"image.{cam}"] = gym.spaces.Box(0, 255, shape=(*self.image_size, 3), dtype=np.uint8)
        self.observation_space = gym.spaces.Dict(spaces)

        self.randomizer = self._make_randomizer(dr)
        self._renderer = None
        self._seed_rng = np.random.default_rng(seed)
        self._ctrl_low, self._ctrl_high = low.astype(float), high.astype(float)
        self.draw = None
        self.target_pos = np.zeros(3)
        self.target_yaw = 0.0
        self._queue: collections.deque = collections.deque()
        self.t = 0
        self.episode_seed = None

    # ---------------------------------------------------------------- set-up
    def _make_obs_spec(self) -> list[dict]:
        spec = [
            {"name": "joint_pos", "shape": [7], "units": "rad"},
            {"name": "joint_vel", "shape": [7], "units": "rad/s"},
            {"name": "gripper_width", "shape": [1], "units": "m"},
            {"name": "ee_pos", "shape": [3], "units": "m (TCP, world frame)"},
        ]
        if self.task in ("push", "pick_place"):
            spec += [{"name": "object_pos", "shape": [3], "units": "m (world frame)"},
                     {"name": "object_yaw_sincos", "shape": [2],
                      "units": "[sin, cos] of 4*yaw (the box is symmetric under 90 deg turns)"}]
        spec.append({"name": "target_pos", "shape": [3], "units": "m (world frame)"})
        return spec

    def _make_randomizer(self, dr):
        if dr is False or dr is None:
            return None
        if hasattr(dr, "new_episode"):
            return dr
        import importlib   # sim2real sits above sim: resolved only when DR is asked for
        rnd = importlib.import_module("sim2real.randomization")
        cfg = dr if isinstance(dr, rnd.DRConfig) else rnd.load_dr_config(
            None if dr is True else dr, robot=self.profile.name, task=self.task)
        return rnd.DomainRandomizer(cfg, self)

    # ---------------------------------------------------------------- episode
    def reset(self, *, seed: int | None = None, options=None):
        super().reset(seed=seed)
        if seed is not None:
            self._seed_rng = np.random.default_rng(seed)
        self.episode_seed = int(self._seed_rng.integers(2**63 - 1))
        ss = np.random.SeedSequence(self.episode_seed)
        init_rng, dr_rng, self._noise_rng = (np.random.default_rng(s) for s in ss.spawn(3))

        m, d, ix, ts = self.model, self.data, self.ix, self.spec_task
        mujoco.mj_resetData(m, d)
        self.draw = self.randomizer.new_episode(m, dr_rng) if self.randomizer else None

        q0 = self.ready_pose + init_rng.uniform(-ts.joint_noise_rad, ts.joint_noise_rad, 7)
        q0 = np.clip(q0, self._ctrl_low[:7], self._ctrl_high[:7])
        width0 = 0.04 if self.task != "pick_place" else 0.08
        d.qpos[ix.arm_qpos_adr] = q0
        d.qpos[ix.finger_qpos_adr] = width0 / 2
        half = m.geom_size[ix.object_geom_id]
        xy = init_rng.uniform(ts.object_xy_low, ts.object_xy_high)
        yaw = init_rng.uniform(-ts.object_yaw_range, ts.object_yaw_range)
        a = ix.object_qpos_adr
        d.qpos[a:a + 3] = [xy[0], xy[1], half[2]]
        d.qpos[a + 3:a + 7] = [math.cos(yaw / 2), 0, 0, math.sin(yaw / 2)]
        self.target_pos = init_rng.uniform(ts.target_low, ts.target_high)
        if self.task != "reach":
            self.target_pos[2] = half[2]
        self.target_yaw = 0.0
        d.mocap_pos[ix.target_mocap_id] = self.target_pos
        hold = np.concatenate([q0, [width0]])
        d.ctrl[ix.arm_actuator_ids] = q0
        d.ctrl[ix.gripper_actuator_id] = width0
        mujoco.mj_forward(m, d)

        delay = self.draw.action_delay_steps if self.draw else 0
        self._queue = collections.deque([hold.copy() for _ in range(delay)])
        self.t = 0
        obs = self._obs()
        return obs, {"success": False, "episode_seed": self.episode_seed,
                     "action_delay_steps": delay}

    # ---------------------------------------------------------------- state
    def object_pose(self) -> tuple[np.ndarray, float]:
        a = self.ix.object_qpos_adr
        q = self.data.qpos
        return q[a:a + 3].copy(), yaw_of_quat(q[a + 3:a + 7])

    def _success(self) -> bool:
        ts = self.spec_task
        if self.task == "reach":
            return bool(np.linalg.norm(self.ee_pos() - self.target_pos) < ts.success_pos_tol_m)
        pos, yaw = self.object_pose()
        half_z = self.model.geom_size[self.ix.object_geom_id][2]
        if np.linalg.norm(pos[:2] - self.target_pos[:2]) >= ts.success_pos_tol_m:
            return False
        if abs(pos[2] - half_z) > 0.01:       # resting on the table, not held above it
            return False
        if self.task == "push":
            return yaw_error_mod90(yaw, self.target_yaw) < ts.success_yaw_tol_rad
        # pick_place: released (the gripper is open and the TCP is above the cube)
        return self.gripper_width() > 0.055 and self.ee_pos()[2] > pos[2] + 0.03

    def _reward(self) -> float:
        ee = self.ee_pos()
        if self.task == "reach":
            return -float(np.linalg.norm(ee - self.target_pos))
        pos, _ = self.object_pose()
        if self.task == "push":
            return -float(np.linalg.norm(pos[:2] - self.target_pos[:2]) + 0.2 * np.linalg.norm(ee - pos))
        return -float(np.linalg.norm(pos - self.target_pos) + 0.2 * np.linalg.norm(ee - pos))

    def _obs(self) -> dict:
        d, ix = self.data, self.ix
        obs = {
            "joint_pos": d.qpos[ix.arm_qpos_adr].astype(np.float32),
            "joint_vel": d.qvel[ix.arm_dof_adr].astype(np.float32),
            "gripper_width": np.array([d.qpos[ix.finger_qpos_adr].sum()], dtype=np.float32),
            "ee_pos": d.site_xpos[ix.tcp_site_id].astype(np.float32),
        }
        if self.task != "reach":
            pos, yaw = self.object_pose()
            obs["object_pos"] = pos.astype(np.float32)
            obs["object_yaw_sincos"] = np.array([math.sin(4 * yaw), math.cos(4 * yaw)], dtype=np.float32)
        obs["target_pos"] = self.target_pos.astype(np.float32)
        if self.draw is not None:
            self.draw.add_obs_noise(obs, self._noise_rng)
        for cam in self.cameras:
            obs[f"image.{cam}"] = self.render_camera(cam)
        return obs

