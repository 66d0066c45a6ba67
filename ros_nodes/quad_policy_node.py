"""``quad_policy_node``: a quadrotor artifact flying a drone over ROS 2, through the safety filter.

Start-up: ``policies.runtime.PolicyRuntime`` opens the artifact and checks its
contract against the robot profile (a quadrotor); the safety filter is the
envelope the contract records (``safety_config`` overrides). A bad artifact
is reported on /diagnostics and the node never commands (``strict``: exit 2).

Inputs: ``/quad/odom`` nav_msgs/Odometry (pose ENU in ``world``, twist FLU in
``base_link``) and ``/quad/imu`` sensor_msgs/Imu (gyro); outputs
``/quad/cmd`` std_msgs/Float64MultiArray ``[thrust_n, wx, wy, wz]`` at the
contract's rate (100 Hz) and ``/diagnostics``. On a real airframe the PX4 or
Crazyswarm2 adapter (``ros_nodes.adapters``) translates ``/quad/cmd``.

Reference: ``reference: hover`` at ``setpoint`` [x, y, z] m, or ``figure8``
around ``setpoint`` (the training task's trajectory, clock starting at the
first running tick). The observation is built by
``sim.quad_env.observation_from_state``, the function the sim env uses, so
training and deployment share one observation builder; ``last_action`` is the
previous PUBLISHED (filtered) command, normalized, as in the evaluation.

Stale odometry (older than ``state_timeout_s``) -> no policy output; the
filter's watchdog turns the gap into its land command. Plain logic lives in
``QuadPolicyLoop`` (no rclpy), which tests drive directly.
Imports rclpy, policies.runtime, sim2real.safety, sim.quad_env, ros_nodes.common/adapters.
"""
from __future__ import annotations

import math
import sys
import time
from collections import deque

import numpy as np

WAITING, RUNNING, STALE, NO_POLICY = "waiting_for_state", "running", "stale", "no_policy"


