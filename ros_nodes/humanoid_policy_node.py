"""``humanoid_policy_node``: a G1 legs artifact standing the robot over ROS 2, behind the state machine.

Start-up: ``policies.runtime.PolicyRuntime`` opens the artifact and checks its
contract against the robot profile (g1_12dof); the safety filter is
``config/safety/g1_12dof.yaml`` (``safety_config`` overrides) at the policy
period, wrapped by ``sim2real.humanoid_supervisor.HumanoidSupervisor``:
ZERO_TORQUE -> (first fresh, upright state; ``auto_start``) RAMP (2 s to the
default pose) -> ACTIVE (policy targets through the filter) -> DAMPING on stale
state (> 60 ms), stale commands or tilt; DAMPING is latched. A bad artifact is
reported on /diagnostics and the node never commands (``strict``: exit 2).

Loops: one steady-clock timer at ``hold_rate_hz`` (500). Every
``hold_rate_hz / control_rate_hz``-th tick (10) is a policy tick: the
observation is built from the latest /g1/joint_states + /g1/imu with the env's
builder (``ros_nodes.humanoid_common.ObservationHistory`` over
``sim.humanoid_env.build_frame``; ``last_action`` = the previous applied
target, gait phase from the start of ACTIVE, ``command`` parameter = the
velocity command), the runtime runs (ACTIVE only) and the supervisor ticks.
Every tick publishes ``/g1/joint_cmd`` ``[q_target, kp, kd]``: the last
supervisor command held (as the training env holds a target for 20 ms), or with
``interpolate`` the ramp from the previous to the new target over the period.

Diagnostics: state-machine mode and transitions, rates, interventions, hold
loop period error and state-in -> command-out latency (p50/p99).
Plain logic lives in ``HumanoidPolicyLoop`` (no rclpy), which tests drive directly.
Imports rclpy, policies.runtime, sim2real (safety, supervisor), ros_nodes.common/humanoid_common.
"""
from __future__ import annotations

import sys
import time
from collections import deque

import numpy as np

NO_POLICY, WAITING = "NO_POLICY", "WAITING_FOR_STATE"


