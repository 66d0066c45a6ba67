"""Teleoperation inputs as plain Python: keyboard, gamepad (Joy), spacemouse (Twist), leader arm.

Owns the mapping from a human input device to a raw arm action (7 joint
position targets + gripper width), before the safety filter:

- ``JoyMapping``: a gamepad's axes/buttons -> Cartesian velocity, gripper,
  deadman and episode buttons (edge-detected: one press, one event).
- ``KeyboardJoy``: terminal keys -> a virtual gamepad state, so the keyboard
  goes through the same Joy path (keys hold an axis for ``hold_s``; terminals
  send key repeats, not key-up events).
- ``twist_command``: a ``geometry_msgs/Twist`` (spacemouse) -> Cartesian velocity.
- ``LeaderArmMap``: a leader arm's JointState -> follower joint targets, with
  per-joint signs and zero offsets from a calibration YAML.
- ``DifferentialIK``: Cartesian velocity -> joint targets by damped least
  squares on the profile's DH Jacobian (position + orientation), with a
  null-space pull toward the ready pose and a per-step joint speed cap.
- ``TeleopController``: the above plus the deadman and gripper logic;
  ``step(now, q, width)`` returns the raw action or ``None`` (hold).

No rclpy here: the node (``ros_nodes.teleop_node``) converts messages and
tests drive these classes directly. Imports numpy, yaml, onboard.spec and
sim2real.kinematics (the same DH model the safety filter uses; no simulator).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from onboard.errors import ConfigError

INPUTS = ("keyboard", "gamepad", "spacemouse", "leader")
EPISODE_EVENTS = ("start", "stop", "discard")


@dataclass
class TeleopInput:
    """One reading of an input device, in physical units."""
    linear_m_s: np.ndarray = field(default_factory=lambda: np.zeros(3))     # base frame
    angular_rad_s: np.ndarray = field(default_factory=lambda: np.zeros(3))  # base frame
    gripper: str | None = None         # "open" | "close" | "toggle" | None
    enabled: bool = False              # deadman held
    events: list[str] = field(default_factory=list)   # EPISODE_EVENTS pressed now


# ---- gamepad ---------------------------------------------------------------------

@dataclass
class JoyMapping:
    """Axis/button layout of a gamepad as the ``joy`` driver reports it (default: Xbox-style).

    Linear: left stick -> x (forward) / y (left); right stick vertical -> z; right stick
    horizontal -> yaw. Hold ``deadman`` (LB) to move. A closes the gripper, B opens it.
    Start begins an episode, Y stops and saves it, Back discards it.
    """
    axis_x: int = 1
    axis_y: int = 0
    axis_z: int = 4
    axis_yaw: int = 3
    sign_x: float = 1.0
    sign_y: float = 1.0
    sign_z: float = 1.0
    sign_yaw: float = 1.0
    deadzone: float = 0.1
    max_linear_m_s: float = 0.15
    max_angular_rad_s: float = 0.6
    deadman: int = 4
    gripper_close: int = 0
    gripper_open: int = 1
    gripper_toggle: int = -1
    start: int = 7
    stop: int = 3
    discard: int = 6
    _prev: tuple = ()

    def _axis(self, axes, i: int) -> float:
        if i < 0 or i >= len(axes):
            return 0.0
        v = float(axes[i])
        if not math.isfinite(v) or abs(v) < self.deadzone:
            return 0.0
        # rescale so the output is continuous at the deadzone edge
        return math.copysign((min(abs(v), 1.0) - self.deadzone) / (1.0 - self.deadzone), v)

    def read(self, axes, buttons) -> TeleopInput:
        buttons = [int(b) for b in buttons]
        prev = self._prev or tuple(0 for _ in buttons)
        pressed = {i for i, b in enumerate(buttons) if b and (i >= len(prev) or not prev[i])}
        self._prev = tuple(buttons)

        def held(i):
            return 0 <= i < len(buttons) and bool(buttons[i])

        out = TeleopInput(enabled=held(self.deadman))
        out.linear_m_s = self.max_linear_m_s * np.array([self.sign_x * self._axis(axes, self.axis_x),
                                                         self.sign_y * self._axis(axes, self.axis_y),
                                                         self.sign_z * self._axis(axes, self.axis_z)])
        out.angular_rad_s = np.array([0.0, 0.0, self.max_angular_rad_s * self.sign_yaw * self._axis(axes, self.axis_yaw)])
        if self.gripper_close in pressed:
            out.gripper = "close"
        elif self.gripper_open in pressed:
            out.gripper = "open"
        elif self.gripper_toggle in pressed:
            out.gripper = "toggle"
        for name in EPISODE_EVENTS:
            if getattr(self, name) in pressed:
                out.events.append(name)
        return out


class KeyboardJoy:
    """Terminal keys -> the axes/buttons of a virtual gamepad laid out like ``JoyMapping()``.

    w/s: +x/-x, a/d: +y/-y, r/f: up/down, q/e: yaw left/right (each held for ``hold_s``
    after the last key repeat). Space toggles the enable latch (a keyboard has no
    deadman to hold). g toggles the gripper. b begins an episode, n stops and saves
    it, x discards it.
    """
    MOTION = {"w": (1, +1.0), "s": (1, -1.0), "a": (0, +1.0), "d": (0, -1.0),
              "r": (4, +1.0), "f": (4, -1.0), "q": (3, +1.0), "e": (3, -1.0)}
    BUTTONS = {"b": 7, "n": 3, "x": 6, "g": 0}
    N_AXES, N_BUTTONS = 8, 11

    def __init__(self, hold_s: float = 0.3):
        self.hold_s = hold_s
        self.enabled = False
        self._axes_until: dict[int, tuple[float, float]] = {}
        self._button_pending: set[int] = set()
        self._gripper_closed = False

    def press(self, key: str, now_s: float) -> None:
        key = key.lower()
        if key == " ":
            self.enabled = not self.enabled
        elif key in self.MOTION:
            axis, value = self.MOTION[key]
            self._axes_until[axis] = (value, now_s + self.hold_s)
        elif key == "g":
            self._gripper_closed = not self._gripper_closed
            self._button_pending.add(0 if self._gripper_closed else 1)
        elif key in self.BUTTONS:
            self._button_pending.add(self.BUTTONS[key])

    def state(self, now_s: float) -> tuple[list[float], list[int]]:
        """(axes, buttons) now; a button press shows as pressed in exactly one state."""
        axes = [0.0] * self.N_AXES
        for axis, (value, until) in list(self._axes_until.items()):
            if now_s <= until:
                axes[axis] = value
            else:
                del self._axes_until[axis]
        buttons = [0] * self.N_BUTTONS
        buttons[4] = int(self.enabled)            # the deadman of JoyMapping()
        for b in self._button_pending:
            buttons[b] = 1
        self._button_pending.clear()
        return axes, buttons


# ---- spacemouse ------------------------------------------------------------------

def twist_command(linear, angular, *, max_linear_m_s: float = 0.15, max_angular_rad_s: float = 0.6,
                  scale_linear: float = 1.0, scale_angular: float = 1.0) -> TeleopInput:
    """A Twist (spacemouse, already in m/s and rad/s after ``scale_*``) -> a clamped TeleopInput.

    The deadman for twist input is freshness: the node treats a twist older than its
    timeout as released.
    """
    lin = np.nan_to_num(np.asarray(linear, dtype=float) * scale_linear)
    ang = np.nan_to_num(np.asarray(angular, dtype=float) * scale_angular)
    n = np.linalg.norm(lin)
    if n > max_linear_m_s:
        lin = lin * (max_linear_m_s / n)
    ang = np.clip(ang, -max_angular_rad_s, max_angular_rad_s)
    return TeleopInput(linear_m_s=lin, angular_rad_s=ang, enabled=True)


# ---- leader arm ------------------------------------------------------------------

@dataclass
class LeaderArmMap:
    """follower_q[i] = sign[i] * leader_q[leader_names[i]] + offset_rad[i]; width = scale * g + offset_m."""
    leader_names: tuple[str, ...]
    signs: np.ndarray
    offsets_rad: np.ndarray
    gripper_joint: str = ""
    gripper_scale: float = 1.0
    gripper_offset_m: float = 0.0

    @classmethod
    def identity(cls, joint_names) -> "LeaderArmMap":
        n = len(joint_names)
        return cls(tuple(joint_names), np.ones(n), np.zeros(n))

    @classmethod
    def from_yaml(cls, path, follower_joints) -> "LeaderArmMap":
        """Read ``calibration_kind: leader_arm`` (names, signs, offsets, gripper) or ``joints``
        (``onboard calibrate joints`` output: the leader's zero offsets, signs +1)."""
        import yaml
        path = Path(path)
        try:
            doc = yaml.safe_load(path.read_text())
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError(f"cannot read the leader calibration: {exc}", file=str(path),
                              fix="pass a YAML written by `onboard calibrate joints` or a leader_arm file") from exc
        if not isinstance(doc, dict):
            raise ConfigError("not a mapping", file=str(path), fix="see docs/teleop.md (leader arm)")
        n = len(follower_joints)
        names = doc.get("leader_joint_names", doc.get("joint_names", list(follower_joints)))
        signs = doc.get("signs", [1.0] * n)
        offsets = doc.get("zero_offsets_rad", [0.0] * n)
        for fld, v in (("leader_joint_names", names), ("signs", signs), ("zero_offsets_rad", offsets)):
            if not isinstance(v, list) or len(v) != n:
                raise ConfigError(f"expected a list of {n} values, got {v!r}", file=str(path), field=fld,
                                  fix=f"one entry per follower joint {list(follower_joints)}")
        try:
            signs_a = np.asarray(signs, dtype=float)
            offsets_a = np.asarray(offsets, dtype=float)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"non-numeric value: {exc}", file=str(path), field="signs/zero_offsets_rad",
                              fix="write numbers") from exc
        if not np.all(np.isin(signs_a, (-1.0, 1.0))):
            raise ConfigError(f"signs must be +1 or -1, got {signs}", file=str(path), field="signs",
                              fix="use 1 or -1 per joint")
        if not np.all(np.isfinite(offsets_a)):
            raise ConfigError("non-finite offset", file=str(path), field="zero_offsets_rad", fix="write finite numbers")
        g = doc.get("gripper") or {}
        return cls(tuple(str(x) for x in names), signs_a, offsets_a, str(g.get("joint", "")),
                   float(g.get("scale", 1.0)), float(g.get("offset_m", 0.0)))

    def follower(self, names, positions) -> tuple[np.ndarray, float | None]:
        """Leader JointState fields -> (follower q, gripper width or None). KeyError if a joint is missing."""
        index = {n: i for i, n in enumerate(names)}
        pos = np.asarray(positions, dtype=float)
        q = np.array([pos[index[n]] for n in self.leader_names])
        q = self.signs * q + self.offsets_rad
        width = None
        if self.gripper_joint and self.gripper_joint in index:
            width = self.gripper_scale * pos[index[self.gripper_joint]] + self.gripper_offset_m
        return q, width