class QuadPolicyLoop:
    """Runtime + safety filter + reference, driven by odometry/IMU and ``tick(t)``. No rclpy."""

    def __init__(self, artifact, robot="crazyflie2x", safety_config="", reference="hover",
                 setpoint=(0.0, 0.0, 1.0), state_timeout_s=0.1):
        from onboard.spec import load_robot
        self.profile = load_robot(robot)
        self.setpoint = np.asarray(setpoint, dtype=float)
        if reference not in ("hover", "figure8"):
            from onboard.errors import OnboardError
            raise OnboardError(f"unknown reference {reference!r}", field="reference", fix="use hover or figure8")
        self.reference_kind = reference
        self.state_timeout_s = float(state_timeout_s)
        self.ok, self.error = False, ""
        self.status = WAITING
        self.odom: dict | None = None
        self.odom_receive_t: float | None = None
        self.gyro: np.ndarray | None = None
        self.t0: float | None = None
        self.last_cmd: np.ndarray | None = None
        self.ticks = self.published = self.stale_ticks = 0
        self.compute_ms: deque = deque(maxlen=500)
        self.errors: deque = deque(maxlen=500)
        try:
            from pathlib import Path

            from policies.quad_eval import envelope_for
            from policies.runtime import PolicyRuntime
            from sim2real.safety import SafetyFilter
            if self.profile.kind != "quadrotor":
                raise ValueError(f"robot '{self.profile.name}' is a {self.profile.kind}, not a quadrotor")
            probe = PolicyRuntime(artifact, robot=self.profile)
            task = (probe.contract.provenance.get("train_config") or {}).get("task", "hover")
            env_path = Path(safety_config) if safety_config else envelope_for(probe.contract, task)
            self.safety = SafetyFilter.from_yaml(self.profile, env_path,
                                                 dt_s=1.0 / probe.contract.control_rate_hz)
            self.safety_path = str(env_path)
            self.rt = PolicyRuntime(artifact, robot=self.profile, safety=self.safety)
            self.contract = self.rt.contract
            self.control_rate_hz = self.contract.control_rate_hz
            self.ok = True
        except Exception as exc:  # noqa: BLE001 - reported on /diagnostics; strict mode exits
            self.error = str(exc)
            self.control_rate_hz = float(self.profile.rates_hz.get("control_hz", 100.0))

    # ---- inputs -------------------------------------------------------------------------
    def on_odometry(self, pos, quat_wxyz, vel_body, omega_body, receive_t: float) -> None:
        from ros_nodes.adapters.quad_common import quat_wxyz_to_rot
        pos, vel_body = np.asarray(pos, float), np.asarray(vel_body, float)
        if not (np.all(np.isfinite(pos)) and np.all(np.isfinite(quat_wxyz)) and np.all(np.isfinite(vel_body))):
            return
        rot = quat_wxyz_to_rot(quat_wxyz)
        self.odom = {"pos": pos, "rot": rot, "vel": rot @ vel_body, "omega": np.asarray(omega_body, float)}
        self.odom_receive_t = float(receive_t)

    def on_imu(self, gyro) -> None:
        self.gyro = np.asarray(gyro, dtype=float)

    # ---- reference ------------------------------------------------------------------------
    def reference(self, t_rel: float):
        if self.reference_kind == "hover":
            return self.setpoint.copy(), np.zeros(3), np.zeros(3)
        from sim.quad_env import figure8
        p, v, a = figure8(np.array([t_rel]))
        return self.setpoint + p[0], v[0], a[0]

    def filter_state(self) -> dict:
        r = self.odom["rot"]
        rpy = np.array([math.atan2(r[2, 1], r[2, 2]), -math.asin(max(-1.0, min(1.0, r[2, 0]))),
                        math.atan2(r[1, 0], r[0, 0])])
        return {"pos": self.odom["pos"], "vel": self.odom["vel"], "rpy": rpy}

    def observation(self, t_rel: float) -> dict:
        from sim.quad_env import observation_from_state, split_obs
        o = self.odom
        gyro = self.gyro if self.gyro is not None else o["omega"]
        if self.last_cmd is None:
            hover = np.r_[self.profile.raw["mass_kg"] * 9.81, 0.0, 0.0, 0.0]
            last = self.rt.to_normalized(hover)
        else:
            last = self.rt.to_normalized(self.last_cmd)
        rp, rv, ra = self.reference(t_rel)
        obs = observation_from_state(o["pos"][None], o["vel"][None], o["rot"][None], gyro[None], rp[None],
                                     rv[None], ra[None], np.asarray(last)[None])
        return {k: v[0] for k, v in split_obs(obs).items()}

    # ---- the control tick --------------------------------------------------------------------
    def tick(self, t: float) -> np.ndarray | None:
        if not self.ok:
            self.status = NO_POLICY
            return None
        self.ticks += 1
        if self.odom is None:
            self.status = WAITING
            return None
        if t - self.odom_receive_t > self.state_timeout_s:
            self.status = STALE
            self.stale_ticks += 1
            return self._emit(np.asarray(self.safety.filter(None, t), dtype=float))
        state = self.filter_state()
        self.safety.update_state(state, self.odom_receive_t)
        if self.t0 is None or self.status == STALE:
            self.rt.reset(state, t)
            self.t0 = t if self.t0 is None else self.t0
        self.status = RUNNING
        t_rel = t - self.t0
        c0 = time.perf_counter()
        cmd = self.rt.act(self.observation(t_rel), t=t, state=state)
        self.compute_ms.append((time.perf_counter() - c0) * 1e3)
        rp, _, _ = self.reference(t_rel)
        self.errors.append(float(np.linalg.norm(self.odom["pos"] - rp)))
        return self._emit(cmd)

    def _emit(self, cmd: np.ndarray) -> np.ndarray | None:
        if not np.all(np.isfinite(cmd)):
            return None
        self.last_cmd = cmd.copy()
        return cmd

    def diagnostics(self, t: float) -> tuple[str, str, dict]:
        values = {"state": self.status, "ticks": self.ticks, "commands_published": self.published,
                  "stale_ticks": self.stale_ticks}
        if self.compute_ms:
            values["compute_ms_p99"] = float(np.percentile(self.compute_ms, 99))
        if self.errors:
            values["position_error_m"] = self.errors[-1]
        if not self.ok:
            values["error"] = self.error
            return "error", f"no policy loaded: {self.error}", values
        s = self.safety.summary(last=0)
        values.update({"safety_mode": s["mode"], "interventions": s["total"], "safety_envelope": self.safety_path})
        for check, n in sorted(s["counts"].items()):
            values[f"interventions.{check}"] = n
        if self.status == STALE:
            return "stale", "stale /quad/odom: safety filter fallback", values
        if self.status == WAITING:
            return "warn", "waiting for /quad/odom", values
        return "ok", f"running at {self.control_rate_hz:g} Hz, safety {s['mode']}", values


