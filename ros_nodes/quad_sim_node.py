"""``quad_sim_node``: the MuJoCo Crazyflie (``sim.quad_env``) playing the real quadrotor over ROS 2.

Speaks the standard-message path of ``ros_nodes.adapters.quad_common`` (what
the PX4 / Crazyswarm2 adapters translate on a real airframe):

Subscribes
- ``/quad/cmd`` std_msgs/Float64MultiArray ``[thrust_n, wx, wy, wz]``:
  collective thrust [N] + body rates [rad/s] (FLU) for the firmware rate loop.

Publishes (``publish_rate_hz``, default 100)
- ``/quad/odom`` nav_msgs/Odometry: pose in ``world`` (ENU, z up), twist in
  ``base_link`` (FLU), as REP 105 says; what a motion-capture + estimator
  stack reports: delayed and noisy when DR is on.
- ``/quad/imu`` sensor_msgs/Imu: gyro (FLU, with bias and noise under DR),
  specific force, orientation.
- ``/diagnostics``: commands received, firmware state, crashes.

Firmware behaviour on command loss (Crazyflie figures from the robot
profile): after ``firmware_setpoint_timeout_s`` (1 s) without a setpoint the
rate loop levels the airframe (attitude-proportional rates, last thrust);
after ``firmware_motor_stop_s`` (2 s) the motors stop. With
``wait_for_command`` (default true) physics starts at the first command
(the drone is held at ``start_pos`` until then, like a drone held in hand).
A crash is counted and logged; the drone is then reset to ``start_pos``.

Physics advances one 100 Hz control step (5 x 500 Hz) per timer tick on the
steady clock. Imports rclpy, sim and ros_nodes.common/adapters; never policies.
"""
from __future__ import annotations

import math
import os
import sys

import numpy as np

os.environ.setdefault("MUJOCO_GL", "egl")

WAITING, FLYING, LEVELING, MOTORS_OFF = "waiting_for_command", "flying", "leveling", "motors_off"


class QuadSimCore:
    """The plant + firmware-timeout logic, no rclpy: ``on_command(cmd, t)``, ``step(t)``, ``state()``."""

    def __init__(self, robot="crazyflie2x", seed=0, dr=False, start_pos=(0.0, 0.0, 1.0), wait_for_command=True,
                 plant="mujoco"):
        from onboard.spec import load_robot
        from sim.quad_env import QuadVecEnv
        self.env = QuadVecEnv(1, task="hover", dr=dr, seed=seed, robot=robot, episode_s=1e7, plant=plant)
        self.env.reset()
        self.start_pos = np.asarray(start_pos, dtype=float)
        self._place()
        iface = load_robot(robot).raw.get("interface", {})
        self.level_after_s = float(iface.get("firmware_setpoint_timeout_s", 1.0))
        self.stop_after_s = float(iface.get("firmware_motor_stop_s", 2.0))
        self.wait_for_command = bool(wait_for_command)
        self.cmd = np.array([self.env.sim.nominal.weight_n, 0.0, 0.0, 0.0])
        self.last_cmd_t: float | None = None
        self.status = WAITING if wait_for_command else FLYING
        self.commands = 0
        self.crashes = 0
        self.steps = 0
        self._prev_vel = np.zeros(3)
        self.accel_world = np.zeros(3)

    def _place(self) -> None:
        e = self.env
        e.sim.reset_drones(np.array([0]), self.start_pos[None, :])
        e._center[0] = self.start_pos
        e._state_fifo[:, 0] = e._measure()[0]

    def on_command(self, cmd, t: float) -> None:
        self.cmd = np.asarray(cmd, dtype=float)
        self.last_cmd_t = float(t)
        self.commands += 1

    def _firmware_command(self, t: float) -> np.ndarray:
        if self.last_cmd_t is None:
            return self.cmd if not self.wait_for_command else np.zeros(4)
        age = t - self.last_cmd_t
        if age <= self.level_after_s:
            self.status = FLYING
            return self.cmd
        if age <= self.stop_after_s:
            self.status = LEVELING
            r = self.env.sim.rotation()[0]
            roll, pitch = math.atan2(r[2, 1], r[2, 2]), -math.asin(max(-1.0, min(1.0, r[2, 0])))
            return np.array([self.cmd[0], -4.0 * roll, -4.0 * pitch, 0.0])
        self.status = MOTORS_OFF
        return np.zeros(4)

    def step(self, t: float) -> dict | None:
        """One control period; returns the step info, or None while waiting for the first command."""
        if self.status == WAITING and self.last_cmd_t is None and self.wait_for_command:
            return None
        e = self.env
        cmd = self._firmware_command(t)
        lo = np.r_[0.0, -np.asarray(e.action_spec["physical_max"][1:])]
        hi = np.asarray(e.action_spec["physical_max"])
        a = 2 * (cmd - lo) / (hi - lo) - 1
        v0 = e.sim.vel[0].copy()
        _, _, term, _, info = e.step(a[None, :])
        self.steps += 1
        self.accel_world = (e.sim.vel[0] - v0) / e.dt_s
        if info["crash"][0]:
            self.crashes += 1
            self._place()
        elif term[0]:            # landed gently: sit on the floor (the env reset it; put it back down)
            self._place()
        return info

    def state(self) -> dict:
        """Measured (delayed, noisy under DR) pos, vel (world), rot (3x3), gyro; plus the true specific force."""
        m = self.env.measured()[0]
        c1, c2 = m[6:9], m[9:12]
        c1 = c1 / np.linalg.norm(c1)
        c2 = c2 - c1 * (c1 @ c2)
        c2 = c2 / np.linalg.norm(c2)
        rot = np.stack([c1, c2, np.cross(c1, c2)], axis=1)
        specific_force = self.env.sim.rotation()[0].T @ (self.accel_world + np.array([0, 0, 9.81]))
        return {"pos": m[0:3], "vel": m[3:6], "rot": rot, "gyro": m[12:15], "specific_force": specific_force,
                "true_pos": self.env.sim.pos[0].copy()}


