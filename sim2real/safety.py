"""The layered safety filter: no command reaches a robot without passing it (DESIGN §5).

Owns ``SafetyFilter``, the one object that sits between a policy and a robot in
training-time evaluation, in simulation nodes and on the robot. Per command:

1. non-finite values are rejected;
2. ramp-in blends from the current state after reset / resume;
3. joint position (soft margin), velocity, acceleration and jerk limits on the
   command stream (arm, humanoid); thrust and body-rate bounds (quadrotor);
4. the CBF-QP (arm workspace through the Jacobian; quadrotor geofence + speed);
5. the workspace box (arm, exact projection), tilt (quadrotor), roll/pitch ->
   DAMPING (humanoid);
6. the watchdog (stale state or commands -> HOLD / DAMPING / LAND);
7. the latched e-stop.

``filter_chunk`` validates a whole (H, D) chunk before execution. Every
intervention is counted and logged (bounded); ``summary()`` reports them.

The joint-limit layer is exact, not a sequence of clamps: it computes the interval
of next commands that satisfies every limit at once and clamps into it. See
``JointStreamLimits`` and docs/safety.md for why the output provably meets all limits.

Plain Python + numpy + osqp: no ROS, no torch, no simulator. Imports onboard.spec,
onboard.errors and sim2real.{cbf, kinematics, safety_envelope} only.
"""
from __future__ import annotations

import math
from collections import deque
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from onboard.errors import ConfigError, ContractError
from onboard.paths import config_dir
from sim2real.cbf import ArmWorkspaceCBF, GeofenceCBF
from sim2real.kinematics import SerialArmKinematics
from sim2real.safety_envelope import G, Envelope, load_envelope

RUN, RAMP_IN, HOLD, DAMPING, LAND, ESTOP = "RUN", "RAMP_IN", "HOLD", "DAMPING", "LAND", "ESTOP"
_FALLBACK_MODE = {"hold": HOLD, "damping": DAMPING, "land": LAND}
_BIG = 1e12     # stands in for "no limit" so that interval arithmetic never meets inf - inf


@dataclass(frozen=True)
class Intervention:
    t: float
    check: str
    axis: str
    before: float
    after: float


class JointStreamLimits:
    """Exact per-joint limits on a stream of position commands q_k, sent every dt.

    Finite differences over the output stream: v_k = (q_k - q_{k-1})/dt,
    a_k = (v_k - v_{k-1})/dt, j_k = (a_k - a_{k-1})/dt. Each limit is an interval on
    the step w = q_k - q_{k-1}; the filter intersects them in priority order

        hard position > velocity > soft position (viability) > acceleration > jerk

    and clamps into the result. "Viability" means: after this step, braking at the
    acceleration limit stops inside the soft range. With u = A dt^2 and a step w >= 0,
    braking steps are w-u, w-2u, ... so the travel is f(w) = sum_n max(0, w - n u);
    f(w) <= R (room left) inverts in closed form. From a viable state the braking step
    itself is feasible for every limit, so (when J dt >= 2 A, true for every shipped
    profile at its control rate) the intervals never conflict and the output meets all
    four limits at once. A conflict can only come from an inconsistent start (state
    outside the soft range, or a tighter jerk); then the lower-priority limit yields.
    """

    def __init__(self, pos_lo, pos_hi, margin, vel, acc, jerk, dt: float):
        self.hard_lo, self.hard_hi = np.asarray(pos_lo, float), np.asarray(pos_hi, float)
        self.soft_lo, self.soft_hi = self.hard_lo + margin, self.hard_hi - margin
        self.vel, self.acc, self.jerk = (np.asarray(x, float) for x in (vel, acc, jerk))
        self.dt = float(dt)
        self.w_vel = self.vel * dt
        self.w_acc = self.acc * dt * dt
        self.w_jerk = self.jerk * dt ** 3
        self._neg_w_vel = -self.w_vel
        # _max_step runs on both sides at once: (lower room, upper room) stacked, so constants are doubled.
        self._8_over_u = np.tile(8.0 / self.w_acc, 2)
        self._half_u2 = np.tile(self.w_acc * 0.5, 2)
        self.jerk_never_binds = bool(np.all(self.jerk * dt >= 2.0 * self.acc * (1 - 1e-12)))

    def _max_step(self, room: np.ndarray) -> np.ndarray:
        """Largest w >= 0 with f(w) <= room (room clipped at 0), element-wise."""
        R = np.maximum(room, 0.0)
        m = np.floor((np.sqrt(1.0 + R * self._8_over_u) - 1.0) * 0.5)
        m1 = m + 1.0
        return (R + self._half_u2 * m * m1) / m1

    def interval(self, q1, q2, q3):
        """[lo, hi] for the next step w given the last three outputs (q_{k-1}, q_{k-2}, q_{k-3})."""
        w1 = q1 - q2
        c = w1 + w1 - (q2 - q3)
        ms = self._max_step(np.concatenate((q1 - self.soft_lo, self.soft_hi - q1)))
        n = q1.shape[0]
        lows = (self.hard_lo - q1, self._neg_w_vel, -ms[:n], w1 - self.w_acc, c - self.w_jerk)
        highs = (self.hard_hi - q1, self.w_vel, ms[n:], w1 + self.w_acc, c + self.w_jerk)
        lo = np.maximum.reduce(lows)
        hi = np.minimum.reduce(highs)
        if (lo <= hi).all():          # no conflict: every limit holds at once (the usual case)
            return lo, hi
        lo, hi = lows[0], highs[0]   # conflict: intersect in priority order
        for l, h in zip(lows[1:], highs[1:]):
            nl = np.maximum(lo, l)
            nh = np.minimum(hi, h)
            empty = nl > nh
            if empty.any():   # keep the point of [lo, hi] nearest the lower-priority interval
                p = np.where(l > hi, hi, lo)
                nl = np.where(empty, p, nl)
                nh = np.where(empty, p, nh)
            lo, hi = nl, nh
        return lo, hi


