"""PX4 offboard adapter: the onboard quadrotor command path -> px4_msgs, and PX4 odometry -> ENU/FLU.

Mapping (plain functions, unit-tested without ROS or px4_msgs):
- frames: onboard uses world ENU + body FLU; PX4 uses world NED + body FRD.
  ``ENU_TO_NED`` swaps x/y and negates z; ``FLU_TO_FRD`` negates y and z.
  Attitude: ``R_ned_frd = ENU_TO_NED @ R_enu_flu @ FLU_TO_FRD``; yaw:
  ``yaw_ned = pi/2 - yaw_enu``.
- ``VehicleRatesSetpoint``: ``roll, pitch, yaw`` = FRD body rates [rad/s]
  (``p, -q, -r`` of the FLU rates) and ``thrust_body = [0, 0, -T / T_max]``
  (normalized, negative z = up in FRD).
- ``TrajectorySetpoint`` (the hold on command loss): NED position, velocity
  NaN for "not controlled", yaw NED.
- ``OffboardControlMode``: ``body_rate`` while the policy commands, ``position``
  while holding; published by ``Px4OffboardLogic`` at ``heartbeat_hz`` (10 Hz
  default, PX4 needs > 2 Hz to stay in offboard).
- failsafe on command loss (``CommandLossFailsafe``): no policy command for
  0.2 s -> hold position (TrajectorySetpoint at the last odometry position),
  for 1.0 s -> ``VehicleCommand`` NAV_LAND (latched).

The node (``main``) activates only when ``px4_msgs`` can be imported; here it
cannot (px4_msgs is not on PyPI), so it logs why and exits 2.
"""
from __future__ import annotations

import math
import sys

import numpy as np

from ros_nodes.adapters.quad_common import (HOLD, LAND, OK, CommandLossFailsafe, Heartbeat, quat_wxyz_to_rot,
                                            rot_to_quat_wxyz)

ENU_TO_NED = np.array([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, -1.0]])
FLU_TO_FRD = np.diag([1.0, -1.0, -1.0])
VEHICLE_CMD_NAV_LAND = 21
VEHICLE_CMD_DO_SET_MODE = 176
VEHICLE_CMD_COMPONENT_ARM_DISARM = 400


def enu_to_ned(v) -> np.ndarray:
    return np.asarray(v, dtype=float) @ ENU_TO_NED.T


def ned_to_enu(v) -> np.ndarray:
    return np.asarray(v, dtype=float) @ ENU_TO_NED.T      # the swap is its own inverse


def flu_to_frd(v) -> np.ndarray:
    return np.asarray(v, dtype=float) @ FLU_TO_FRD.T


def frd_to_flu(v) -> np.ndarray:
    return np.asarray(v, dtype=float) @ FLU_TO_FRD.T


def rot_enu_flu_to_ned_frd(r_enu_flu) -> np.ndarray:
    return ENU_TO_NED @ np.asarray(r_enu_flu, dtype=float) @ FLU_TO_FRD


def rot_ned_frd_to_enu_flu(r_ned_frd) -> np.ndarray:
    return ENU_TO_NED @ np.asarray(r_ned_frd, dtype=float) @ FLU_TO_FRD


def quat_enu_flu_to_ned_frd(q_wxyz) -> np.ndarray:
    return rot_to_quat_wxyz(rot_enu_flu_to_ned_frd(quat_wxyz_to_rot(q_wxyz)))


def quat_ned_frd_to_enu_flu(q_wxyz) -> np.ndarray:
    return rot_to_quat_wxyz(rot_ned_frd_to_enu_flu(quat_wxyz_to_rot(q_wxyz)))


def yaw_enu_to_ned(yaw: float) -> float:
    return math.remainder(math.pi / 2 - float(yaw), 2 * math.pi)


def timestamp_us(t_s: float) -> int:
    return int(round(t_s * 1e6))


def rates_setpoint_fields(cmd, max_thrust_n: float, t_s: float) -> dict:
    """Onboard command [thrust_n, wx, wy, wz] (FLU) -> VehicleRatesSetpoint fields."""
    cmd = np.asarray(cmd, dtype=float)
    rates_frd = flu_to_frd(cmd[1:4])
    thrust = float(np.clip(cmd[0] / max_thrust_n, 0.0, 1.0))
    return {"timestamp": timestamp_us(t_s), "roll": float(rates_frd[0]), "pitch": float(rates_frd[1]),
            "yaw": float(rates_frd[2]), "thrust_body": [0.0, 0.0, -thrust], "reset_integral": False}


