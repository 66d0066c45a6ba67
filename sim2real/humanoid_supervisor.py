"""The humanoid's deployment state machine: ZERO_TORQUE -> RAMP -> ACTIVE -> DAMPING.

Owns ``HumanoidSupervisor``, the plain class between a 50 Hz policy and the leg
motors (sim node, unitree_hg adapter, sim evaluation). Every tick it returns a
``LegCommand`` (PD target, kp, kd per joint), which is what a Unitree
``LowCmd`` carries. The safety filter (``sim2real.safety.SafetyFilter``,
humanoid kind) does the checking; the supervisor only sequences:

- ZERO_TORQUE (power-on, after ``reset()``): kp = kd = 0, the motors are limp.
  ``start(state, t)`` needs a fresh, upright state; it resets the filter,
  whose ramp-in then blends from the measured pose to the default pose over
  the envelope's ``ramp_in.duration_s`` (2 s for the G1) -> RAMP.
- RAMP: targets = the filter's output for the default pose (ramp + joint
  stream limits), nominal gains. When the filter's ramp is done -> ACTIVE.
- ACTIVE: targets = the filter's output for the policy's target.
- DAMPING: kp = 0, kd = the damping gains, targets = the measured pose. Entered
  from RAMP or ACTIVE when the filter falls back (tilt beyond the envelope's
  roll/pitch limits, stale state or stale commands: its watchdog), or on
  ``damp()``. Latched: only ``reset()`` (-> ZERO_TORQUE) leaves it.

Plain Python + numpy: no ROS, no simulator. Imports sim2real.safety only.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sim2real.safety import DAMPING as FILTER_DAMPING, ESTOP as FILTER_ESTOP, RUN as FILTER_RUN, SafetyFilter

ZERO_TORQUE, RAMP, ACTIVE, DAMPING = "ZERO_TORQUE", "RAMP", "ACTIVE", "DAMPING"


@dataclass(frozen=True)
class LegCommand:
    """One tick's motor command: PD target [rad], kp [N m/rad], kd [N m s/rad] per joint."""
    q_target: np.ndarray
    kp: np.ndarray
    kd: np.ndarray
    mode: str


class HumanoidSupervisor:
    def __init__(self, safety: SafetyFilter, kp=None, kd=None, damping_kd=None):
        if safety.kind != "humanoid":
            raise ValueError(f"HumanoidSupervisor needs a humanoid safety filter, got kind {safety.kind!r}")
        self.safety = safety
        p = safety.profile
        gains = p.raw.get("pd_gains", {})
        self.kp = np.asarray(kp if kp is not None else gains["kp"], float)
        self.kd = np.asarray(kd if kd is not None else gains["kd"], float)
        self.damping_kd = np.asarray(damping_kd if damping_kd is not None else self.kd, float)
        self.default_pose = np.asarray(p.default_pose, float)
        self.n = len(self.default_pose)
        self._mode = ZERO_TORQUE
        self.reason: str | None = None
        self.transitions: list[tuple[float, str, str, str]] = []   # (t, from, to, why)

    @property
    def mode(self) -> str:
        return self._mode

    def _go(self, mode: str, t: float, why: str) -> None:
        if mode != self._mode:
            self.transitions.append((float(t), self._mode, mode, why))
            self._mode = mode
            self.reason = why

    def _upright_and_fresh(self, state: dict, stamp_s: float, t: float) -> str | None:
        env = self.safety.env
        if t - stamp_s > env.state_timeout_s:
            return "stale state"
        q = np.asarray(state.get("q", []), float)
        if q.shape != (self.n,) or not np.all(np.isfinite(q)):
            return "bad joint state"
        rpy = np.asarray(state.get("rpy", [0.0, 0.0, 0.0]), float)
        if not np.all(np.isfinite(rpy)) or abs(rpy[0]) > env.max_roll or abs(rpy[1]) > env.max_pitch:
            return "tilted"
        return None

    def start(self, state: dict, t: float, stamp_s: float | None = None) -> bool:
        """ZERO_TORQUE -> RAMP, if the state is fresh, finite and upright. Returns whether it started."""
        if self._mode != ZERO_TORQUE:
            return False
        stamp_s = t if stamp_s is None else stamp_s
        problem = self._upright_and_fresh(state, stamp_s, t)
        if problem:
            self.reason = f"start refused: {problem}"
            return False
        self.safety.reset(state, stamp_s)
        self._go(RAMP, t, "start")
        return True

    def damp(self, t: float, why: str = "operator") -> None:
        if self._mode in (RAMP, ACTIVE):
            self._go(DAMPING, t, why)

    def reset(self, t: float = 0.0) -> None:
        """Leave DAMPING (or stop): back to limp motors. The next start() ramps in again."""
        self._go(ZERO_TORQUE, t, "reset")

    def _measured(self, state) -> np.ndarray:
        q = np.asarray(state.get("q", np.full(self.n, np.nan)), float).ravel()
        return np.where(np.isfinite(q), q, self.default_pose) if q.shape == (self.n,) else self.default_pose.copy()

    def step(self, state: dict | None, stamp_s: float, t: float, policy_target=None) -> LegCommand:
        """One tick. ``state`` = {"q", "dq", "rpy"} stamped ``stamp_s``; ``policy_target`` (12,) or None."""
        state = state or {}
        zero = np.zeros(self.n)
        if self._mode == ZERO_TORQUE:
            return LegCommand(self._measured(state), zero, zero, ZERO_TORQUE)
        if self._mode in (RAMP, ACTIVE):
            if state:
                self.safety.update_state(state, stamp_s)
            cmd = self.default_pose if self._mode == RAMP else policy_target
            out = self.safety.filter(None if cmd is None else np.asarray(cmd, float), t)
            fm = self.safety.mode
            if fm in (FILTER_DAMPING, FILTER_ESTOP):
                why = self.safety._fallback_reason or self.safety.estop_reason or fm.lower()
                self._go(DAMPING, t, why)
            elif self._mode == RAMP and fm == FILTER_RUN:
                self._go(ACTIVE, t, "ramp done")
            if self._mode != DAMPING:
                if not np.all(np.isfinite(out)):   # never send a non-finite target
                    self._go(DAMPING, t, "non-finite target")
                else:
                    return LegCommand(out, self.kp.copy(), self.kd.copy(), self._mode)
        return LegCommand(self._measured(state), zero, self.damping_kd.copy(), DAMPING)

    def summary(self) -> dict:
        return {"mode": self._mode, "reason": self.reason,
                "transitions": [{"t": t, "from": a, "to": b, "why": w} for t, a, b, w in self.transitions],
                "safety": self.safety.summary()}

