"""``humanoid_sim_node``: the MuJoCo G1 legs (``sim.g1_model``, one robot) playing the robot over ROS 2.

Publishes at ``rate_hz`` (500, real time on the steady clock)
- ``/g1/joint_states`` sensor_msgs/JointState (12 leg joints: position, velocity, torque);
- ``/g1/imu`` sensor_msgs/Imu (orientation, body angular velocity, specific force);
- ``/diagnostics`` (firmware state, commands, refused commands, pelvis height).

Subscribes ``/g1/joint_cmd`` std_msgs/Float64MultiArray ``[q_target(12), kp(12), kd(12)]``
(``ros_nodes.humanoid_common``) and runs the joint PD
``tau = clip(kp (q* - q) - kd dq, +-torque limit)`` at every 2 ms physics step.

Firmware behaviour (like the G1's motor drivers): until the first command the
motors are limp (kp = kd = 0); the last command is held; when commands stop for
more than ``command_timeout_s`` (0.2 s) the motors go to damping (kp = 0,
kd = the profile's kd) until commands come back.

Gantry: the pelvis hangs fixed (pose held, velocity zero) until
``gantry_release_s`` seconds after the first command with kp > 0 (default
3 s: the supervisor's 2 s ramp happens on the gantry, as on the real robot,
where PD alone cannot stand; a negative value keeps it hung for good).

Physics tracks wall time: a tick that comes late steps as many 2 ms steps as
are due (at most ``MAX_CATCH_UP``). Plain logic in ``HumanoidSimCore`` (no rclpy).
Imports rclpy, mujoco, sim.g1_model and ros_nodes.common/humanoid_common; never policies.
"""
from __future__ import annotations

import os
import sys

import numpy as np

os.environ.setdefault("MUJOCO_GL", "egl")

WAITING, RUNNING, DAMPING = "waiting_for_command", "running", "damping"
MAX_CATCH_UP = 10


