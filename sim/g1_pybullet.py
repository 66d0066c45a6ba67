"""Sim-to-sim: the G1 legs in PyBullet, from the same description (``sim.g1_urdf``), behind the
same observation builder as the MuJoCo env.

Owns ``G1PyBulletEnv``: one robot per PyBullet client (DIRECT), the URDF that
``sim.g1_urdf`` writes from ``config/robots/descriptions/g1_12dof.yaml``,
and the same step interface the MuJoCo env offers to ``evaluate``
(``reset``, ``step_targets``, ``split_obs``, ``robot_state``, ``info`` keys):
the 47-D frames come from ``sim.humanoid_env.build_frame`` and the history
layout from ``history_layout``, so the artifact sees exactly what it was
trained on. Pushes use the task's DR YAML (``pushes``); physics is nominal.

Differences from the MuJoCo model, by necessity:
- PyBullet has no joint armature (MuJoCo: 0.01 kg m^2 per joint). The URDF
  folds it into each child link's inertia about the joint axis
  (``write_g1_urdf(fold_armature=True)``, loaded by ``load_g1``). Measured on
  the fixed-base legs, the diagonal of the inverse joint-space inertia is then
  within 0-27% of MuJoCo's, against 1.2-33x off without it (the ankles). It is
  not exact: a link's folded rotor inertia also loads its ancestors' joints with
  parallel axes (hip pitch +0.02 kg m^2, knee +0.01). The explicit PD runs at
  500 Hz as in MuJoCo, with the same gains and torque limits; the policy at
  50 Hz. Without the armature the light ankle-pitch link makes a 500 Hz PD
  unstable (kd dt / I ~ 2), and the marching policies fell within 6 s even
  without pushes (a 2 kHz PD kept it stable, but not on its feet).
- Contact is PyBullet's (the same 5 mm foot spheres, friction 1.0), and its
  default link damping (0.04) is set to zero: MuJoCo has none.
- The leg collision hulls (``LEG_HULLS``, on by default as in MuJoCo) collide
  leg against leg through PyBullet's per-link self-collision filter
  (``load_g1``); the sole box shares its link's floor contact (see there).

Imports numpy, pybullet and sim. Never sim2real or policies.
"""
from __future__ import annotations

import contextlib
import math
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

from sim.g1_model import leg_hull, load_description, quat_rotate_inverse, rpy_from_quat, standing_height_m
from sim.g1_urdf import link_inertia, principal_axes, write_g1_urdf
from sim.humanoid_env import (ACTION_SCALE, EPISODE_S, FALL_HEIGHT_M, FALL_TILT_RAD, FRAME_DIM, GAIT_PERIOD_S,
                              build_frame, check_gait_period, history_layout)

PHYSICS_DT_S = 0.002          # 500 Hz physics and PD, as in sim.g1_model
POLICY_DT_S = 0.02


@contextlib.contextmanager
def _quiet_stdout():
    """Silence C-level writes to stdout (file descriptor 1) for the block."""
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 1)
        yield
    finally:
        os.dup2(saved, 1)
        os.close(saved)


def hull_links(pb, client: int, robot: int) -> dict:
    """{"left": [link indices], "right": [...]}: the links that carry a leg collision hull (LEG_HULLS)."""
    out = {"left": [], "right": []}
    for j in range(pb.getNumJoints(robot, physicsClientId=client)):
        link = pb.getJointInfo(robot, j, physicsClientId=client)[12].decode()
        if leg_hull(link) is not None:
            out["left" if link.startswith("left_") else "right"].append(j)
    return out