class HumanoidPolicyLoop:
    """Runtime + supervisor + observation history, driven by state callbacks and ``tick(t)``. No rclpy."""

    def __init__(self, artifact, robot="g1_12dof", safety_config="", command=(0.0, 0.0, 0.0), auto_start=True,
                 interpolate=False, hold_rate_hz=500.0):
        from onboard.spec import load_robot
        self.profile = load_robot(robot)
        self.command = np.asarray(command, float)
        self.auto_start = bool(auto_start)
        self.interpolate = bool(interpolate)
        self.hold_rate_hz = float(hold_rate_hz)
        self.ok, self.error = False, ""
        self.q = self.dq = self.quat = self.gyro = None
        self.js_receive_t = self.imu_receive_t = None
        self.ticks = self.policy_ticks = self.policy_calls = self.published = 0
        self.compute_ms: deque = deque(maxlen=1000)
        self.cur = self.prev = None
        self.active_steps = 0
        self.last_action = np.zeros(12)
        self.started = False
        try:
            from pathlib import Path

            from onboard.paths import config_dir
            from policies.runtime import PolicyRuntime
            from ros_nodes.humanoid_common import ObservationHistory, history_of_contract
            from sim.humanoid_env import gait_period_of_contract
            from sim2real.humanoid_supervisor import HumanoidSupervisor
            from sim2real.safety import SafetyFilter
            if self.profile.kind != "humanoid":
                raise ValueError(f"robot '{self.profile.name}' is a {self.profile.kind}, not a humanoid")
            self.rt = PolicyRuntime(artifact, robot=self.profile)
            self.contract = self.rt.contract
            self.control_rate_hz = float(self.contract.control_rate_hz)
            path = Path(safety_config) if safety_config else config_dir() / "safety" / f"{self.profile.name}.yaml"
            self.safety_path = str(path)
            self.safety = SafetyFilter.from_yaml(self.profile, path, dt_s=1.0 / self.control_rate_hz)
            self.sup = HumanoidSupervisor(self.safety)
            self.default_pose = self.sup.default_pose
            self.history = ObservationHistory(history_of_contract(self.contract))
            self.gait_period_s = gait_period_of_contract(self.contract, artifact)
            self.ok = True
        except Exception as exc:  # noqa: BLE001 - reported on /diagnostics; strict mode exits
            self.error = str(exc)
            self.control_rate_hz = float(self.profile.rates_hz.get("control_hz", 50.0))
        self.decimation = max(1, int(round(self.hold_rate_hz / self.control_rate_hz)))

    # ---- inputs -----------------------------------------------------------------------------
    def on_joint_state(self, q, dq, receive_t: float) -> None:
        q, dq = np.asarray(q, float), np.asarray(dq, float)
        if q.shape == (12,) and dq.shape == (12,) and np.all(np.isfinite(q)) and np.all(np.isfinite(dq)):
            self.q, self.dq, self.js_receive_t = q, dq, float(receive_t)

    def on_imu(self, quat_wxyz, gyro, receive_t: float) -> None:
        quat, gyro = np.asarray(quat_wxyz, float), np.asarray(gyro, float)
        if np.all(np.isfinite(quat)) and np.all(np.isfinite(gyro)) and np.linalg.norm(quat) > 0.5:
            self.quat, self.gyro, self.imu_receive_t = quat / np.linalg.norm(quat), gyro, float(receive_t)

    @property
    def mode(self) -> str:
        return self.sup.mode if self.ok else NO_POLICY

    def state(self) -> tuple[dict | None, float]:
        from ros_nodes.humanoid_common import leg_state
        if self.q is None or self.quat is None:
            return None, -np.inf
        return leg_state(self.q, self.dq, self.quat, self.gyro), min(self.js_receive_t, self.imu_receive_t)

    # ---- loops ----------------------------------------------------------------------------------
    def tick(self, t: float):
        """One hold-loop tick at ``hold_rate_hz``; returns the LegCommand to publish (None: nothing yet)."""
        if not self.ok:
            return None
        j = self.ticks % self.decimation
        self.ticks += 1
        if j == 0:
            self._policy_tick(t)
        if self.cur is None:
            return None
        from sim2real.humanoid_supervisor import ACTIVE, RAMP, LegCommand
        c, p = self.cur, self.prev
        if self.interpolate and p is not None and c.mode == p.mode and c.mode in (RAMP, ACTIVE):
            a = (j + 1) / self.decimation
            return LegCommand(p.q_target + a * (c.q_target - p.q_target), c.kp, c.kd, c.mode)
        return c

    def _policy_tick(self, t: float) -> None:
        from ros_nodes.humanoid_common import frame_from_state, last_action_of
        from sim2real.humanoid_supervisor import ACTIVE, RAMP, ZERO_TORQUE
        state, stamp = self.state()
        if state is None:
            return
        self.policy_ticks += 1
        sup = self.sup
        if sup.mode == ZERO_TORQUE and self.auto_start and not self.started:
            self.started = sup.start(state, t, stamp)
        fresh = t - stamp <= self.safety.env.state_timeout_s
        if fresh:
            self.history.push(frame_from_state(self.q, self.dq, self.quat, self.gyro, self.command,
                                               self.last_action, self.active_steps / self.control_rate_hz,
                                               self.default_pose, self.gait_period_s))
        target = None
        if sup.mode == ACTIVE and fresh:
            c0 = time.perf_counter()
            target = self.rt.act(self.history.obs(), t=t)
            self.compute_ms.append((time.perf_counter() - c0) * 1e3)
            self.policy_calls += 1
        cmd = sup.step(state, stamp, t, policy_target=target)
        if cmd.mode == ACTIVE:
            self.active_steps += 1
        self.last_action = last_action_of(cmd.q_target, self.default_pose) if cmd.mode in (RAMP, ACTIVE) \
            else np.zeros(12)
        self.prev, self.cur = self.cur, cmd

    def transitions(self) -> str:
        if not self.ok:
            return ""
        tr = self.sup.transitions
        return ">".join([tr[0][1]] + [b for _, _, b, _ in tr]) if tr else self.sup.mode

    def diagnostics(self) -> tuple[str, str, dict]:
        values = {"state": self.mode, "ticks": self.ticks, "policy_ticks": self.policy_ticks,
                  "policy_calls": self.policy_calls, "commands_published": self.published,
                  "hold_rate_hz": self.hold_rate_hz, "control_rate_hz": self.control_rate_hz}
        if not self.ok:
            values["error"] = self.error
            return "error", f"no policy loaded: {self.error}", values
        if self.compute_ms:
            values["inference_ms_p99"] = float(np.percentile(self.compute_ms, 99))
        s = self.safety.summary(last=0)
        values.update({"transitions": self.transitions(), "reason": self.sup.reason or "",
                       "safety_mode": s["mode"], "interventions": s["total"], "safety_envelope": self.safety_path})
        for check, n in sorted(s["counts"].items()):
            values[f"interventions.{check}"] = n
        mode = self.sup.mode
        if mode == "DAMPING":
            return "error", f"DAMPING: {self.sup.reason}", values
        if self.q is None or self.quat is None:
            return "warn", "waiting for /g1/joint_states and /g1/imu", values
        return ("ok" if mode == "ACTIVE" else "warn"), f"{mode} at {self.control_rate_hz:g} Hz policy, " \
                                                       f"{self.hold_rate_hz:g} Hz hold", values