_REACH_M = 1.2   # upper bound on any arm joint axis to TCP distance (Panda reach ~0.86 m + TCP offset)


class SafetyFilter:
    """See the module docstring. Construct with ``from_yaml`` or ``for_robot``."""

    def __init__(self, profile, envelope: Envelope | dict, dt_s: float | None = None):
        if not isinstance(envelope, Envelope):
            envelope = load_envelope(profile, envelope)
        self.profile = profile
        self.env = envelope
        self.kind = profile.kind
        dt = profile.control_dt_s if dt_s is None else float(dt_s)
        if not (math.isfinite(dt) and dt > 0):
            raise ConfigError(f"control period {dt_s!r} is not a positive number", field="dt_s",
                              fix="pass the control period in seconds, e.g. 0.1 for 10 Hz")
        self.dt = dt
        self.action_names = tuple(profile.action_names)
        self.action_dim = len(self.action_names)
        self.counts: dict[str, int] = {}
        self.log: deque[Intervention] = deque(maxlen=envelope.log_size)
        self._mode = RUN
        self._ready = False
        self.estop_reason: str | None = None
        self._fallback_reason: str | None = None
        self._state: dict | None = None
        self._state_stamp: float | None = None
        self._last_cmd_t: float | None = None
        self._ramp_t0 = -math.inf
        self._ramp_from: np.ndarray | None = None
        r = envelope.responses
        self._r = r
        if self.kind in ("arm", "humanoid"):
            lim = profile.limits
            pos, vel = lim.position, lim.velocity * envelope.limit_scale["velocity"]
            acc = lim.acceleration * envelope.limit_scale["acceleration"]
            jerk = lim.jerk * envelope.limit_scale["jerk"]
            margin = envelope.position_margin
            if self.kind == "arm":
                grip = profile.gripper
                width, speed = float(grip["max_width_m"]), float(grip["max_speed_m_s"])
                pos = np.vstack([pos, [0.0, width]])
                vel, margin = np.r_[vel, speed], np.r_[margin, 0.0]
                # The gripper has no acc/jerk figures: effectively unlimited (jerk*dt >> 2*acc keeps
                # the 'jerk never binds' property of the interval construction).
                acc, jerk = np.r_[acc, _BIG * 1e-3], np.r_[jerk, _BIG]
            self.limits = JointStreamLimits(pos[:, 0], pos[:, 1], margin, vel, acc, jerk, dt)
            self.n_joints = profile.n_joints
            self._hist = None   # (3, D): last three outputs, newest first
            self._tcp_of_last = None
        if self.kind == "arm":
            self.kin = SerialArmKinematics.from_profile(profile)
            self._box_lo, self._box_hi = envelope.box_min, envelope.box_max
            self.arm_cbf = (ArmWorkspaceCBF(self.kin, envelope.box_min + envelope.cbf["margin_m"],
                                            envelope.box_max - envelope.cbf["margin_m"],
                                            envelope.cbf["alpha"], envelope.cbf["slack_weight"])
                            if envelope.cbf_enabled else None)
        if self.kind == "quadrotor":
            e = envelope
            self._u_lo = np.r_[e.thrust_min, -e.max_body_rate]
            self._u_hi = np.r_[e.thrust_max, e.max_body_rate]
            self.hover_thrust = e.mass_kg * G
            self.geofence_cbf = (GeofenceCBF(e.box_min, e.box_max, e.max_speed, e.cbf["alpha1"], e.cbf["alpha2"],
                                             e.cbf["alpha_v"], e.cbf["slack_weight"]) if e.cbf_enabled else None)
            amax_xy = G * math.tan(e.max_tilt)
            self._a_lo = np.array([-amax_xy, -amax_xy, e.thrust_min / e.mass_kg - G])
            self._a_hi = np.array([amax_xy, amax_xy, e.thrust_max * math.cos(e.max_tilt) / e.mass_kg - G])
            self._last_out = np.r_[self.hover_thrust, 0.0, 0.0, 0.0]

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_yaml(cls, profile, path, dt_s: float | None = None) -> "SafetyFilter":
        return cls(profile, load_envelope(profile, Path(path)), dt_s)

    @classmethod
    def for_robot(cls, name_or_profile, dt_s: float | None = None) -> "SafetyFilter":
        from onboard.spec import load_robot
        profile = load_robot(name_or_profile) if isinstance(name_or_profile, (str, Path)) else name_or_profile
        return cls.from_yaml(profile, config_dir() / "safety" / f"{profile.name}.yaml", dt_s)

    # ------------------------------------------------------------------ public API
    @property
    def mode(self) -> str:
        return self._mode

    def reset(self, state: dict, t: float) -> None:
        """Start (or restart) from ``state`` at time ``t``: clears HOLD/DAMPING/LAND, ramps in.

        A latched e-stop survives reset(); only reset_estop() clears it.
        """
        self.update_state(state, t)
        self._last_cmd_t = t
        if self.kind in ("arm", "humanoid"):
            q = self._measured_q()
            self._hist = (q.copy(), q.copy(), q.copy())
        else:
            self._last_out = self._hover_command()
        self._ready = True
        self._start_ramp(t)
        if self._mode != ESTOP:
            self._mode = RAMP_IN if self.env.ramp_in_s > 0 else RUN

    def update_state(self, state: dict, stamp_s: float) -> None:
        """Feed the latest measured state (feeds the watchdog)."""
        if not isinstance(state, dict):
            raise ContractError(f"state must be a dict, got {type(state).__name__}", field="state",
                                fix=self._state_doc())
        self._state = state
        self._state_stamp = float(stamp_s)

    def estop(self, reason: str = "estop") -> None:
        """Latch the e-stop. Commands cannot clear it; only reset_estop() does."""
        if self._mode != ESTOP:
            self._count("estop", None, np.zeros(1), np.zeros(1), axes=("all",))
        self._mode = ESTOP
        self.estop_reason = reason

    def reset_estop(self, t: float | None = None) -> None:
        """Explicitly clear a latched e-stop; resumes with a ramp-in from the current state."""
        if self._mode == ESTOP:
            self.estop_reason = None
            t = self._state_stamp if t is None else t
            self._resume(t if t is not None else 0.0)

    def resume(self, t: float) -> None:
        """Leave HOLD / DAMPING / LAND (not ESTOP) with a ramp-in from the current state."""
        if self._mode in (HOLD, DAMPING, LAND):
            self._resume(t)

    def summary(self, last: int = 10) -> dict:
        return {"robot": self.profile.name, "kind": self.kind, "mode": self._mode,
                "estop_reason": self.estop_reason, "counts": dict(self.counts),
                "total": int(sum(self.counts.values())),
                "last": [asdict(i) for i in list(self.log)[-last:]]}

    def filter(self, cmd, t: float, state: dict | None = None) -> np.ndarray:
        """One command (action_dim,) -> the safe command. ``cmd=None`` means no fresh command."""
        if state is not None:
            self.update_state(state, t)
        if not self._ready:
            if self._state is None:
                raise RuntimeError("SafetyFilter.filter before reset(state, t): the filter needs a state "
                                   "to start from")
            self.reset(self._state, t)
        fresh = cmd is not None
        if fresh:
            cmd = np.asarray(cmd, dtype=float)
            if cmd.shape != (self.action_dim,):
                raise ContractError(f"command shape {cmd.shape}, expected ({self.action_dim},)",
                                    field="cmd", fix=f"send {list(self.action_names)}")
            self._last_cmd_t = t
        self._watchdog(t)
        if self.kind == "quadrotor":
            out = self._filter_quad(cmd, t)
            self._last_out = out
            return out.copy()
        out = self._filter_joints(cmd, t)
        h = self._hist
        self._hist = (out, h[0], h[1])
        return out.copy()

    def filter_chunk(self, chunk, state: dict | None, t: float) -> np.ndarray:
        """Validate a whole (H, action_dim) chunk before execution: accepted, rescaled or a hold chunk."""
        if state is not None:
            self.update_state(state, t)
        chunk = np.asarray(chunk, dtype=float)
        if chunk.ndim != 2 or chunk.shape[1] != self.action_dim:
            raise ContractError(f"chunk shape {chunk.shape}, expected (H, {self.action_dim})", field="chunk",
                                fix="pass an (H, action_dim) array")
        if not self._ready and self._state is not None:
            self.reset(self._state, t)
        H = chunk.shape[0]
        if self._mode in (ESTOP, HOLD, DAMPING, LAND) or not self._ready:
            return self._hold_chunk(H)
        ch = self.env.chunk
        bad = ~np.isfinite(chunk)
        if bad.any():
            resp = ch["nonfinite"]
            self._count("chunk_nonfinite", t, chunk[bad], np.zeros(int(bad.sum())))
            if resp != "clamp":
                return self._reject_chunk(H, resp, "non-finite value in chunk")
            chunk = chunk.copy()
            prev = self._chunk_start()
            for i in range(H):   # replace a bad entry by the previous row's value
                chunk[i] = np.where(bad[i], prev, chunk[i])
                prev = chunk[i]
        if self.kind == "quadrotor":
            lo, hi = self._u_lo, self._u_hi
        else:
            lo, hi = self.limits.soft_lo, self.limits.soft_hi
        clipped = np.clip(chunk, lo, hi)
        if np.any(clipped != chunk):
            self._count("chunk_bounds", t, chunk.ravel(), clipped.ravel())
            if ch["bounds"] != "clamp":
                return self._reject_chunk(H, ch["bounds"], "chunk outside bounds")
            chunk = clipped
        if self.kind == "quadrotor":
            return chunk
        return self._check_chunk_rates(chunk, t)

    # ------------------------------------------------------------------ bookkeeping
    def _count(self, check, t, before, after, axes=None):
        self.counts[check] = self.counts.get(check, 0) + 1
        before = np.atleast_1d(before)
        after = np.atleast_1d(after)
        names = axes or self.action_names
        changed = np.flatnonzero(~(before == after)) if before.shape == after.shape else range(len(before))
        if len(changed) == 0:
            changed = [0]
        for i in list(changed)[:16]:
            axis = names[i % len(names)] if names else str(i)
            self.log.append(Intervention(float("nan") if t is None else float(t), check, axis,
                                         float(before[i]) if i < len(before) else float("nan"),
                                         float(after[i]) if i < len(after) else float("nan")))

    def _state_doc(self) -> str:
        return {"arm": 'pass {"q": (8,) joints + gripper width, "dq": optional}',
                "humanoid": 'pass {"q": (12,), "dq": optional, "rpy": (3,) base roll/pitch/yaw}',
                "quadrotor": 'pass {"pos": (3,), "vel": (3,), "rpy": (3,)} (world z up)'}[self.kind]

    def _state_vec(self, key, n, default=None):
        s = self._state or {}
        v = s.get(key)
        if v is None:
            if default is not None:
                return default
            raise ContractError(f"state has no '{key}'", field=f"state.{key}", fix=self._state_doc())
        v = np.asarray(v, dtype=float).ravel()
        if v.shape[0] < n:
            raise ContractError(f"state.{key} has {v.shape[0]} values, expected {n}", field=f"state.{key}",
                                fix=self._state_doc())
        return v[:n]

    def _measured_q(self) -> np.ndarray:
        D = self.action_dim
        s = self._state or {}
        q = np.asarray(s.get("q", []), dtype=float).ravel()
        if q.shape[0] == D:
            out = q.copy()
        elif self.kind == "arm" and q.shape[0] == self.n_joints:
            width = self._hist[0][-1] if self._hist is not None else 0.0
            out = np.r_[q, width]
        else:
            raise ContractError(f"state.q has {q.shape[0]} values, expected {D}", field="state.q",
                                fix=self._state_doc())
        if not np.all(np.isfinite(out)):
            # A non-finite measurement cannot be a start point; keep the last output instead.
            out = np.where(np.isfinite(out), out, self._hist[0] if self._hist is not None else 0.0)
        return np.clip(out, self.limits.hard_lo, self.limits.hard_hi)

    # ------------------------------------------------------------------ modes
    def _start_ramp(self, t):
        self._ramp_t0 = t
        if self.kind == "quadrotor":
            self._ramp_from = self._hover_command()
        else:
            self._ramp_from = self._measured_q() if self._state is not None else self._hist[0].copy()

    def _resume(self, t):
        if self.kind == "humanoid" and self._mode == DAMPING:
            q = self._measured_q()
            self._hist = (q, q.copy(), q.copy())   # damping targets were the measured pose
        self._fallback_reason = None
        self._start_ramp(t)
        self._mode = RAMP_IN if self.env.ramp_in_s > 0 else RUN

    def _enter_fallback(self, mode, reason, t):
        if self._mode in (ESTOP, mode):
            return
        self._mode = mode
        self._fallback_reason = reason
        self._count(reason, t, np.zeros(1), np.zeros(1), axes=(mode,))

    def _respond(self, resp, reason, t):
        """Apply a mode-changing response (stop / damping / land / hold-as-mode)."""
        if resp == "stop":
            self.estop(reason)
        elif resp in ("damping", "land"):
            self._enter_fallback(_FALLBACK_MODE[resp], reason, t)
        # "hold" holds this command only (the caller returns the hold command); no latched mode.

    def _watchdog(self, t):
        if self._mode == ESTOP:
            return
        e = self.env
        state_age = math.inf if self._state_stamp is None else t - self._state_stamp
        cmd_age = math.inf if self._last_cmd_t is None else t - self._last_cmd_t
        stale = state_age > e.state_timeout_s or cmd_age > e.command_timeout_s
        if stale:
            if self._fallback_reason != "watchdog":
                resp = e.responses["watchdog"]
                if resp == "stop":
                    self.estop("watchdog")
                else:
                    self._mode = RUN if self._mode in (HOLD, DAMPING, LAND) else self._mode
                    self._enter_fallback(_FALLBACK_MODE[resp], "watchdog", t)
        elif self._fallback_reason == "watchdog" and e.auto_resume:
            self._resume(t)

    def _ramp(self, cmd, t):
        if self._mode != RAMP_IN:
            return cmd
        T = self.env.ramp_in_s
        alpha = 1.0 if T <= 0 else (t - self._ramp_t0) / T
        if alpha >= 1.0:
            self._mode = RUN
            return cmd
        alpha = max(alpha, 0.0)
        out = self._ramp_from + alpha * (cmd - self._ramp_from)
        if np.any(out != cmd):
            self._count("ramp_in", t, cmd, out)
        return out

    # ------------------------------------------------------------------ arm and humanoid
    def _filter_joints(self, cmd, t):
        lim = self.limits
        q1, q2, q3 = self._hist
        if self._mode == DAMPING:
            # Damping targets: the measured pose, so the PD loop's P term is zero and only
            # D acts. Deliberately exempt from the stream limits (not a motion command).
            return self._measured_q()
        if self.kind == "humanoid" and self._mode != ESTOP:
            rpy = self._state_vec("rpy", 3, default=np.zeros(3))
            if abs(rpy[0]) > self.env.max_roll or abs(rpy[1]) > self.env.max_pitch:
                self._respond(self._r["attitude"], "attitude", t)
                if self._mode == DAMPING:
                    return self._measured_q()
        lo, hi = lim.interval(q1, q2, q3)
        brake = np.minimum(np.maximum(lo, 0.0), hi)   # the step nearest to standing still
        if self._mode in (ESTOP, HOLD, LAND) or cmd is None:
            return q1 + brake
        if not np.isfinite(cmd).all():
            bad = ~np.isfinite(cmd)
            resp = self._r["nonfinite"]
            fixed = np.where(bad, q1, cmd)
            self._count("nonfinite", t, cmd, fixed)
            if resp != "clamp":
                self._respond(resp, "nonfinite", t)
                return q1 + brake
            cmd = fixed
        cmd = self._ramp(cmd, t)
        w_cmd = cmd - q1
        w = np.minimum(np.maximum(w_cmd, lo), hi)
        if not (w == w_cmd).all():
            w = self._limit_response(w_cmd, w, lo, hi, brake, t)
            if self._mode == ESTOP:
                return q1 + brake
        if self.kind == "arm":
            w = self._workspace(q1, w, lo, hi, brake, t)
        # Where nothing changed, pass the command through bit for bit ((c - q) + q != c in floats).
        return np.where(w == w_cmd, cmd, q1 + w)

    def _limit_response(self, w_cmd, w, lo, hi, brake, t):
        n = self.n_joints
        q1 = self._hist[0]
        if self.kind == "arm" and w[n] != w_cmd[n]:
            self._count("gripper", t, q1[n:] + w_cmd[n:], q1[n:] + w[n:], axes=self.action_names[n:])
            if self._r["gripper"] != "clamp":
                w[n] = brake[n]
                self._respond(self._r["gripper"], "gripper", t)
        if np.any(w[:n] != w_cmd[:n]):
            resp = self._r["joint_limits"]
            before = w_cmd[:n].copy()
            if resp == "scale":
                d = w_cmd[:n] - brake[:n]
                with np.errstate(divide="ignore", invalid="ignore"):
                    room = np.where(d > 0, (hi[:n] - brake[:n]) / d, np.where(d < 0, (lo[:n] - brake[:n]) / d, 1.0))
                s = float(np.clip(np.min(room), 0.0, 1.0))
                w[:n] = np.clip(brake[:n] + s * d, lo[:n], hi[:n])
            elif resp in ("hold", "stop"):
                w[:n] = brake[:n]
                self._respond(resp, "joint_limits", t)
            self._count("joint_limits", t, q1[:n] + before, q1[:n] + w[:n])
        return w

    def _workspace(self, q1, w, lo, hi, brake, t):
        """CBF-QP (velocity level) then the exact box check with projection, inside [lo, hi]."""
        n = self.n_joints
        e = self.env
        if self.arm_cbf is not None:
            qd_nom = w[:n] / self.dt
            qd = self.arm_cbf.filter_velocity(q1[:n], qd_nom, lo[:n] / self.dt, hi[:n] / self.dt)
            if self.arm_cbf.qp.last_status != "identity":
                w_new = np.clip(qd * self.dt, lo[:n], hi[:n])
                if np.any(w_new != w[:n]):
                    self._count("cbf", t, q1[:n] + w[:n], q1[:n] + w_new, axes=self.action_names[:n])
                    w = w.copy()
                    w[:n] = w_new
        if not e.workspace_enabled:
            return w
        q = q1[:n] + w[:n]
        x = self.kin.tcp_position(q)
        if self._inside(x) and self._brakes_inside(w, x):
            self._tcp_of_last = (q, x)
            return w
        resp = self._r["workspace"]
        if resp != "clamp":
            w = w.copy()
            w[:n] = brake[:n]
            self._count("workspace", t, q, q1[:n] + w[:n])
            self._respond(resp, "workspace", t)
            return w
        w_new = self._project_into_box(q1[:n], w[:n], lo[:n], hi[:n], brake[:n])
        self._tcp_of_last = None
        self._count("workspace", t, q, q1[:n] + w_new, axes=self.action_names[:n])
        w = w.copy()
        w[:n] = w_new
        return w

    def _brakes_inside(self, w_arm, x_new=None, max_steps: int = 50) -> bool:
        """Whether, after the joint step ``w_arm`` (arm joints), braking as hard as the joint limits
        allow keeps the TCP inside the box until the arm stands still.

        Inside-the-box alone is not invariant: a step that ends inside with speed toward a face may
        leave no joint-feasible way to stop before crossing it. Requiring the braking path to stay
        inside makes "inside and can stop inside" the invariant the filter keeps. Checked only when
        the TCP is within reach of a face at its current step length (the usual step costs nothing).
        """
        n = self.n_joints
        q1, q2, _ = self._hist
        w_arm = np.asarray(w_arm)[:n]
        a = q1[:n] + w_arm
        x_new = self.kin.tcp_position(a) if x_new is None else x_new
        room = float(min(np.min(x_new - self._box_lo), np.min(self._box_hi - x_new)))
        cache = self._tcp_of_last   # (arm joints, TCP) of the last output, if still current
        x_old = cache[1] if cache is not None and float(np.max(np.abs(cache[0] - q1[:n]))) <= 1e-9 \
            else self.kin.tcp_position(q1[:n])
        step = float(np.linalg.norm(x_new - x_old))
        # Braking at the acceleration limit from step w travels about w * (w / 2u + 1) (u: the per-step
        # velocity change allowed); 2x that in Cartesian space (curved paths) plus 1 mm gates the search.
        u = self.limits.w_acc[:n]
        travel_ratio = float(np.max(np.abs(w_arm) / (2.0 * u))) + 1.0
        if room > 2.0 * step * travel_ratio + 1e-3:
            return True
        lim = self.limits
        h = (np.r_[a, q1[n:]], q1, q2)
        for _ in range(max_steps):
            lo, hi = lim.interval(*h)
            brake = np.minimum(np.maximum(lo, 0.0), hi)
            if not np.any(np.abs(brake[:n]) > 1e-9):
                return True
            q_next = h[0] + brake
            if not self._inside(self.kin.tcp_position(q_next[:n])):
                return False
            h = (q_next, h[0], h[1])
        return True

    def _inside(self, x, shrink=0.0):
        return bool(np.all(x >= self._box_lo + shrink) and np.all(x <= self._box_hi - shrink))

    def _project_into_box(self, q1, w, lo, hi, brake):
        """Damped least-squares steps toward the box (slides along walls); exact back-off if needed."""
        inner = 1e-4
        lo_b, hi_b = self._box_lo + inner, self._box_hi - inner
        wk = w.copy()
        for _ in range(4):
            x, J = self.kin.position_jacobian(q1 + wk)
            dx = np.clip(x, lo_b, hi_b) - x
            if not dx.any():
                break
            dq = J.T @ np.linalg.solve(J @ J.T + 1e-4 * np.eye(3), dx)
            wk = np.clip(wk + dq, lo, hi)
        if self._inside(self.kin.tcp_position(q1 + wk)) and self._brakes_inside(wk):
            return wk
        # Back off along the segment from the brake step (inside [lo, hi]) to the best candidate:
        # every point of that segment is inside [lo, hi], so joint limits still hold.
        if not (self._inside(self.kin.tcp_position(q1 + brake)) and self._brakes_inside(brake)):
            # Moving out too fast to stop inside in one step: the joint limits win (documented).
            # The least-squares result still heads back to the box as fast as the limits allow;
            # the CBF (on by default) slows the approach so that this does not happen.
            return wk
        a, b = 0.0, 1.0
        for _ in range(20):
            mid = 0.5 * (a + b)
            wm = brake + mid * (wk - brake)
            if self._inside(self.kin.tcp_position(q1 + wm)) and self._brakes_inside(wm):
                a = mid
            else:
                b = mid
        return brake + a * (wk - brake)

    def _chunk_start(self):
        if self.kind == "quadrotor":
            return self._last_out.copy()
        return self._measured_q() if self._state is not None else self._hist[0].copy()

    def _hold_chunk(self, H):
        if self.kind == "quadrotor":
            return np.tile(self._hover_command(), (H, 1))
        if self._hist is None:
            return np.tile(self._measured_q(), (H, 1))
        return np.tile(self._measured_q() if self._mode == DAMPING else self._hist[0], (H, 1))

    def _reject_chunk(self, H, resp, reason):
        if resp == "stop":
            self.estop(reason)
        return self._hold_chunk(H)

    def _check_chunk_rates(self, chunk, t):
        ch = self.env.chunk
        q0 = self._measured_q() if self._state is not None else self._hist[0]
        first = np.abs(chunk[0] - q0)
        max_first = np.r_[self.env.chunk_max_first_step, np.inf][: self.action_dim] if self.kind == "arm" \
            else self.env.chunk_max_first_step
        r_first = float(np.max(first / max_first))
        # Rates are limits on the command stream, so the chunk continues the filter's own output history
        # (a position-controlled arm's measured state lags its targets; differencing the chunk against
        # the measured state would read that lag as acceleration and slow every chunk down).
        hist = self._command_history()
        ratios = self._chunk_ratios(chunk, hist)
        r_vel, r_jerk = ratios[0], max(ratios[1], ratios[2])
        scale = 1.0
        for name, ratio, s_needed in (("chunk_first_step", r_first, r_first),
                                      ("chunk_velocity", r_vel, r_vel),
                                      ("chunk_jerk", r_jerk, max(math.sqrt(ratios[1]), ratios[2] ** (1 / 3)))):
            if ratio > 1.0 + 1e-9:
                resp = ch[name.split("_", 1)[1]]
                self._count(name, t, np.array([ratio]), np.array([1.0]), axes=("ratio",))
                if resp != "scale":
                    return self._reject_chunk(chunk.shape[0], resp, name)
                scale = max(scale, s_needed)
        if scale <= 1.0:
            return chunk
        path = np.vstack([hist[-1], chunk])
        for _ in range(4):
            out = self._time_scale(path, scale)
            rv, ra, rj = self._chunk_ratios(out, hist)
            if max(rv, ra, rj, float(np.max(np.abs(out[0] - q0) / max_first))) <= 1.0 + 1e-9:
                return out
            scale *= 1.5
        return self._hold_chunk(chunk.shape[0])

    def _command_history(self) -> np.ndarray:
        """The last three commands, oldest first (3, D): the filter's outputs, or the measured state at start."""
        if self._hist is not None:
            return np.stack([self._hist[2], self._hist[1], self._hist[0]])
        q0 = self._measured_q()
        return np.stack([q0, q0, q0])

    def _chunk_ratios(self, chunk, hist):
        """Worst velocity / acceleration / jerk ratios to the limits along a chunk.

        Velocity includes the step from the last command into the chunk; acceleration and jerk are
        taken inside the chunk only. The junction between the old plan and the new one is smoothed by
        the per-step filter (which enforces every rate on every command it emits); time-scaling a whole
        chunk for a junction transient would slow every replan down and drift the policy off its
        training distribution.
        """
        lim, dt = self.limits, self.dt
        # Joints only: an arm's gripper is its own actuator with its own rate (the per-step 'gripper'
        # clamp). Letting a one-step close of the fingers time-scale the chunk would slow the whole arm
        # 16x at every grasp (0.08 m in 0.1 s against 0.05 m/s), which is not what a robot does.
        n = self.n_joints
        p = np.vstack([hist[-1:], chunk])[:, :n]
        v = np.diff(p, axis=0) / dt
        a = np.diff(v[1:], axis=0) / dt
        j = np.diff(a, axis=0) / dt
        rv = float(np.max(np.abs(v) / lim.vel[:n]))
        ra = float(np.max(np.abs(a) / lim.acc[:n])) if len(a) else 0.0
        rj = float(np.max(np.abs(j) / lim.jerk[:n])) if len(j) else 0.0
        return rv, ra, rj

    @staticmethod
    def _time_scale(path, scale):
        """Re-time a path (row 0 = current state) 'scale' times slower; keep H rows."""
        H = path.shape[0] - 1
        tau = np.arange(1, H + 1) / scale
        idx = np.arange(H + 1)
        return np.stack([np.interp(tau, idx, path[:, d]) for d in range(path.shape[1])], axis=1)

    # ------------------------------------------------------------------ quadrotor
    def _rpy(self):
        return self._state_vec("rpy", 3, default=np.zeros(3))

    @staticmethod
    def _rotation(rpy):
        cr, sr = math.cos(rpy[0]), math.sin(rpy[0])
        cp, sp = math.cos(rpy[1]), math.sin(rpy[1])
        cy, sy = math.cos(rpy[2]), math.sin(rpy[2])
        return np.array([[cy * cp, cy * sp * sr - sy * cr, cy * sp * cr + sy * sr],
                         [sy * cp, sy * sp * sr + cy * cr, sy * sp * cr - cy * sr],
                         [-sp, cp * sr, cp * cr]])

    def _level_rates(self, rpy):
        k = self.env.level_gain
        return np.r_[-k * rpy[0], -k * rpy[1], 0.0]

    def _hover_command(self):
        """Hold for a quadrotor: hover thrust (tilt-compensated), rates that level the airframe."""
        rpy = self._rpy() if self._state is not None else np.zeros(3)
        rpy = np.where(np.isfinite(rpy), rpy, 0.0)
        c = max(math.cos(rpy[0]) * math.cos(rpy[1]), 0.3)
        out = np.r_[self.hover_thrust / c, self._level_rates(rpy)]
        return np.clip(out, self._u_lo, self._u_hi)

    def _land_command(self):
        e = self.env
        rpy = self._rpy()
        rpy = np.where(np.isfinite(rpy), rpy, 0.0)
        vel = self._state_vec("vel", 3, default=np.zeros(3))
        vz = float(vel[2]) if np.isfinite(vel[2]) else 0.0
        az = e.land["velocity_gain"] * (-e.land["descent_speed_m_s"] - vz)
        c = max(math.cos(rpy[0]) * math.cos(rpy[1]), 0.3)
        thrust = e.mass_kg * (G + min(az, 0.0)) / c   # never climbs: a descending command
        return np.clip(np.r_[thrust, self._level_rates(rpy)], self._u_lo, self._u_hi)

    def _filter_quad(self, cmd, t):
        if self._mode in (LAND, ESTOP):
            return self._land_command()
        if self._mode == HOLD or cmd is None:
            return self._hover_command() if self._mode == HOLD else self._last_out.copy()
        bad = ~np.isfinite(cmd)
        if bad.any():
            fixed = np.where(bad, self._last_out, cmd)
            self._count("nonfinite", t, cmd, fixed)
            resp = self._r["nonfinite"]
            if resp != "clamp":
                self._respond(resp, "nonfinite", t)
                return self._land_command() if self._mode == ESTOP else self._hover_command()
            cmd = fixed
        cmd = self._ramp(cmd, t)
        out = np.clip(cmd, self._u_lo, self._u_hi)
        for check, sl in (("thrust", slice(0, 1)), ("body_rate", slice(1, 4))):
            if np.any(out[sl] != cmd[sl]):
                resp = self._r[check]
                if resp == "scale":
                    ratio = np.max(np.abs(cmd[sl]) / self._u_hi[sl])
                    out[sl] = np.clip(cmd[sl] / ratio, self._u_lo[sl], self._u_hi[sl])
                elif resp in ("hold", "stop"):
                    out = self._hover_command()
                    self._respond(resp, check, t)
                self._count(check, t, cmd[sl], out[sl], axes=self.action_names[sl])
        if self._mode == ESTOP:
            return self._land_command()
        if self._state is not None and "pos" in self._state:
            out = self._geofence(out, t)
            if self._mode in (LAND, ESTOP):
                return self._land_command()
        return self._tilt(out, t)

    def _geofence(self, out, t):
        e = self.env
        p = self._state_vec("pos", 3)
        v = self._state_vec("vel", 3, default=np.zeros(3))
        rpy = self._rpy()
        if not (np.all(np.isfinite(p)) and np.all(np.isfinite(v)) and np.all(np.isfinite(rpy))):
            return out
        outside = np.any(p < e.box_min) or np.any(p > e.box_max) or float(v @ v) > e.max_speed ** 2 * 1.0001
        if outside and self._r["geofence"] != "clamp":
            self._count("geofence", t, p, np.clip(p, e.box_min, e.box_max), axes=("x", "y", "z"))
            self._respond(self._r["geofence"], "geofence", t)
            return out
        if self.geofence_cbf is None:
            return out
        R = self._rotation(rpy)
        zb = R[:, 2]
        a_nom = zb * out[0] / e.mass_kg - np.array([0.0, 0.0, G])
        a = self.geofence_cbf.filter_accel(p, v, a_nom, self._a_lo, self._a_hi)
        if self.geofence_cbf.qp.last_status == "identity" or np.allclose(a, a_nom, atol=1e-6):
            return out
        f = e.mass_kg * (a + np.array([0.0, 0.0, G]))
        new = out.copy()
        new[0] = float(np.clip(f @ zb, self._u_lo[0], self._u_hi[0]))
        z_des = f / max(np.linalg.norm(f), 1e-9)
        err_b = R.T @ np.cross(zb, z_des)       # rotate body z toward the safe thrust direction
        new[1:3] = e.cbf["attitude_gain"] * err_b[:2]
        new = np.clip(new, self._u_lo, self._u_hi)
        self._count("cbf", t, a_nom, a, axes=("ax", "ay", "az"))
        return new

    def _tilt(self, out, t):
        """Keep the predicted tilt after one period under the limit (scale the roll/pitch rates)."""
        if self._state is None or "rpy" not in self._state:
            return out
        rpy = self._rpy()
        if not np.all(np.isfinite(rpy)):
            return out
        e, dt = self.env, self.dt
        cos_max = math.cos(e.max_tilt)

        def cos_tilt(s):
            return math.cos(rpy[0] + s * out[1] * dt) * math.cos(rpy[1] + s * out[2] * dt)

        if cos_tilt(1.0) >= cos_max:
            return out
        resp = self._r["tilt"]
        new = out.copy()
        if math.cos(rpy[0]) * math.cos(rpy[1]) < cos_max or resp in ("clamp", "hold", "stop"):
            new[1:3] = np.clip(self._level_rates(rpy)[:2], self._u_lo[1:3], self._u_hi[1:3])
            if resp in ("hold", "stop"):
                self._respond(resp, "tilt", t)
        else:
            a, b = 0.0, 1.0   # the set {cos r cos p >= c} is convex: bisection on the segment
            for _ in range(30):
                mid = 0.5 * (a + b)
                a, b = (mid, b) if cos_tilt(mid) >= cos_max else (a, mid)
            new[1:3] = out[1:3] * a
        self._count("tilt", t, out[1:3], new[1:3], axes=self.action_names[1:3])
        return new