def load_g1(pb, client: int, urdf: Path, base_pos, desc=None, fixed_base: bool = False,
            leg_hulls: bool = False, floor: int | None = None) -> int:
    """Load a URDF written with ``fold_armature=True`` and set the folded principal moments again: PyBullet's
    loader zeroes the ones that break the rigid-body triangle inequality (a rotor inertia may), its
    forward dynamics takes them. Returns the body id.

    ``leg_hulls`` (a URDF written with them): self-collision on, but only between a hull link of one leg and
    a hull link of the other, as in the MuJoCo twin; the thigh and shank links never touch ``floor``.
    PyBullet filters per link, not per shape, so the sole box shares its link's floor contact with the
    foot spheres; it sits 3 mm above their lowest point and reaches the floor first only past about 50
    degrees of foot tilt."""
    desc = desc or load_description()
    flags = pb.URDF_USE_INERTIA_FROM_FILE | (pb.URDF_USE_SELF_COLLISION if leg_hulls else 0)
    with _quiet_stdout():       # the loader's warnings about those moments are C writes to stdout
        robot = pb.loadURDF(str(urdf), list(base_pos), useFixedBase=fixed_base, flags=flags, physicsClientId=client)
    bodies = {b.name: b for b in desc.bodies}
    n = pb.getNumJoints(robot, physicsClientId=client)
    for j in range(n):
        link = pb.getJointInfo(robot, j, physicsClientId=client)[12].decode()
        _, moments = principal_axes(link_inertia(desc, bodies[link], fold_armature=True))
        pb.changeDynamics(robot, j, localInertiaDiagonal=moments.tolist(), physicsClientId=client)
    if leg_hulls:
        legs = hull_links(pb, client, robot)
        pairs = {(a, b) for a in legs["left"] for b in legs["right"]}
        for a in range(-1, n):
            for b in range(a + 1, n):
                if (a, b) not in pairs and (b, a) not in pairs:
                    pb.setCollisionFilterPair(robot, robot, a, b, 0, physicsClientId=client)
        if floor is not None:
            for j in legs["left"] + legs["right"]:
                if not bodies[pb.getJointInfo(robot, j, physicsClientId=client)[12].decode()].geoms:
                    pb.setCollisionFilterPair(floor, robot, -1, j, 0, physicsClientId=client)
    return robot