# ---- differential IK -------------------------------------------------------------

def _rotvec_to_matrix(w: np.ndarray) -> np.ndarray:
    th = float(np.linalg.norm(w))
    if th < 1e-12:
        return np.eye(3)
    k = w / th
    K = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    return np.eye(3) + math.sin(th) * K + (1 - math.cos(th)) * K @ K


def _matrix_to_rotvec(R: np.ndarray) -> np.ndarray:
    c = max(-1.0, min(1.0, (np.trace(R) - 1) / 2))
    th = math.acos(c)
    v = np.array([R[2, 1] - R[1, 2], R[0, 2] - R[2, 0], R[1, 0] - R[0, 1]])
    if th < 1e-9:
        return 0.5 * v
    if math.pi - th < 1e-6:        # near pi: axis from the symmetric part
        axis = np.sqrt(np.maximum((np.diag(R) + 1) / 2, 0))
        axis *= np.sign(v + 1e-300) if np.any(v) else 1.0
        return th * axis / max(np.linalg.norm(axis), 1e-12)
    return th / (2 * math.sin(th)) * v


class DifferentialIK:
    """Cartesian velocity of the TCP -> joint position targets (damped least squares on the DH model)."""

    def __init__(self, kin, q_rest, q_limits, max_joint_speed_rad_s, *, damping: float = 0.05,
                 null_gain: float = 0.5, gain: float = 1.0, max_lead_m: float = 0.05, max_lead_rad: float = 0.3,
                 box_min=None, box_max=None):
        self.kin = kin
        self.q_rest = np.asarray(q_rest, dtype=float)
        self.lo, self.hi = np.asarray(q_limits, dtype=float).T
        self.vmax = np.asarray(max_joint_speed_rad_s, dtype=float)
        self.damping, self.null_gain, self.gain = damping, null_gain, gain
        self.max_lead_m, self.max_lead_rad = max_lead_m, max_lead_rad
        self.box_min = None if box_min is None else np.asarray(box_min, dtype=float)
        self.box_max = None if box_max is None else np.asarray(box_max, dtype=float)
        self.q = None
        self.p_target = None
        self.R_target = None

    def pose(self, q) -> tuple[np.ndarray, np.ndarray]:
        _, T = self.kin._frames(np.asarray(q, dtype=float))
        return T[:3, 3].copy(), T[:3, :3].copy()

    def jacobian(self, q) -> np.ndarray:
        """(6, n): linear rows on top, angular below, base frame."""
        frames, T = self.kin._frames(np.asarray(q, dtype=float))
        p = T[:3, 3]
        F = np.stack(frames)
        z = F[:, :3, 2]
        J = np.empty((6, len(frames)))
        J[:3] = np.cross(z, p - F[:, :3, 3]).T
        J[3:] = z.T
        return J

    def reset(self, q) -> None:
        """Start from joint positions ``q``: the target pose is the pose there."""
        self.q = np.asarray(q, dtype=float).copy()
        self.p_target, self.R_target = self.pose(self.q)

    def step(self, linear_m_s, angular_rad_s, dt_s: float, iterations: int = 2) -> np.ndarray:
        """Move the target pose by the velocity for ``dt_s`` and return the joint targets that track it."""
        if self.q is None:
            raise RuntimeError("DifferentialIK.step before reset(q)")
        self.p_target = self.p_target + np.asarray(linear_m_s, dtype=float) * dt_s
        if self.box_min is not None:
            self.p_target = np.clip(self.p_target, self.box_min, self.box_max)
        self.R_target = _rotvec_to_matrix(np.asarray(angular_rad_s, dtype=float) * dt_s) @ self.R_target
        q = self.q.copy()
        n = len(q)
        step_cap = self.vmax * dt_s
        lam2 = self.damping ** 2
        for _ in range(iterations):
            p, R = self.pose(q)
            e = np.r_[self.p_target - p, _matrix_to_rotvec(self.R_target @ R.T)]
            J = self.jacobian(q)
            JJt = J @ J.T + lam2 * np.eye(6)
            J_pinv = J.T @ np.linalg.solve(JJt, np.eye(6))
            dq = J_pinv @ (self.gain * e) + (np.eye(n) - J_pinv @ J) @ (self.null_gain * (self.q_rest - q)) * dt_s
            q = q + dq
        dq = np.clip(q - self.q, -step_cap, step_cap)
        q = np.clip(self.q + dq, self.lo, self.hi)
        self.q = q
        # the target may not run away from what the arm can reach (limits, clamps): no wind-up
        p, R = self.pose(q)
        lead = self.p_target - p
        d = float(np.linalg.norm(lead))
        if d > self.max_lead_m:
            self.p_target = p + lead * (self.max_lead_m / d)
        r = _matrix_to_rotvec(self.R_target @ R.T)
        a = float(np.linalg.norm(r))
        if a > self.max_lead_rad:
            self.R_target = _rotvec_to_matrix(r * (self.max_lead_rad / a)) @ R
        return q.copy()