class LoopTimer:
    """Hold-loop period error and state-in -> command-out latency, p50/p99 over the last samples."""

    def __init__(self, period_s: float, keep: int = 5000):
        self.period_s = period_s
        self.last_t: float | None = None
        self.period_err_ms: deque = deque(maxlen=keep)
        self.latency_ms: deque = deque(maxlen=keep)
        self.tick_ms: deque = deque(maxlen=keep)

    def tick(self, t: float) -> None:
        if self.last_t is not None:
            self.period_err_ms.append(abs(t - self.last_t - self.period_s) * 1e3)
        self.last_t = t

    def published(self, state_receive_t: float | None, t_out: float, t_in: float | None = None) -> None:
        """``t_out``: publish returned; ``state_receive_t``: the newest state's arrival; ``t_in``: tick entry."""
        if state_receive_t is not None:
            self.latency_ms.append((t_out - state_receive_t) * 1e3)
        if t_in is not None:
            self.tick_ms.append((t_out - t_in) * 1e3)

    def values(self) -> dict:
        out = {}
        for name, d in (("period_error_ms", self.period_err_ms), ("state_to_cmd_ms", self.latency_ms),
                        ("tick_ms", self.tick_ms)):
            if d:
                a = np.asarray(d)
                out[f"{name}_p50"], out[f"{name}_p99"] = float(np.percentile(a, 50)), float(np.percentile(a, 99))
        return out


LOW_STATE_TOPIC = "/lowstate"     # unitree_hg topics on the G1 (unitree_ros2)
LOW_CMD_TOPIC = "/lowcmd"
INTERFACES = ("onboard", "unitree_hg")


def unitree_hg_interface(interface: str):
    """``interface`` parameter -> None (onboard messages: JointState + Imu in, Float64MultiArray out) or
    (adapter module, LowCmd, LowState) for the robot's own unitree_hg messages. Refuses to start (exit 2)
    on an unknown value, or on unitree_hg when that package cannot be imported here."""
    from onboard.errors import OnboardError
    from ros_nodes.adapters import unitree_hg as adapter

    if interface not in INTERFACES:
        raise OnboardError(f"unknown interface '{interface}'", field="interface",
                           fix=f"use one of {list(INTERFACES)}")
    if interface == "onboard":
        return None
    if not adapter.available():
        raise OnboardError("interface unitree_hg needs the unitree_hg message package, which does not import "
                           "here", field="interface",
                           fix="source the unitree_ros2 workspace (cyclonedds, unitree_hg) on the robot's PC, "
                               "or use interface:=onboard against the simulator")
    from unitree_hg.msg import LowCmd, LowState
    return adapter, LowCmd, LowState