class G1PyBulletEnv:
    num_envs = 1

    def __init__(self, seed: int = 0, history: int = 5, episode_s: float = EPISODE_S, pushes: bool = True,
                 task: str = "stand", leg_hulls: bool = True, gait_period_s: float = GAIT_PERIOD_S):
        import pybullet as pb
        self.pb = pb
        self.desc = load_description()
        self.history = int(history)
        self.gait_period_s = check_gait_period(gait_period_s)    # the policy's (its contract's extra.gait_period_s)
        self.default_pose = self.desc.default_pose.copy()
        self.dt_s = POLICY_DT_S
        self.substeps = int(round(POLICY_DT_S / PHYSICS_DT_S))
        self.max_steps = int(round(episode_s / self.dt_s))
        self._perm, self.obs_slices = history_layout(self.history)
        self.obs_dim = FRAME_DIM * self.history
        self.command = np.zeros((1, 3))
        self.push_interval_s, self.push_max_vel = (None, 0.0)
        if pushes:
            import importlib   # the DR YAML's push figures (sim2real sits above sim: lazy)
            rnd = importlib.import_module("sim2real.humanoid_randomization")
            cfg = rnd.load_humanoid_dr_config(task=task)
            self.push_interval_s = cfg.get("pushes", "interval_s")
            self.push_max_vel = float(cfg.get("pushes", "max_vel_m_s", 0.0))
        self._tmp = tempfile.TemporaryDirectory()
        self.leg_hulls = bool(leg_hulls)
        self.urdf = write_g1_urdf(Path(self._tmp.name) / "g1_12dof.urdf", self.desc, fold_armature=True,
                                  leg_hulls=self.leg_hulls)
        self.client = pb.connect(pb.DIRECT)
        self.rng = np.random.default_rng([seed, 0xB0])
        self._build()

    def close(self):
        if self.client is not None:
            self.pb.disconnect(self.client)
            self.client = None
        self._tmp.cleanup()

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass

    def _build(self):
        pb, c = self.pb, self.client
        pb.resetSimulation(physicsClientId=c)
        pb.setGravity(0, 0, -9.81, physicsClientId=c)
        pb.setTimeStep(PHYSICS_DT_S, physicsClientId=c)
        plane = pb.createCollisionShape(pb.GEOM_PLANE, physicsClientId=c)
        self.floor = pb.createMultiBody(0, plane, physicsClientId=c)
        pb.changeDynamics(self.floor, -1, lateralFriction=1.0, physicsClientId=c)
        self.robot = load_g1(pb, c, self.urdf, [0, 0, standing_height_m() + 0.002], self.desc,
                             leg_hulls=self.leg_hulls, floor=self.floor)
        for j in range(-1, 12):
            pb.changeDynamics(self.robot, j, lateralFriction=1.0, linearDamping=0.0, angularDamping=0.0,
                              physicsClientId=c)
        # PyBullet's base pose is its inertial (CoM, principal-axis) frame, not the URDF link frame:
        # keep the offset to convert both ways.
        info = pb.getDynamicsInfo(self.robot, -1, physicsClientId=c)
        self._inertial = (info[3], info[4])
        self._inertial_inv = pb.invertTransform(info[3], info[4])
        for j in range(12):   # no built-in motors: torque control only
            pb.setJointMotorControl2(self.robot, j, pb.VELOCITY_CONTROL, force=0, physicsClientId=c)

    # ---- state in the MuJoCo layout (qpos 19: pos, quat wxyz, q; qvel 18: v world, w body, dq) ----
    def _state(self):
        pb, c, r = self.pb, self.client, self.robot
        com, com_orn = pb.getBasePositionAndOrientation(r, physicsClientId=c)
        pos, orn = pb.multiplyTransforms(com, com_orn, *self._inertial_inv)
        v_com, w = pb.getBaseVelocity(r, physicsClientId=c)
        # velocity of the link origin = v_com + w x (origin - com)
        v = np.asarray(v_com) + np.cross(w, np.asarray(pos) - np.asarray(com))
        js = pb.getJointStates(r, range(12), physicsClientId=c)
        quat = np.array([orn[3], orn[0], orn[1], orn[2]])
        w_body = quat_rotate_inverse(quat[None], np.asarray(w)[None])[0]
        qpos = np.r_[pos, quat, [s[0] for s in js]]
        qvel = np.r_[v, w_body, [s[1] for s in js]]
        return qpos, qvel

    def reset(self, seed: int | None = None):
        pb, c, r = self.pb, self.client, self.robot
        if seed is not None:
            self.rng = np.random.default_rng([seed, 0xB0])
        yaw = self.rng.uniform(-math.pi, math.pi)
        com, com_orn = pb.multiplyTransforms([0, 0, standing_height_m() + 0.002],
                                             [0, 0, math.sin(yaw / 2), math.cos(yaw / 2)], *self._inertial)
        pb.resetBasePositionAndOrientation(r, com, com_orn, physicsClientId=c)
        pb.resetBaseVelocity(r, [0, 0, 0], [0, 0, 0], physicsClientId=c)
        q0 = self.default_pose   # no joint noise: a foot sphere started inside the floor makes PyBullet pop
        for j in range(12):
            pb.resetJointState(r, j, q0[j], 0.0, physicsClientId=c)
        self.t_step = 0
        self.last_action = np.zeros((1, 12))
        self.episode_return, self.err_lin, self.err_yaw = 0.0, 0.0, 0.0
        self.next_push = self._next_push(0)
        f = self._frame()
        self.hist = np.repeat(f[:, None, :], self.history, axis=1)
        return self._observe(), {}

    def _next_push(self, now):
        if not self.push_interval_s or self.push_max_vel <= 0:
            return None
        return now + max(1, int(round(self.rng.uniform(*self.push_interval_s) / self.dt_s)))

    def _frame(self):
        qpos, qvel = self._state()
        grav = quat_rotate_inverse(qpos[None, 3:7], np.array([[0.0, 0.0, -1.0]]))
        return build_frame(qvel[None, 3:6], grav, qpos[None, 7:], qvel[None, 6:], self.command, self.last_action,
                           np.array([self.t_step * self.dt_s]), self.default_pose, self.gait_period_s)

    def _observe(self):
        return self.hist.reshape(1, -1)[:, self._perm]

    def split_obs(self, obs):
        return {name: obs[..., sl] for name, sl in self.obs_slices.items()}

    def robot_state(self, i: int = 0) -> dict:
        qpos, qvel = self._state()
        return {"q": qpos[7:], "dq": qvel[6:], "rpy": rpy_from_quat(qpos[None, 3:7])[0], "gyro": qvel[3:6],
                "quat": qpos[3:7]}

    def step_targets(self, target, action=None, kp=None, kd=None):
        pb, c, r = self.pb, self.client, self.robot
        target = np.asarray(target, float).reshape(12)
        kp = self.desc.kp if kp is None else np.asarray(kp, float).reshape(12)
        kd = self.desc.kd if kd is None else np.asarray(kd, float).reshape(12)
        if self.next_push is not None and self.t_step >= self.next_push:
            ang, rad = self.rng.uniform(0, 2 * math.pi), self.push_max_vel * math.sqrt(self.rng.uniform())
            v, w = pb.getBaseVelocity(r, physicsClientId=c)
            pb.resetBaseVelocity(r, [v[0] + rad * math.cos(ang), v[1] + rad * math.sin(ang), v[2]], w,
                                 physicsClientId=c)
            self.next_push = self._next_push(self.t_step)
        for _ in range(self.substeps):
            js = pb.getJointStates(r, range(12), physicsClientId=c)
            q, dq = np.array([s[0] for s in js]), np.array([s[1] for s in js])
            tau = np.clip(kp * (target - q) - kd * dq, -self.desc.torque_limit, self.desc.torque_limit)
            pb.setJointMotorControlArray(r, list(range(12)), pb.TORQUE_CONTROL, forces=tau.tolist(),
                                         physicsClientId=c)
            pb.stepSimulation(physicsClientId=c)
        self.t_step += 1
        self.last_action = ((target - self.default_pose) / ACTION_SCALE)[None]
        qpos, qvel = self._state()
        v_body = quat_rotate_inverse(qpos[None, 3:7], qvel[None, 0:3])[0]
        self.err_lin += float(np.linalg.norm(self.command[0, :2] - v_body[:2]))
        self.err_yaw += float(abs(self.command[0, 2] - qvel[5]))
        grav = quat_rotate_inverse(qpos[None, 3:7], np.array([[0.0, 0.0, -1.0]]))[0]
        tilt = math.acos(float(np.clip(-grav[2], -1, 1)))
        fell = bool(qpos[2] < FALL_HEIGHT_M or tilt > FALL_TILT_RAD or not np.all(np.isfinite(qpos)))
        trunc = self.t_step >= self.max_steps and not fell
        self.hist[:, :-1] = self.hist[:, 1:]
        self.hist[:, -1] = self._frame()
        obs = self._observe()
        info = {"fell": np.array([fell])}
        if fell or trunc:
            info.update(done_idx=np.array([0]), final_obs=obs.copy(), episode_fell=np.array([fell]),
                        episode_steps=np.array([self.t_step]),
                        episode_lin_vel_err=np.array([self.err_lin / self.t_step]),
                        episode_yaw_rate_err=np.array([self.err_yaw / self.t_step]),
                        episode_return=np.array([0.0]))
            obs, _ = self.reset()
        return obs, np.zeros(1, np.float32), np.array([fell]), np.array([trunc]), info
