"""Crazyswarm2 adapter: the onboard quadrotor command path -> a Crazyflie's ``cmd_vel_legacy`` in rate mode.

Mapping (plain functions, unit-tested without ROS or crazyflie_interfaces):
- Crazyswarm2 forwards ``/<cf>/cmd_vel_legacy`` (geometry_msgs/Twist) to the
  firmware's RPYT commander: ``linear.y`` roll, ``linear.x`` pitch,
  ``angular.z`` yaw rate [deg/s], ``linear.z`` thrust [0, 65535] (PWM units).
- With the firmware parameters ``flightmode.stabModeRoll = 0`` and
  ``flightmode.stabModePitch = 0`` (rate mode; the adapter sets them through
  Crazyswarm2's parameter interface) roll and pitch are rates [deg/s] too.
- Signs (crazyflie-firmware): the RPYT commander inverts the legacy yaw-rate
  input, and the PID rate controller runs pitch on ``-gyro.y``; so from body
  FLU rates ``roll = +deg(wx)``, ``pitch = -deg(wy)``, ``yaw = -deg(wz)``.
  (Checked against the firmware sources, not on hardware: verify on a tethered
  airframe before flying.)
- Thrust: per-rotor ``rpm = sqrt(T / 4 / kf)``, then the profile's
  ``pwm_to_rpm`` line inverted, clipped to [0, 65535].
- Failsafe on command loss (``CommandLossFailsafe``): no policy command for
  0.2 s -> hover thrust with zero rates (the firmware levels itself out after
  its own 0.5-1 s setpoint timeout), for 1.0 s -> ``notify_setpoints_stop``
  + the ``land`` service (latched). The firmware's setpoint stream is kept
  alive at ``stream_hz`` (>= 10 Hz) in every state.

The node (``main``) activates only when ``crazyflie_interfaces`` can be
imported; here it cannot, so it logs why and exits 2.
"""
from __future__ import annotations

import math
import sys

import numpy as np

from ros_nodes.adapters.quad_common import HOLD, LAND, OK, CommandLossFailsafe

PWM_MAX = 65535
ROLL_SIGN, PITCH_SIGN, YAW_SIGN = 1.0, -1.0, -1.0


def thrust_to_pwm(thrust_n: float, kf: float, slope: float, offset: float) -> int:
    """Collective thrust [N] -> legacy thrust command (PWM units) through rpm = slope * pwm + offset."""
    if not math.isfinite(thrust_n) or thrust_n <= 0:
        return 0
    rpm = math.sqrt(thrust_n / 4.0 / kf)
    return int(np.clip(round((rpm - offset) / slope), 0, PWM_MAX))


def pwm_to_thrust(pwm: float, kf: float, slope: float, offset: float) -> float:
    if pwm <= 0:
        return 0.0
    rpm = slope * float(pwm) + offset
    return 4.0 * kf * rpm * rpm


def profile_thrust_map(profile) -> dict:
    raw = profile.raw
    p = raw["pwm_to_rpm"]
    return {"kf": float(raw["thrust_coefficient_kf_N_per_rpm2"]), "slope": float(p["slope"]),
            "offset": float(p["offset"])}


def cmd_vel_legacy_fields(cmd, thrust_map: dict) -> dict:
    """Onboard command [thrust_n, wx, wy, wz] (FLU, rad/s) -> Twist fields of cmd_vel_legacy."""
    cmd = np.asarray(cmd, dtype=float)
    return {"linear": {"x": PITCH_SIGN * math.degrees(cmd[2]), "y": ROLL_SIGN * math.degrees(cmd[1]),
                       "z": float(thrust_to_pwm(cmd[0], **thrust_map))},
            "angular": {"x": 0.0, "y": 0.0, "z": YAW_SIGN * math.degrees(cmd[3])}}


RATE_MODE_PARAMS = {"flightmode.stabModeRoll": 0, "flightmode.stabModePitch": 0}