# ---- the controller --------------------------------------------------------------

class TeleopController:
    """Deadman, gripper and IK around one input kind; ``step`` gives the raw (pre-filter) action.

    ``step(now, q_measured, width_measured)`` returns ``(n_joints + 1,)`` = joint targets
    + gripper width, or ``None`` while disengaged (the node then holds the last command).
    Engaging (deadman pressed, fresh leader/twist messages) re-seeds the IK from the
    measured joints, so a pause never causes a jump.
    """

    def __init__(self, profile, kind: str = "gamepad", *, rate_hz: float = 50.0, input_timeout_s: float = 0.3,
                 leader_map: LeaderArmMap | None = None, joy_mapping: JoyMapping | None = None,
                 max_linear_m_s: float = 0.15, max_angular_rad_s: float = 0.6, gripper_speed_m_s: float = 0.05,
                 box_min=None, box_max=None):
        from sim2real.kinematics import SerialArmKinematics
        if kind not in INPUTS:
            raise ConfigError(f"unknown teleop input {kind!r}", field="input", fix=f"use one of {list(INPUTS)}")
        self.kind = kind
        self.profile = profile
        self.dt = 1.0 / float(rate_hz)
        self.input_timeout_s = float(input_timeout_s)
        self.n = profile.n_joints
        self.max_width = float((profile.gripper or {}).get("max_width_m", 0.08))
        self.gripper_speed = float(gripper_speed_m_s)
        self.max_linear_m_s, self.max_angular_rad_s = max_linear_m_s, max_angular_rad_s
        self.joy = joy_mapping or JoyMapping(max_linear_m_s=max_linear_m_s, max_angular_rad_s=max_angular_rad_s)
        self.leader = leader_map or LeaderArmMap.identity(profile.joint_names)
        lim = profile.limits
        rest = (profile.default_pose[: self.n] if profile.default_pose is not None
                else lim.position.mean(axis=1))
        self.ik = DifferentialIK(SerialArmKinematics.from_profile(profile), rest,
                                 lim.position, 0.5 * lim.velocity, box_min=box_min, box_max=box_max)
        self.input = TeleopInput()
        self.input_t = -math.inf
        self.leader_q: np.ndarray | None = None
        self.leader_width: float | None = None
        self.width_target: float | None = None
        self.engaged = False
        self.events: list[str] = []
        self.engagements = 0

    # ---- inputs ----------------------------------------------------------------------
    def on_joy(self, axes, buttons, now_s: float) -> None:
        reading = self.joy.read(axes, buttons)
        self.events.extend(reading.events)
        if reading.gripper:
            self._gripper(reading.gripper)
        if self.kind in ("gamepad", "keyboard"):
            self.input, self.input_t = reading, now_s
        elif self.kind == "spacemouse":     # a spacemouse's Joy carries only its buttons
            pass

    def on_twist(self, linear, angular, now_s: float) -> None:
        if self.kind != "spacemouse":
            return
        self.input = twist_command(linear, angular, max_linear_m_s=self.max_linear_m_s,
                                   max_angular_rad_s=self.max_angular_rad_s)
        self.input_t = now_s

    def on_leader(self, names, positions, now_s: float) -> bool:
        if self.kind != "leader":
            return False
        try:
            q, width = self.leader.follower(names, positions)
        except KeyError:
            return False
        if not np.all(np.isfinite(q)):
            return False
        self.leader_q, self.leader_width = q, width
        self.input, self.input_t = TeleopInput(enabled=True), now_s
        return True

    def _gripper(self, what: str) -> None:
        closed = self.width_target is not None and self.width_target < 0.5 * self.max_width
        if what == "toggle":
            what = "open" if closed else "close"
        self.width_target = 0.0 if what == "close" else self.max_width

    def take_events(self) -> list[str]:
        ev, self.events = self.events, []
        return ev

    # ---- the loop --------------------------------------------------------------------
    def step(self, now_s: float, q_measured, width_measured: float) -> np.ndarray | None:
        fresh = now_s - self.input_t <= self.input_timeout_s
        enabled = fresh and self.input.enabled
        if not enabled:
            self.engaged = False
            return None
        if not self.engaged:
            self.engaged = True
            self.engagements += 1
            self.ik.reset(q_measured)
            self._width = float(width_measured)
        if self.kind == "leader":
            q = np.clip(self.leader_q, self.ik.lo, self.ik.hi)
            if self.leader_width is not None:
                self.width_target = float(self.leader_width)
        else:
            q = self.ik.step(self.input.linear_m_s, self.input.angular_rad_s, self.dt)
        if self.width_target is not None:    # move the gripper at its rated speed toward the target
            step = self.gripper_speed * self.dt
            self._width += float(np.clip(self.width_target - self._width, -step, step))
        width = float(np.clip(self._width, 0.0, self.max_width))
        return np.r_[q, width]


def select_command(teleop_raw, policy_cmd, policy_age_s: float, policy_timeout_s: float,
                   policy_width, last_safe: np.ndarray) -> tuple[np.ndarray, str]:
    """The teleop/policy mux: teleop always wins while engaged; a fresh policy command is forwarded
    while the human is disengaged; otherwise hold the last safe command. Returns (raw command, source).

    ``teleop_raw``: the controller's command (arm joints + gripper width) or None when disengaged.
    ``policy_cmd``: the policy's arm joint targets or None; ``policy_width``: its gripper width or None.
    """
    if teleop_raw is not None:
        return np.asarray(teleop_raw, dtype=float), "teleop"
    if policy_cmd is not None and policy_age_s <= policy_timeout_s:
        width = policy_width if policy_width is not None else float(last_safe[-1])
        return np.r_[np.asarray(policy_cmd, dtype=float), width], "policy"
    return np.asarray(last_safe, dtype=float).copy(), "hold"