def trajectory_setpoint_fields(pos_enu, yaw_enu: float, t_s: float) -> dict:
    """Hold at an ENU position -> TrajectorySetpoint fields (NED; NaN = not controlled)."""
    nan = float("nan")
    return {"timestamp": timestamp_us(t_s), "position": enu_to_ned(pos_enu).tolist(),
            "velocity": [nan, nan, nan], "acceleration": [nan, nan, nan], "jerk": [nan, nan, nan],
            "yaw": yaw_enu_to_ned(yaw_enu), "yawspeed": nan}


def offboard_control_mode_fields(mode: str, t_s: float) -> dict:
    if mode not in ("body_rate", "position"):
        raise ValueError(f"offboard mode {mode!r}: use body_rate or position")
    return {"timestamp": timestamp_us(t_s), "position": mode == "position", "velocity": False,
            "acceleration": False, "attitude": False, "body_rate": mode == "body_rate",
            "thrust_and_torque": False, "direct_actuator": False}


def vehicle_command_fields(command: int, t_s: float, param1: float = 0.0, param2: float = 0.0) -> dict:
    return {"timestamp": timestamp_us(t_s), "command": int(command), "param1": float(param1),
            "param2": float(param2), "target_system": 1, "target_component": 1, "source_system": 1,
            "source_component": 1, "from_external": True}


def odometry_to_enu_flu(position_ned, q_ned_frd_wxyz, velocity_ned, angular_velocity_frd) -> dict:
    """px4_msgs/VehicleOdometry (NED/FRD, pose frame NED, velocity frame NED) -> onboard ENU/FLU state."""
    q = quat_ned_frd_to_enu_flu(q_ned_frd_wxyz)
    return {"pos": ned_to_enu(position_ned), "quat_wxyz": q, "vel": ned_to_enu(velocity_ned),
            "omega_body": frd_to_flu(angular_velocity_frd)}


class Px4OffboardLogic:
    """Policy commands + odometry in, the px4_msgs to publish out (as (type name, fields) pairs)."""

    def __init__(self, max_thrust_n: float, heartbeat_hz: float = 10.0, hold_after_s: float = 0.2,
                 land_after_s: float = 1.0):
        self.max_thrust_n = float(max_thrust_n)
        self.heartbeat = Heartbeat(heartbeat_hz)
        self.failsafe = CommandLossFailsafe(hold_after_s, land_after_s)
        self.cmd: np.ndarray | None = None
        self.hold_pos_enu: np.ndarray | None = None
        self.hold_yaw_enu = 0.0
        self.last_pos_enu = np.zeros(3)
        self.last_yaw_enu = 0.0
        self.land_sent = False

    def on_command(self, cmd, t: float) -> None:
        self.cmd = np.asarray(cmd, dtype=float)
        self.failsafe.on_command(t)

    def on_odometry(self, pos_enu, yaw_enu: float) -> None:
        self.last_pos_enu = np.asarray(pos_enu, dtype=float)
        self.last_yaw_enu = float(yaw_enu)

    def tick(self, t: float) -> list[tuple[str, dict]]:
        out = []
        state = self.failsafe.state(t)
        mode = "body_rate" if state == OK else "position"
        if self.heartbeat.due(t):
            out.append(("OffboardControlMode", offboard_control_mode_fields(mode, t)))
        if state == OK:
            self.hold_pos_enu = None
            out.append(("VehicleRatesSetpoint", rates_setpoint_fields(self.cmd, self.max_thrust_n, t)))
        elif state == HOLD:
            if self.hold_pos_enu is None:
                self.hold_pos_enu, self.hold_yaw_enu = self.last_pos_enu.copy(), self.last_yaw_enu
            out.append(("TrajectorySetpoint", trajectory_setpoint_fields(self.hold_pos_enu, self.hold_yaw_enu, t)))
        elif state == LAND and not self.land_sent:
            self.land_sent = True
            out.append(("VehicleCommand", vehicle_command_fields(VEHICLE_CMD_NAV_LAND, t)))
        return out


