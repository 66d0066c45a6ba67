"""Scripted experts for ``ArmEnv``: reach, push (two routes), pick-and-place.

Owns the demonstrators behind ``onboard collect``. Each expert plans a TCP
path of waypoints from privileged state (object pose and size, target), plays
it with minimum-jerk timing, and turns each 10 Hz TCP set-point into absolute
joint targets with ``sim.kinematics.PandaIK`` (damped least squares with a
null-space pull to the ready pose). The output is the policy's action type:
7 joint targets [rad] + gripper width [m].

Demonstrations vary on purpose: heights, offsets and speeds are drawn per
episode, and ``push`` goes around the block on the LEFT or on the RIGHT
(``expert.route``), so the data is multimodal.

Imports: numpy, sim. Never imports sim2real or policies.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from sim.kinematics import PandaIK, down_rotation

GRIPPER_SPEED_M_S = 0.05        # Franka Hand max finger speed (profile gripper.max_speed_m_s)


@dataclass
class Waypoint:
    pos: np.ndarray          # TCP position [m]
    yaw: float               # TCP yaw [rad] about world z (gripper pointing down)
    width: float             # commanded gripper width [m]
    duration_s: float        # time to reach this waypoint from the previous one


def _min_jerk(s: float) -> float:
    s = min(max(s, 0.0), 1.0)
    return s * s * s * (10 - 15 * s + 6 * s * s)


class ScriptedExpert:
    """Plays a waypoint plan through IK. Subclasses write ``plan(rng) -> list[Waypoint]``."""

    def __init__(self, env):
        self.env = env
        ix = env.ix
        self.ik = PandaIK(env.model, ix.arm_qpos_adr, ix.arm_dof_adr, ix.tcp_site_id,
                          env.ready_pose, env.profile.limits.position)
        self.dt_s = 1.0 / env.control_hz
        self.rng = np.random.default_rng(0)
        self.route = None
        self._plan = None

    def reset(self, seed: int | None = None) -> None:
        if seed is not None:
            self.rng = np.random.default_rng(seed)
        self._plan = None

    # Subclasses ------------------------------------------------------------
    def plan(self, start: Waypoint) -> list[Waypoint]:
        raise NotImplementedError

    def speed(self, lo=0.2, hi=0.3) -> float:
        return float(self.rng.uniform(lo, hi))

    def move(self, prev: Waypoint, pos, *, yaw=None, width=None, speed=None, min_s=0.6) -> Waypoint:
        pos = np.asarray(pos, dtype=float)
        yaw = prev.yaw if yaw is None else yaw
        width = prev.width if width is None else width
        dist = float(np.linalg.norm(pos - prev.pos))
        dur = max(min_s, dist / (speed or self.speed()), abs(yaw - prev.yaw) / 1.0,
                  abs(width - prev.width) / GRIPPER_SPEED_M_S)
        return Waypoint(pos, yaw, width, dur)

    # Playback --------------------------------------------------------------
    def _start(self) -> None:
        env = self.env
        self.q_cmd = env.data.qpos[env.ix.arm_qpos_adr].copy()
        x, R = self.ik.forward(self.q_cmd)
        start = Waypoint(x, math.atan2(R[1, 0], R[0, 0]), env.gripper_width(), 0.0)
        self._waypoints = [start] + self.plan(start)
        self._t_ends = np.cumsum([w.duration_s for w in self._waypoints])
        self._t = 0.0
        self._plan = True

    def setpoint(self, t: float) -> Waypoint:
        wps, ends = self._waypoints, self._t_ends
        k = int(np.searchsorted(ends, t, side="right"))
        if k >= len(wps):
            return wps[-1]
        a, b = wps[k - 1], wps[k]
        frac = (t - ends[k - 1]) / max(b.duration_s, 1e-9)
        s = _min_jerk(frac)
        # The gripper ramps at constant speed (never above the hand's max speed); the TCP min-jerk.
        ramp = min(abs(b.width - a.width), GRIPPER_SPEED_M_S * (t - ends[k - 1]))
        width = a.width + math.copysign(ramp, b.width - a.width)
        return Waypoint(a.pos + s * (b.pos - a.pos), a.yaw + s * (b.yaw - a.yaw), width, 0.0)

    @property
    def done(self) -> bool:
        return self._plan is not None and self._t >= self._t_ends[-1]

    def act(self, obs=None) -> np.ndarray:
        if self._plan is None:
            self._start()
        self._t += self.dt_s
        sp = self.setpoint(self._t)
        self.q_cmd = self.ik.solve(self.q_cmd, sp.pos, down_rotation(sp.yaw))
        return np.concatenate([self.q_cmd, [sp.width]]).astype(np.float32)


class ReachExpert(ScriptedExpert):
    def plan(self, start):
        target = self.env.target_pos.copy()
        wps = []
        prev = start
        if self.rng.random() < 0.5:   # sometimes via an intermediate point: varied paths
            mid = 0.5 * (start.pos + target) + self.rng.uniform(-0.05, 0.05, 3)
            prev = self.move(prev, mid)
            wps.append(prev)
        wps.append(self.move(prev, target, min_s=1.0))
        wps.append(Waypoint(target, prev.yaw, prev.width, 2.0))
        return wps


class PushExpert(ScriptedExpert):
    """Around the block on the left (+y) or the right (-y), then push it back toward the robot."""
    PUSH_WIDTH_M = 0.0
    FINGER_HALF_DEPTH_M = 0.012   # TCP to the finger face that touches the block (along x)

    def choose_side(self, rng) -> float:
        """+1: around the block on the left (+y), -1: on the right. ``sim.lang_experts`` forces a side."""
        return 1.0 if rng.random() < 0.5 else -1.0

    def plan(self, start):
        env, rng = self.env, self.rng
        (bx, by, _), yaw = env.object_pose()
        h = float(env.model.geom_size[env.ix.object_geom_id][0])
        tx, ty = env.target_pos[:2]
        # Meet the far face flush (pusher turned to the block's yaw), then turn back to yaw 0
        # while pushing: the two-finger contact drags the block's yaw along to the target's.
        face_yaw = (yaw + math.pi / 4) % (math.pi / 2) - math.pi / 4
        normal = np.array([math.cos(face_yaw), math.sin(face_yaw)])
        side = self.choose_side(rng)
        self.route = "left" if side > 0 else "right"
        lateral = h + rng.uniform(0.10, 0.13)
        z_hi = rng.uniform(0.08, 0.14)
        z_push = rng.uniform(0.016, 0.022)
        w = self.PUSH_WIDTH_M
        p1 = self.move(start, [bx + rng.uniform(-0.03, 0.03), by + side * lateral, z_hi], width=w,
                       yaw=face_yaw)
        beyond = h + rng.uniform(0.06, 0.08)
        p2 = self.move(p1, [bx + beyond, by + side * lateral * rng.uniform(0.8, 1.0), z_push],
                       speed=self.speed(0.12, 0.2))
        contact = self.FINGER_HALF_DEPTH_M + h
        pre = np.array([bx, by]) + normal * (contact + 0.012)
        p3 = self.move(p2, [pre[0], pre[1], z_push], speed=self.speed(0.08, 0.12))
        self._contact = contact
        self._z_push = z_push
        self._push_speed = self.speed(0.05, 0.08)
        self._pushing = False
        return [p1, p2, p3]

    def act(self, obs=None) -> np.ndarray:
        """Plan playback up to the pre-push point, then closed-loop pushing on the block pose."""
        if self._plan is None or not self.done:
            self._pushing = False
            return super().act(obs)
        env = self.env
        (bx, by, _), _ = env.object_pose()
        goal = env.target_pos[:2]
        to_goal = goal - np.array([bx, by])
        dist = float(np.linalg.norm(to_goal))
        if not self._pushing:
            self._pushing = True
            self._yaw = self._waypoints[-1].yaw
            self._sp = self._waypoints[-1].pos.copy()
            self._push_dir = to_goal / max(dist, 1e-9)
            self._pushing_done = False
        if not self._pushing_done:
            d = to_goal / max(dist, 1e-9)
            # Stop once close, or once the block has slid past the target: never chase it back.
            if dist < 0.01 or float(np.dot(d, self._push_dir)) < 0:
                self._pushing_done = True
            # The pad faces the push direction; the block squares up against it.
            yaw_des = float(np.clip(math.atan2(-d[1], -d[0]), -0.3, 0.3))
            self._yaw += float(np.clip(yaw_des - self._yaw, -0.05, 0.05))
            behind = np.array([bx, by]) - d * self._contact
            step = min(self._push_speed * self.dt_s, dist)
            sp_xy = behind + d * (step + 0.004)
            # Slew-limit the set-point so the commands stay smooth at 10 Hz.
            delta = sp_xy - self._sp[:2]
            n = float(np.linalg.norm(delta))
            max_step = 1.5 * self._push_speed * self.dt_s
            if n > max_step:
                delta *= max_step / n
            self._sp[:2] += delta
            self._sp[2] = self._z_push
        if self._pushing_done:
            self._sp[2] = min(self._sp[2] + 0.01, self._z_push + 0.06)   # done: lift off
        self.q_cmd = self.ik.solve(self.q_cmd, self._sp, down_rotation(self._yaw))
        return np.concatenate([self.q_cmd, [self.PUSH_WIDTH_M]]).astype(np.float32)


class PickPlaceExpert(ScriptedExpert):
    def plan(self, start):
        env, rng = self.env, self.rng
        (cx, cy, _), yaw = env.object_pose()
        h = float(env.model.geom_size[env.ix.object_geom_id][2])
        tx, ty = env.target_pos[:2]
        grasp_yaw = (yaw + math.pi / 4) % (math.pi / 2) - math.pi / 4   # the cube is 90-deg symmetric
        z_hi = rng.uniform(0.10, 0.15)
        z_grasp = h + rng.uniform(-0.008, -0.002)
        wps = []
        p = self.move(start, [cx, cy, z_hi], yaw=grasp_yaw, width=0.08, min_s=1.0)
        wps.append(p)
        p = self.move(p, [cx, cy, z_grasp], speed=self.speed(0.1, 0.15))
        wps.append(p)
        p = Waypoint(p.pos, p.yaw, 0.0, 0.08 / GRIPPER_SPEED_M_S + rng.uniform(0.1, 0.3))  # close
        wps.append(p)
        p = self.move(p, [cx, cy, z_hi], speed=self.speed(0.1, 0.15))
        wps.append(p)
        p = self.move(p, [tx, ty, z_hi])
        wps.append(p)
        p = self.move(p, [tx, ty, h + rng.uniform(0.0, 0.006)], speed=self.speed(0.08, 0.12))
        wps.append(p)
        p = Waypoint(p.pos, p.yaw, 0.08, 0.08 / GRIPPER_SPEED_M_S + 0.05)                # release
        wps.append(p)
        p = self.move(p, [tx, ty, h + rng.uniform(0.08, 0.12)], speed=self.speed(0.1, 0.15))
        wps.append(p)
        return wps


EXPERTS = {"reach": ReachExpert, "push": PushExpert, "pick_place": PickPlaceExpert}


def make_expert(env) -> ScriptedExpert:
    return EXPERTS[env.task](env)


def run_episode(env, expert, seed: int | None = None, record=None) -> dict:
    """Roll out one expert episode; ``record(obs, action)`` is called per step. Returns a summary."""
    obs, info = env.reset(seed=seed)
    expert.reset(seed=info["episode_seed"] % (2**32))
    steps, success = 0, False
    while True:
        action = expert.act(obs)
        if record is not None:
            record(obs, action)
        obs, _, terminated, truncated, info = env.step(action)
        steps += 1
        if terminated or truncated:
            success = bool(info["success"])
            break
    return {"success": success, "steps": steps, "route": expert.route}