class HumanoidSimCore:
    """One G1 (legs) + firmware PD: ``on_command(q, kp, kd, t)``, ``advance(t)``, ``state()``. No rclpy."""

    def __init__(self, command_timeout_s: float = 0.2, gantry_release_s: float = 3.0):
        import mujoco

        from sim.g1_model import PHYSICS_DT_S, RobotIndex, build_model, load_description, standing_height_m
        self._mj = mujoco
        self.desc = load_description()
        self.model = build_model(1, self.desc)
        self.data = mujoco.MjData(self.model)
        self.ix = RobotIndex.of(self.model, 1, self.desc)
        self.dt = PHYSICS_DT_S
        self.joint_names = self.desc.joint_names
        self.command_timeout_s = float(command_timeout_s)
        self.gantry_release_s = float(gantry_release_s)
        d, ix = self.data, self.ix
        self.base_pose = np.array([0.0, 0.0, standing_height_m() + 0.002, 1.0, 0.0, 0.0, 0.0])
        d.qpos[ix.qpos_base[0]] = self.base_pose
        d.qpos[ix.qpos_joint[0]] = self.desc.default_pose
        mujoco.mj_forward(self.model, d)
        self.q_target = self.desc.default_pose.copy()
        self.kp = np.zeros(12)
        self.kd = np.zeros(12)
        self.tau = np.zeros(12)
        self.last_cmd_t: float | None = None
        self.first_gain_t: float | None = None
        self.status = WAITING
        self.t0: float | None = None
        self.steps = 0
        self.commands = 0
        self._prev_v = np.zeros(3)
        self.accel_world = np.zeros(3)

    @property
    def on_gantry(self) -> bool:
        if self.gantry_release_s < 0 or self.first_gain_t is None:
            return True
        return self.steps * self.dt < self._gantry_until

    def on_command(self, q_target, kp, kd, t: float) -> None:
        self.q_target, self.kp, self.kd = (np.asarray(v, float).copy() for v in (q_target, kp, kd))
        self.last_cmd_t = float(t)
        self.commands += 1
        if self.first_gain_t is None and np.any(self.kp > 0):
            self.first_gain_t = float(t)
            self._gantry_until = self.steps * self.dt + max(self.gantry_release_s, 0.0)

    def gains(self, t: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The firmware's (target, kp, kd) at ``t``: hold the last command, damp after the timeout."""
        if self.last_cmd_t is None:
            self.status = WAITING
            return self.q_target, np.zeros(12), np.zeros(12)
        if t - self.last_cmd_t > self.command_timeout_s:
            self.status = DAMPING
            return self.q_target, np.zeros(12), self.desc.kd
        self.status = RUNNING
        return self.q_target, self.kp, self.kd

    def physics_step(self, t: float) -> None:
        from sim.g1_model import pd_torque
        d, ix, mj = self.data, self.ix, self._mj
        target, kp, kd = self.gains(t)
        q, dq = d.qpos[ix.qpos_joint[0]], d.qvel[ix.qvel_joint[0]]
        self.tau = pd_torque(target, q, dq, kp, kd, self.desc.torque_limit)
        d.ctrl[ix.actuator[0]] = self.tau
        v0 = d.qvel[ix.qvel_base[0][:3]].copy()
        mj.mj_step(self.model, d)
        if self.on_gantry:
            d.qpos[ix.qpos_base[0]] = self.base_pose
            d.qvel[ix.qvel_base[0]] = 0.0
        self.accel_world = (d.qvel[ix.qvel_base[0][:3]] - v0) / self.dt
        self.steps += 1

    def advance(self, t: float) -> int:
        """Step the physics up to wall time ``t`` (the first call starts the clock). Returns steps taken."""
        if self.t0 is None:
            self.t0 = float(t) - self.dt
        due = int((t - self.t0) / self.dt) - self.steps
        n = max(0, min(due, MAX_CATCH_UP))
        if due > MAX_CATCH_UP:         # too far behind: drop the backlog rather than run faster than real time
            self.t0 += (due - MAX_CATCH_UP) * self.dt
        for _ in range(n):
            self.physics_step(t)
        return n

    def state(self) -> dict:
        """q, dq, tau (12,), pelvis quat wxyz, gyro (body), specific force (body), height."""
        from sim.g1_model import quat_rotate_inverse
        d, ix = self.data, self.ix
        quat = d.qpos[ix.qpos_base[0][3:7]].copy()
        f_body = quat_rotate_inverse(quat[None], (self.accel_world + np.array([0.0, 0.0, 9.81]))[None])[0]
        return {"q": d.qpos[ix.qpos_joint[0]].copy(), "dq": d.qvel[ix.qvel_joint[0]].copy(), "tau": self.tau.copy(),
                "quat": quat, "gyro": d.qvel[ix.qvel_base[0][3:6]].copy(), "specific_force": f_body,
                "height": float(d.qpos[ix.qpos_base[0][2]])}


def main(argv=None) -> int:
    from diagnostic_msgs.msg import DiagnosticArray
    from rclpy.clock import Clock, ClockType
    from rclpy.node import Node
    from sensor_msgs.msg import Imu, JointState
    from std_msgs.msg import Float64MultiArray

    from ros_nodes.common import command_qos, diagnostic_status, run_node, sensor_qos
    from ros_nodes.humanoid_common import (IMU_TOPIC, JOINT_CMD_TOPIC, JOINT_STATE_TOPIC, imu_msg, joint_state_msg,
                                           read_joint_cmd)

    argv = list(sys.argv if argv is None else argv)

    def make_node():
        node = Node("humanoid_sim_node")
        from rcl_interfaces.msg import ParameterDescriptor
        any_num = ParameterDescriptor(dynamic_typing=True)     # "3" and "3.0" both read as numbers
        p = node.declare_parameter
        core = HumanoidSimCore(command_timeout_s=float(p("command_timeout_s", 0.2, any_num).value),
                               gantry_release_s=float(p("gantry_release_s", 3.0, any_num).value))
        rate = float(p("rate_hz", 500.0, any_num).value)
        steady = Clock(clock_type=ClockType.STEADY_TIME)
        now = lambda: steady.now().nanoseconds * 1e-9        # noqa: E731
        pub_js = node.create_publisher(JointState, JOINT_STATE_TOPIC, sensor_qos())
        pub_imu = node.create_publisher(Imu, IMU_TOPIC, sensor_qos())
        pub_diag = node.create_publisher(DiagnosticArray, "/diagnostics", 10)
        refused = {"n": 0}

        def on_cmd(msg):
            try:
                q, kp, kd = read_joint_cmd(msg)
            except ValueError as exc:
                refused["n"] += 1
                node.get_logger().warn(f"joint command refused: {exc}", throttle_duration_sec=1.0)
                return
            core.on_command(q, kp, kd, now())

        def on_tick():
            core.advance(now())
            st = core.state()
            stamp = node.get_clock().now().to_msg()
            pub_js.publish(joint_state_msg(core.joint_names, st["q"], st["dq"], st["tau"], stamp))
            pub_imu.publish(imu_msg(st["quat"], st["gyro"], st["specific_force"], stamp))

        def on_diag():
            arr = DiagnosticArray()
            arr.header.stamp = node.get_clock().now().to_msg()
            level = "ok" if core.status == RUNNING else "warn"
            arr.status = [diagnostic_status("humanoid_sim_node: plant", level, core.status, {
                "state": core.status, "commands": core.commands, "refused_commands": refused["n"],
                "steps": core.steps, "sim_time_s": core.steps * core.dt, "on_gantry": core.on_gantry,
                "pelvis_height_m": core.state()["height"]}, hardware_id="sim")]
            pub_diag.publish(arr)

        node.create_subscription(Float64MultiArray, JOINT_CMD_TOPIC, on_cmd, command_qos())
        node.create_timer(1.0 / rate, on_tick, clock=steady)
        node.create_timer(0.5, on_diag, clock=steady)
        node.get_logger().info(f"G1 legs sim at {rate:g} Hz: {JOINT_STATE_TOPIC}, {IMU_TOPIC} out, "
                               f"{JOINT_CMD_TOPIC} in; gantry release {core.gantry_release_s:g} s after the first gains")
        node.executor_kind = "events"
        return node

    return run_node("humanoid_sim_node", make_node, argv)


if __name__ == "__main__":
    sys.exit(main())