def main(argv=None) -> int:
    from diagnostic_msgs.msg import DiagnosticArray
    from rclpy.clock import Clock, ClockType
    from rclpy.node import Node
    from rclpy.utilities import remove_ros_args
    from sensor_msgs.msg import Imu, JointState
    from std_msgs.msg import Float64MultiArray

    from ros_nodes.common import (StateError, command_qos, diagnostic_status, joint_state_arrays, run_node,
                                  sensor_qos)
    from ros_nodes.humanoid_common import IMU_TOPIC, JOINT_CMD_TOPIC, JOINT_STATE_TOPIC, imu_arrays, joint_cmd_array

    argv = list(sys.argv if argv is None else argv)
    strict = "--strict" in remove_ros_args(argv)[1:]

    def make_node():
        node = Node("humanoid_policy_node")
        from rcl_interfaces.msg import ParameterDescriptor
        any_num = ParameterDescriptor(dynamic_typing=True)     # "3" and "3.0" both read as numbers
        p = node.declare_parameter
        loop = HumanoidPolicyLoop(p("artifact", "").value, robot=p("robot", "g1_12dof").value,
                                  safety_config=p("safety_config", "").value,
                                  command=[float(v) for v in p("command", [0.0, 0.0, 0.0]).value],
                                  auto_start=bool(p("auto_start", True).value),
                                  interpolate=bool(p("interpolate", False).value),
                                  hold_rate_hz=float(p("hold_rate_hz", 500.0, any_num).value))
        if not loop.ok:
            if strict or bool(p("strict", False).value):
                raise SystemExit(loop.error)
            node.get_logger().error(f"no policy: {loop.error} (the node stays up and never commands)")
        interface = str(p("interface", "onboard").value)
        hg = unitree_hg_interface(interface)       # None for "onboard"; refuses to start when absent
        steady = Clock(clock_type=ClockType.STEADY_TIME)
        now = lambda: steady.now().nanoseconds * 1e-9        # noqa: E731
        timer = LoopTimer(1.0 / loop.hold_rate_hz)
        names = tuple(loop.profile.joint_names)
        pub = node.create_publisher(Float64MultiArray, JOINT_CMD_TOPIC, command_qos()) if hg is None else None
        pub_diag = node.create_publisher(DiagnosticArray, "/diagnostics", 10)
        bad = {"n": 0}
        if hg is not None:                         # the robot's own messages: /lowstate in, /lowcmd out
            adapter, LowCmd, LowState = hg
            pub_low = node.create_publisher(LowCmd, LOW_CMD_TOPIC, command_qos())
            machine = {"mode_machine": None}

            def on_low_state(m):
                try:
                    st = adapter.state_from_low_state(m)
                except (AttributeError, IndexError, TypeError, ValueError):
                    bad["n"] += 1
                    return
                t = now()
                machine["mode_machine"] = st["mode_machine"]
                loop.on_joint_state(st["q"], st["dq"], t)
                loop.on_imu(st["quat"], st["gyro"], t)

            node.create_subscription(LowState, LOW_STATE_TOPIC, on_low_state, sensor_qos())

        def on_js(m):
            try:
                q, dq = joint_state_arrays(m.name, m.position, m.velocity, names)
            except StateError:
                bad["n"] += 1
                return
            loop.on_joint_state(q, dq, now())

        def on_imu(m):
            quat, gyro = imu_arrays(m)
            loop.on_imu(quat, gyro, now())

        def on_tick():
            t = now()
            timer.tick(t)
            cmd = loop.tick(t)
            if cmd is None:
                return
            if hg is None:
                pub.publish(joint_cmd_array(cmd.q_target, cmd.kp, cmd.kd))
            else:
                if machine["mode_machine"] is None:     # LowCmd must echo the robot's mode_machine
                    return
                msg = LowCmd()
                try:
                    adapter.fill_low_cmd(msg, cmd, machine["mode_machine"])
                except ValueError:                      # non-finite: never on the wire
                    return
                pub_low.publish(msg)
            loop.published += 1
            timer.published(loop.js_receive_t, now(), t)

        def on_diag():
            level, message, values = loop.diagnostics()
            values.update(timer.values())
            values["rejected_states"] = bad["n"]
            arr = DiagnosticArray()
            arr.header.stamp = node.get_clock().now().to_msg()
            arr.status = [diagnostic_status("humanoid_policy_node: supervisor", level, message, values,
                                            hardware_id=loop.profile.name)]
            pub_diag.publish(arr)

        if hg is None:
            node.create_subscription(JointState, JOINT_STATE_TOPIC, on_js, sensor_qos())
            node.create_subscription(Imu, IMU_TOPIC, on_imu, sensor_qos())
        node.create_timer(1.0 / loop.hold_rate_hz, on_tick, clock=steady)
        node.create_timer(0.5, on_diag, clock=steady)
        if loop.ok:
            c = loop.contract
            node.get_logger().info(f"policy {c.policy_kind} for {c.robot['name']} at {c.control_rate_hz:g} Hz, "
                                   f"hold loop {loop.hold_rate_hz:g} Hz, safety {loop.safety_path} -> "
                                   f"{JOINT_CMD_TOPIC if hg is None else LOW_CMD_TOPIC}")
        node.executor_kind = p("executor", "events").value
        return node

    return run_node("humanoid_policy_node", make_node, argv)


if __name__ == "__main__":
    sys.exit(main())
