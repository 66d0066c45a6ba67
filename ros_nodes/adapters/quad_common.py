"""What every quadrotor command path shares: the standard command message, command-loss failsafe, heartbeat.

The standard-message path (sim and tests; vendor adapters translate it):
``/quad/cmd`` std_msgs/Float64MultiArray ``[thrust_n, wx, wy, wz]`` =
collective thrust [N] and body rates [rad/s] in the body FLU frame
(x forward, y left, z up), one message per control period; the layout
labels each value (``collective_thrust_n``, ``roll_rate_rad_s``, ...).
The state comes back as nav_msgs/Odometry (``/quad/odom``: pose in the world
ENU frame ``world``, twist in the body frame ``base_link`` as REP 105 says)
and sensor_msgs/Imu (``/quad/imu``: gyro in FLU, specific force).

Plain logic only (no rclpy at import): ``CommandLossFailsafe`` and
``Heartbeat`` are clocks-in, decisions-out, so tests drive them directly.
"""
from __future__ import annotations

import math

import numpy as np

CMD_TOPIC = "/quad/cmd"
ODOM_TOPIC = "/quad/odom"
IMU_TOPIC = "/quad/imu"
CMD_LABELS = ("collective_thrust_n", "roll_rate_rad_s", "pitch_rate_rad_s", "yaw_rate_rad_s")
OK, HOLD, LAND = "ok", "hold", "land"


class CommandLossFailsafe:
    """Fresh commands -> ``ok``; none for ``hold_after_s`` -> ``hold`` (hover in place); none for
    ``land_after_s`` -> ``land`` (latched until ``rearm``). Before the first command: ``hold``."""

    def __init__(self, hold_after_s: float = 0.2, land_after_s: float = 1.0):
        if not 0 < hold_after_s <= land_after_s:
            raise ValueError("need 0 < hold_after_s <= land_after_s")
        self.hold_after_s, self.land_after_s = float(hold_after_s), float(land_after_s)
        self.last_cmd_t: float | None = None
        self.latched_land = False
        self.transitions: list[tuple[float, str]] = []
        self._state = HOLD

    def on_command(self, t: float) -> None:
        self.last_cmd_t = float(t)

    def rearm(self) -> None:
        self.latched_land = False

    def state(self, t: float) -> str:
        if self.latched_land:
            new = LAND
        elif self.last_cmd_t is None:
            new = HOLD
        else:
            age = t - self.last_cmd_t
            new = OK if age <= self.hold_after_s else HOLD if age <= self.land_after_s else LAND
        if new == LAND:
            self.latched_land = True
        if new != self._state:
            self.transitions.append((float(t), new))
            self._state = new
        return new


class Heartbeat:
    """Due every ``1 / rate_hz`` seconds (PX4 leaves offboard below 2 Hz of OffboardControlMode)."""

    def __init__(self, rate_hz: float = 10.0, min_rate_hz: float = 2.0):
        if rate_hz <= min_rate_hz:
            raise ValueError(f"heartbeat {rate_hz} Hz must be above {min_rate_hz} Hz")
        self.period_s = 1.0 / float(rate_hz)
        self.last_t: float | None = None

    def due(self, t: float) -> bool:
        if self.last_t is None or t - self.last_t >= self.period_s - 1e-9:
            self.last_t = float(t)
            return True
        return False


def command_array(cmd) -> "object":
    """[thrust_n, wx, wy, wz] -> std_msgs/Float64MultiArray with labeled layout."""
    from std_msgs.msg import Float64MultiArray, MultiArrayDimension
    msg = Float64MultiArray()
    msg.layout.dim.append(MultiArrayDimension(label=",".join(CMD_LABELS), size=4, stride=4))
    msg.data = [float(v) for v in np.asarray(cmd, dtype=float).ravel()[:4]]
    return msg


def read_command(data) -> np.ndarray:
    """Float64MultiArray data -> (4,) command; ValueError for a wrong length or non-finite values."""
    cmd = np.asarray(data, dtype=float).ravel()
    if cmd.shape != (4,):
        raise ValueError(f"/quad/cmd needs 4 values [thrust_n, wx, wy, wz], got {cmd.size}")
    if not np.all(np.isfinite(cmd)):
        raise ValueError("/quad/cmd has non-finite values")
    return cmd


def quat_wxyz_to_rot(q) -> np.ndarray:
    w, x, y, z = (float(v) for v in q)
    n = math.sqrt(w * w + x * x + y * y + z * z) or 1.0
    w, x, y, z = w / n, x / n, y / n, z / n
    return np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
                     [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
                     [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)]])


def rot_to_quat_wxyz(r: np.ndarray) -> np.ndarray:
    """Rotation matrix -> unit quaternion (w, x, y, z), w >= 0 (Shepperd's method)."""
    r = np.asarray(r, dtype=float)
    tr = np.trace(r)
    if tr > 0:
        s = 2 * math.sqrt(1 + tr)
        q = [0.25 * s, (r[2, 1] - r[1, 2]) / s, (r[0, 2] - r[2, 0]) / s, (r[1, 0] - r[0, 1]) / s]
    elif r[0, 0] > r[1, 1] and r[0, 0] > r[2, 2]:
        s = 2 * math.sqrt(1 + r[0, 0] - r[1, 1] - r[2, 2])
        q = [(r[2, 1] - r[1, 2]) / s, 0.25 * s, (r[0, 1] + r[1, 0]) / s, (r[0, 2] + r[2, 0]) / s]
    elif r[1, 1] > r[2, 2]:
        s = 2 * math.sqrt(1 + r[1, 1] - r[0, 0] - r[2, 2])
        q = [(r[0, 2] - r[2, 0]) / s, (r[0, 1] + r[1, 0]) / s, 0.25 * s, (r[1, 2] + r[2, 1]) / s]
    else:
        s = 2 * math.sqrt(1 + r[2, 2] - r[0, 0] - r[1, 1])
        q = [(r[1, 0] - r[0, 1]) / s, (r[0, 2] + r[2, 0]) / s, (r[1, 2] + r[2, 1]) / s, 0.25 * s]
    q = np.asarray(q)
    return q if q[0] >= 0 else -q