def main(argv=None) -> int:
    from diagnostic_msgs.msg import DiagnosticArray
    from nav_msgs.msg import Odometry
    from rclpy.node import Node
    from rclpy.utilities import remove_ros_args
    from sensor_msgs.msg import Imu
    from std_msgs.msg import Float64MultiArray

    from ros_nodes.adapters.quad_common import CMD_TOPIC, IMU_TOPIC, ODOM_TOPIC, command_array
    from ros_nodes.common import command_qos, diagnostic_status, run_node, sensor_qos

    argv = list(sys.argv if argv is None else argv)
    strict = "--strict" in remove_ros_args(argv)[1:]

    def make_node():
        node = Node("quad_policy_node")
        p = node.declare_parameter
        loop = QuadPolicyLoop(p("artifact", "").value, robot=p("robot", "crazyflie2x").value,
                              safety_config=p("safety_config", "").value, reference=p("reference", "hover").value,
                              setpoint=[float(v) for v in p("setpoint", [0.0, 0.0, 1.0]).value],
                              state_timeout_s=float(p("state_timeout_s", 0.1).value))
        if not loop.ok:
            if strict or bool(p("strict", False).value):
                raise SystemExit(loop.error)
            node.get_logger().error(f"no policy: {loop.error} (the node stays up and never commands)")
        now = lambda: node.get_clock().now().nanoseconds * 1e-9        # noqa: E731
        pub = node.create_publisher(Float64MultiArray, CMD_TOPIC, command_qos())
        pub_diag = node.create_publisher(DiagnosticArray, "/diagnostics", 10)

        def on_odom(m):
            q = m.pose.pose.orientation
            pp, tl, ta = m.pose.pose.position, m.twist.twist.linear, m.twist.twist.angular
            loop.on_odometry([pp.x, pp.y, pp.z], [q.w, q.x, q.y, q.z], [tl.x, tl.y, tl.z], [ta.x, ta.y, ta.z], now())

        def on_imu(m):
            w = m.angular_velocity
            loop.on_imu([w.x, w.y, w.z])

        def on_tick():
            cmd = loop.tick(now())
            if cmd is not None:
                pub.publish(command_array(cmd))
                loop.published += 1

        def on_diag():
            level, message, values = loop.diagnostics(now())
            arr = DiagnosticArray()
            arr.header.stamp = node.get_clock().now().to_msg()
            arr.status = [diagnostic_status("quad_policy_node: policy", level, message, values,
                                            hardware_id=loop.profile.name)]
            pub_diag.publish(arr)

        node.create_subscription(Odometry, ODOM_TOPIC, on_odom, sensor_qos())
        node.create_subscription(Imu, IMU_TOPIC, on_imu, sensor_qos())
        node.create_timer(1.0 / loop.control_rate_hz, on_tick)
        node.create_timer(0.5, on_diag)
        if loop.ok:
            c = loop.contract
            node.get_logger().info(f"policy {c.policy_kind} for {c.robot['name']} at {c.control_rate_hz:g} Hz, "
                                   f"reference {loop.reference_kind} at {loop.setpoint.tolist()}, "
                                   f"safety {loop.safety_path} -> {CMD_TOPIC}")
        node.executor_kind = p("executor", "events").value
        return node

    return run_node("quad_policy_node", make_node, argv)


if __name__ == "__main__":
    sys.exit(main())