def odometry_msg(st: dict, stamp):
    from nav_msgs.msg import Odometry

    from ros_nodes.adapters.quad_common import rot_to_quat_wxyz
    o = Odometry()
    o.header.stamp = stamp
    o.header.frame_id, o.child_frame_id = "world", "base_link"
    p = o.pose.pose
    p.position.x, p.position.y, p.position.z = (float(v) for v in st["pos"])
    w, x, y, z = (float(v) for v in rot_to_quat_wxyz(st["rot"]))
    p.orientation.w, p.orientation.x, p.orientation.y, p.orientation.z = w, x, y, z
    vb = st["rot"].T @ st["vel"]
    o.twist.twist.linear.x, o.twist.twist.linear.y, o.twist.twist.linear.z = (float(v) for v in vb)
    o.twist.twist.angular.x, o.twist.twist.angular.y, o.twist.twist.angular.z = (float(v) for v in st["gyro"])
    return o


def imu_msg(st: dict, stamp):
    from sensor_msgs.msg import Imu

    from ros_nodes.adapters.quad_common import rot_to_quat_wxyz
    m = Imu()
    m.header.stamp = stamp
    m.header.frame_id = "base_link"
    w, x, y, z = (float(v) for v in rot_to_quat_wxyz(st["rot"]))
    m.orientation.w, m.orientation.x, m.orientation.y, m.orientation.z = w, x, y, z
    m.angular_velocity.x, m.angular_velocity.y, m.angular_velocity.z = (float(v) for v in st["gyro"])
    f = st["specific_force"]
    m.linear_acceleration.x, m.linear_acceleration.y, m.linear_acceleration.z = (float(v) for v in f)
    return m


def main(argv=None) -> int:
    from diagnostic_msgs.msg import DiagnosticArray
    from nav_msgs.msg import Odometry
    from rclpy.clock import Clock, ClockType
    from rclpy.node import Node
    from sensor_msgs.msg import Imu
    from std_msgs.msg import Float64MultiArray

    from ros_nodes.adapters.quad_common import CMD_TOPIC, IMU_TOPIC, ODOM_TOPIC, read_command
    from ros_nodes.common import command_qos, diagnostic_status, run_node, sensor_qos

    argv = list(sys.argv if argv is None else argv)

    def make_node():
        node = Node("quad_sim_node")
        p = node.declare_parameter
        core = QuadSimCore(robot=p("robot", "crazyflie2x").value, seed=int(p("seed", 0).value),
                           dr=bool(p("dr", False).value),
                           start_pos=[float(v) for v in p("start_pos", [0.0, 0.0, 1.0]).value],
                           wait_for_command=bool(p("wait_for_command", True).value),
                           plant=p("plant", "mujoco").value)
        rate = float(p("publish_rate_hz", 100.0).value)
        steady = Clock(clock_type=ClockType.STEADY_TIME)
        now = lambda: steady.now().nanoseconds * 1e-9        # noqa: E731
        pub_odom = node.create_publisher(Odometry, ODOM_TOPIC, sensor_qos())
        pub_imu = node.create_publisher(Imu, IMU_TOPIC, sensor_qos())
        pub_diag = node.create_publisher(DiagnosticArray, "/diagnostics", 10)
        rejected = {"n": 0}

        def on_cmd(msg):
            try:
                core.on_command(read_command(msg.data), now())
            except ValueError as exc:
                rejected["n"] += 1
                node.get_logger().warn(f"command refused: {exc}")

        def on_tick():
            info = core.step(now())
            if info is not None and info["crash"][0]:
                node.get_logger().error(f"crash #{core.crashes}: reset to {core.start_pos.tolist()}")
            st = core.state()
            stamp = node.get_clock().now().to_msg()
            pub_odom.publish(odometry_msg(st, stamp))
            pub_imu.publish(imu_msg(st, stamp))

        def on_diag():
            arr = DiagnosticArray()
            arr.header.stamp = node.get_clock().now().to_msg()
            level = "error" if core.crashes else ("ok" if core.status == FLYING else "warn")
            arr.status = [diagnostic_status("quad_sim_node: plant", level, core.status,
                                            {"state": core.status, "commands": core.commands, "crashes": core.crashes,
                                             "steps": core.steps, "rejected_commands": rejected["n"],
                                             "true_z_m": float(core.env.sim.pos[0, 2])}, hardware_id="sim")]
            pub_diag.publish(arr)

        node.create_subscription(Float64MultiArray, CMD_TOPIC, on_cmd, command_qos())
        node.create_timer(1.0 / rate, on_tick, clock=steady)
        node.create_timer(0.5, on_diag, clock=steady)
        node.get_logger().info(f"quad sim: {core.env.plant} plant, DR {'on' if core.env.randomizer else 'off'}, "
                               f"start {core.start_pos.tolist()}, {rate:g} Hz, commands on {CMD_TOPIC}")
        node.executor_kind = "events"
        return node

    return run_node("quad_sim_node", make_node, argv)


if __name__ == "__main__":
    sys.exit(main())