def main(argv=None) -> int:
    try:
        import px4_msgs.msg  # noqa: F401
    except ImportError:
        print("px4_adapter: px4_msgs is not importable: build px4_msgs (github.com/PX4/px4_msgs, matching your "
              "PX4 release) in a ROS 2 workspace and source it; the adapter stays off without it.", file=sys.stderr)
        return 2
    return _run_node(argv)


def _run_node(argv) -> int:   # pragma: no cover - needs px4_msgs (not installable here)
    import rclpy
    from nav_msgs.msg import Odometry
    from px4_msgs.msg import (OffboardControlMode, TrajectorySetpoint, VehicleCommand, VehicleOdometry,
                              VehicleRatesSetpoint)
    from rclpy.node import Node
    from rclpy.qos import qos_profile_sensor_data
    from std_msgs.msg import Float64MultiArray

    from onboard.spec import load_robot
    from ros_nodes.adapters.quad_common import CMD_TOPIC, ODOM_TOPIC, read_command
    from ros_nodes.common import command_qos, make_executor, spin_until_shutdown

    types = {"OffboardControlMode": OffboardControlMode, "TrajectorySetpoint": TrajectorySetpoint,
             "VehicleCommand": VehicleCommand, "VehicleRatesSetpoint": VehicleRatesSetpoint}
    topics = {"OffboardControlMode": "/fmu/in/offboard_control_mode", "TrajectorySetpoint": "/fmu/in/trajectory_setpoint",
              "VehicleCommand": "/fmu/in/vehicle_command", "VehicleRatesSetpoint": "/fmu/in/vehicle_rates_setpoint"}
    rclpy.init(args=argv)
    node = Node("px4_adapter")
    prof = load_robot(node.declare_parameter("robot", "crazyflie2x").value)
    logic = Px4OffboardLogic(float(prof.raw["thrust_to_weight"]) * float(prof.raw["mass_kg"]) * 9.81,
                             float(node.declare_parameter("heartbeat_hz", 10.0).value))
    pubs = {k: node.create_publisher(v, topics[k], command_qos()) for k, v in types.items()}
    odom_pub = node.create_publisher(Odometry, ODOM_TOPIC, 5)
    now = lambda: node.get_clock().now().nanoseconds * 1e-9          # noqa: E731

    def on_cmd(msg):
        try:
            logic.on_command(read_command(msg.data), now())
        except ValueError as exc:
            node.get_logger().warn(str(exc))

    def on_odom(m):
        s = odometry_to_enu_flu(m.position, m.q, m.velocity, m.angular_velocity)
        r = quat_wxyz_to_rot(s["quat_wxyz"])
        logic.on_odometry(s["pos"], math.atan2(r[1, 0], r[0, 0]))
        o = Odometry()
        o.header.stamp = node.get_clock().now().to_msg()
        o.header.frame_id, o.child_frame_id = "world", "base_link"
        o.pose.pose.position.x, o.pose.pose.position.y, o.pose.pose.position.z = map(float, s["pos"])
        w, x, y, z = map(float, s["quat_wxyz"])
        o.pose.pose.orientation.w, o.pose.pose.orientation.x, o.pose.pose.orientation.y, o.pose.pose.orientation.z = w, x, y, z
        vb = r.T @ s["vel"]
        o.twist.twist.linear.x, o.twist.twist.linear.y, o.twist.twist.linear.z = map(float, vb)
        o.twist.twist.angular.x, o.twist.twist.angular.y, o.twist.twist.angular.z = map(float, s["omega_body"])
        odom_pub.publish(o)

    def on_tick():
        for kind, fields in logic.tick(now()):
            msg = types[kind]()
            for k, v in fields.items():
                setattr(msg, k, v)
            pubs[kind].publish(msg)

    node.create_subscription(Float64MultiArray, CMD_TOPIC, on_cmd, command_qos())
    node.create_subscription(VehicleOdometry, "/fmu/out/vehicle_odometry", on_odom, qos_profile_sensor_data)
    node.create_timer(0.01, on_tick)
    ex = make_executor("events")
    ex.add_node(node)
    try:
        spin_until_shutdown(ex, node)
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