class CrazyflieRateLogic:
    """Policy commands in, (kind, fields) out: ``cmd_vel_legacy`` each tick, ``land`` once on command loss."""

    def __init__(self, thrust_map: dict, hover_thrust_n: float, hold_after_s: float = 0.2, land_after_s: float = 1.0):
        self.thrust_map = thrust_map
        self.hover_cmd = np.array([hover_thrust_n, 0.0, 0.0, 0.0])
        self.failsafe = CommandLossFailsafe(hold_after_s, land_after_s)
        self.cmd: np.ndarray | None = None
        self.land_sent = False

    def on_command(self, cmd, t: float) -> None:
        self.cmd = np.asarray(cmd, dtype=float)
        self.failsafe.on_command(t)

    def tick(self, t: float) -> list[tuple[str, dict]]:
        state = self.failsafe.state(t)
        if state == OK:
            return [("cmd_vel_legacy", cmd_vel_legacy_fields(self.cmd, self.thrust_map))]
        if state == HOLD and self.cmd is not None:
            return [("cmd_vel_legacy", cmd_vel_legacy_fields(self.hover_cmd, self.thrust_map))]
        if state == LAND and not self.land_sent:
            self.land_sent = True
            return [("notify_setpoints_stop", {}), ("land", {"height": 0.0, "duration_s": 2.0})]
        return []


def main(argv=None) -> int:
    try:
        import crazyflie_interfaces.srv  # noqa: F401
    except ImportError:
        print("crazyswarm2_adapter: crazyflie_interfaces is not importable: build Crazyswarm2 "
              "(github.com/IMRCLab/crazyswarm2) in a ROS 2 workspace and source it; the adapter stays off "
              "without it.", file=sys.stderr)
        return 2
    return _run_node(argv)


def _run_node(argv) -> int:   # pragma: no cover - needs crazyflie_interfaces (not installable here)
    import rclpy
    from builtin_interfaces.msg import Duration
    from crazyflie_interfaces.srv import Land, NotifySetpointsStop
    from geometry_msgs.msg import Twist
    from rclpy.node import Node
    from std_msgs.msg import Float64MultiArray

    from onboard.spec import load_robot
    from ros_nodes.adapters.quad_common import CMD_TOPIC, read_command
    from ros_nodes.common import command_qos, make_executor, spin_until_shutdown

    rclpy.init(args=argv)
    node = Node("crazyswarm2_adapter")
    cf = node.declare_parameter("cf_name", "cf231").value
    prof = load_robot(node.declare_parameter("robot", "crazyflie2x").value)
    logic = CrazyflieRateLogic(profile_thrust_map(prof), float(prof.raw["mass_kg"]) * 9.81)
    pub = node.create_publisher(Twist, f"/{cf}/cmd_vel_legacy", command_qos())
    land = node.create_client(Land, f"/{cf}/land")
    stop = node.create_client(NotifySetpointsStop, f"/{cf}/notify_setpoints_stop")
    now = lambda: node.get_clock().now().nanoseconds * 1e-9     # noqa: E731
    node.get_logger().info(f"set {RATE_MODE_PARAMS} on /{cf} (rate mode) before enabling the policy")

    def on_cmd(msg):
        try:
            logic.on_command(read_command(msg.data), now())
        except ValueError as exc:
            node.get_logger().warn(str(exc))

    def on_tick():
        for kind, f in logic.tick(now()):
            if kind == "cmd_vel_legacy":
                m = Twist()
                m.linear.x, m.linear.y, m.linear.z = f["linear"]["x"], f["linear"]["y"], f["linear"]["z"]
                m.angular.z = f["angular"]["z"]
                pub.publish(m)
            elif kind == "notify_setpoints_stop":
                stop.call_async(NotifySetpointsStop.Request())
            elif kind == "land":
                land.call_async(Land.Request(height=f["height"], duration=Duration(sec=int(f["duration_s"]))))

    node.create_subscription(Float64MultiArray, CMD_TOPIC, on_cmd, command_qos())
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
