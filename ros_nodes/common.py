"""What every onboard node shares: QoS profiles, message conversion, the state gate.

Owns:
- QoS profiles (DESIGN §4): sensor data best-effort depth 5, commands reliable
  depth 1, camera_info / latched status transient-local.
- Conversions between ROS messages and numpy as plain functions
  (``joint_state_arrays``, ``labeled_array``, ``read_labeled_array``,
  ``image_to_array`` ...), so tests call them without a ROS graph.
- ``StateGate``: the checks every incoming /joint_states passes before the
  policy may use it (missing joint, NaN, out-of-order stamps, excess rate).
- ``diagnostic_status``: one DiagnosticStatus from a dict of values.

Imports rclpy message types and numpy; never torch, never sim.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from rclpy.qos import (DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy)

TASK_STATE_TOPIC = "/task_state"
FASTDDS_PROFILE = "config/fastdds/large_shm.xml"


# ---- QoS --------------------------------------------------------------------------

def sensor_qos(depth: int = 5) -> QoSProfile:
    """Sensor streams (/joint_states, images): best-effort, keep last ``depth``."""
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=depth,
                      reliability=ReliabilityPolicy.BEST_EFFORT, durability=DurabilityPolicy.VOLATILE)


def command_qos() -> QoSProfile:
    """Commands to controllers: reliable, keep last 1 (an old command is never worth replaying)."""
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1,
                      reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.VOLATILE)


def latched_qos() -> QoSProfile:
    """Slow state a late joiner needs (camera_info, task success): reliable, transient-local."""
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1,
                      reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)


# ---- time -------------------------------------------------------------------------

def stamp_to_s(stamp) -> float:
    return float(stamp.sec) + 1e-9 * float(stamp.nanosec)


def s_to_stamp(t_s: float, stamp=None):
    from builtin_interfaces.msg import Time
    stamp = stamp or Time()
    sec = math.floor(t_s)
    stamp.sec = int(sec)
    stamp.nanosec = min(int(round((t_s - sec) * 1e9)), 999_999_999)
    return stamp


def s_to_duration(t_s: float):
    from builtin_interfaces.msg import Duration
    sec = math.floor(t_s)
    return Duration(sec=int(sec), nanosec=min(int(round((t_s - sec) * 1e9)), 999_999_999))


def duration_to_s(d) -> float:
    return float(d.sec) + 1e-9 * float(d.nanosec)


# ---- joint states -----------------------------------------------------------------

class StateError(ValueError):
    """A /joint_states message the policy must not use; ``reason`` is a short diagnostic key."""

    def __init__(self, reason: str, detail: str):
        self.reason = reason
        super().__init__(f"{reason}: {detail}")


def joint_state_arrays(names, position, velocity, wanted: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Pick ``wanted`` joints by name from a JointState's fields; (q, dq) in ``wanted`` order.

    Raises StateError('missing_joint' | 'malformed' | 'nan') rather than guessing.
    A missing velocity array (allowed by the message definition) reads as zeros.
    """
    names = list(names)
    position = np.asarray(position, dtype=float)
    velocity = np.asarray(velocity, dtype=float)
    if len(position) != len(names):
        raise StateError("malformed", f"{len(names)} names but {len(position)} positions")
    if len(velocity) not in (0, len(names)):
        raise StateError("malformed", f"{len(names)} names but {len(velocity)} velocities")
    index = {n: i for i, n in enumerate(names)}
    missing = [w for w in wanted if w not in index]
    if missing:
        raise StateError("missing_joint", f"joints {missing} absent from /joint_states")
    idx = [index[w] for w in wanted]
    q = position[idx]
    dq = velocity[idx] if len(velocity) else np.zeros(len(idx))
    if not (np.all(np.isfinite(q)) and np.all(np.isfinite(dq))):
        bad = [wanted[i] for i in np.flatnonzero(~(np.isfinite(q) & np.isfinite(dq)))]
        raise StateError("nan", f"non-finite position/velocity for {bad}")
    return q, dq


@dataclass
class StateGate:
    """Accepts or rejects each /joint_states message, and keeps counts for diagnostics.

    Rejected: a missing joint, NaN/inf, malformed arrays, a stamp older than or
    equal to the last accepted one (out-of-order / replay). Messages arriving
    faster than ``max_rate_factor`` x the expected rate are still accepted
    (only the newest matters to a controller), but the excess is reported.
    """
    joint_names: tuple[str, ...]
    expected_rate_hz: float
    max_rate_factor: float = 3.0
    last_stamp_s: float | None = None
    last_receive_s: float | None = None
    q: np.ndarray | None = None
    dq: np.ndarray | None = None
    extra: dict = field(default_factory=dict)       # other named joints (e.g. fingers) -> position
    rejected: dict = field(default_factory=dict)
    accepted: int = 0
    last_error: str = ""
    _arrivals: list = field(default_factory=list)

    def offer(self, names, position, velocity, stamp_s: float, receive_s: float) -> bool:
        self._arrivals.append(receive_s)
        cutoff = receive_s - 1.0
        while self._arrivals and self._arrivals[0] < cutoff:
            self._arrivals.pop(0)
        try:
            q, dq = joint_state_arrays(names, position, velocity, self.joint_names)
            if self.last_stamp_s is not None and stamp_s <= self.last_stamp_s:
                raise StateError("out_of_order", f"stamp {stamp_s:.6f} s is not after the last "
                                                 f"accepted {self.last_stamp_s:.6f} s")
        except StateError as exc:
            self.rejected[exc.reason] = self.rejected.get(exc.reason, 0) + 1
            self.last_error = str(exc)
            return False
        self.q, self.dq = q, dq
        self.extra = {n: float(p) for n, p in zip(names, position) if n not in self.joint_names}
        self.last_stamp_s, self.last_receive_s = stamp_s, receive_s
        self.accepted += 1
        return True

    @property
    def rate_hz(self) -> float:
        """Arrival rate over the last second (all messages, accepted or not)."""
        return float(len(self._arrivals))

    @property
    def rate_excess(self) -> bool:
        return self.expected_rate_hz > 0 and self.rate_hz > self.max_rate_factor * self.expected_rate_hz

    def age_s(self, now_s: float) -> float:
        return math.inf if self.last_receive_s is None else now_s - self.last_receive_s


# ---- labeled arrays (/task_state) -------------------------------------------------

def labeled_array(values: dict[str, np.ndarray]):
    """A Float64MultiArray whose layout names each block: dim[i].label = key, size = length.

    Used for /task_state: ``{"object_pos": (3,), "target_pos": (3,)}`` -> one flat
    array with one dimension entry per key (stride = offset into data).
    """
    from std_msgs.msg import Float64MultiArray, MultiArrayDimension
    msg = Float64MultiArray()
    offset, data = 0, []
    for key, v in values.items():
        flat = np.asarray(v, dtype=float).ravel()
        msg.layout.dim.append(MultiArrayDimension(label=key, size=len(flat), stride=offset))
        data.extend(flat.tolist())
        offset += len(flat)
    msg.data = data
    return msg


def read_labeled_array(msg) -> dict[str, np.ndarray]:
    """Inverse of ``labeled_array``; a layout that does not cover ``data`` raises StateError."""
    data = np.asarray(msg.data, dtype=float)
    out = {}
    for d in msg.layout.dim:
        start, stop = int(d.stride), int(d.stride) + int(d.size)
        if stop > len(data):
            raise StateError("malformed", f"task_state block {d.label!r} [{start}:{stop}] past {len(data)} values")
        out[d.label] = data[start:stop].copy()
    return out


# ---- images -----------------------------------------------------------------------

def array_to_image(img: np.ndarray, stamp_s: float, frame_id: str = "camera"):
    from sensor_msgs.msg import Image
    img = np.ascontiguousarray(img, dtype=np.uint8)
    msg = Image()
    s_to_stamp(stamp_s, msg.header.stamp)
    msg.header.frame_id = frame_id
    msg.height, msg.width = int(img.shape[0]), int(img.shape[1])
    msg.encoding = "rgb8"
    msg.step = int(img.shape[1] * 3)
    msg.data = img.tobytes()
    return msg


def image_to_array(msg) -> np.ndarray:
    """rgb8/bgr8 Image -> (H, W, 3) uint8 RGB."""
    if msg.encoding not in ("rgb8", "bgr8"):
        raise StateError("malformed", f"image encoding {msg.encoding!r}; expected rgb8 or bgr8")
    buf = np.frombuffer(bytes(msg.data) if not isinstance(msg.data, (bytes, bytearray, memoryview))
                        else msg.data, dtype=np.uint8)
    if len(buf) != msg.height * msg.step or msg.step < msg.width * 3:
        raise StateError("malformed", f"image data {len(buf)} bytes does not match {msg.height}x{msg.step}")
    img = buf.reshape(msg.height, msg.step)[:, : msg.width * 3].reshape(msg.height, msg.width, 3)
    return img[..., ::-1].copy() if msg.encoding == "bgr8" else img.copy()


def camera_info(width: int, height: int, fovy_deg: float, stamp_s: float, frame_id: str = "camera"):
    """A pinhole CameraInfo for a MuJoCo camera of vertical field of view ``fovy_deg``."""
    from sensor_msgs.msg import CameraInfo
    f = 0.5 * height / math.tan(math.radians(fovy_deg) / 2)
    cx, cy = (width - 1) / 2, (height - 1) / 2
    msg = CameraInfo()
    s_to_stamp(stamp_s, msg.header.stamp)
    msg.header.frame_id = frame_id
    msg.width, msg.height = width, height
    msg.distortion_model = "plumb_bob"
    msg.d = [0.0] * 5
    msg.k = [f, 0.0, cx, 0.0, f, cy, 0.0, 0.0, 1.0]
    msg.r = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]
    msg.p = [f, 0.0, cx, 0.0, 0.0, f, cy, 0.0, 0.0, 0.0, 1.0, 0.0]
    return msg


# ---- diagnostics ------------------------------------------------------------------

def diagnostic_status(name: str, level: str, message: str, values: dict, hardware_id: str = ""):
    """level in {'ok', 'warn', 'error', 'stale'}."""
    from diagnostic_msgs.msg import DiagnosticStatus, KeyValue
    levels = {"ok": DiagnosticStatus.OK, "warn": DiagnosticStatus.WARN,
              "error": DiagnosticStatus.ERROR, "stale": DiagnosticStatus.STALE}
    st = DiagnosticStatus(level=levels[level], name=name, message=message, hardware_id=hardware_id)
    st.values = [KeyValue(key=str(k), value=_fmt(v)) for k, v in values.items()]
    return st


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.6g}"
    return str(v)


def read_diagnostic(status) -> dict:
    """A DiagnosticStatus back to {'level', 'message', **values} (for tests and tools)."""
    out = {"level": int.from_bytes(status.level, "little") if isinstance(status.level, bytes) else int(status.level),
           "message": status.message, "name": status.name}
    out.update({kv.key: kv.value for kv in status.values})
    return out


# ---- executors --------------------------------------------------------------------

EXECUTORS = ("events", "single")


def make_executor(kind: str = "events"):
    """EventsExecutor or SingleThreadedExecutor. Never MultiThreadedExecutor (DESIGN §4)."""
    if kind == "events":
        from rclpy.experimental import EventsExecutor
        return EventsExecutor()
    if kind == "single":
        from rclpy.executors import SingleThreadedExecutor
        return SingleThreadedExecutor()
    raise ValueError(f"executor {kind!r}: use one of {EXECUTORS}")


def spin_until_shutdown(executor, node=None) -> None:
    """Spin in short slices until the context shuts down (SIGINT) or ``node.stop_requested``.

    ``spin_once`` slices instead of ``spin()``: EventsExecutor.spin() in rclpy
    7.1 did not service timers on a STEADY_TIME clock here, spin_once does.
    """
    import rclpy
    from rclpy.executors import ExternalShutdownException
    try:
        while rclpy.ok() and not getattr(node, "stop_requested", False):
            executor.spin_once(timeout_sec=0.1)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass


def run_node(label: str, make_node, argv=None, on_close=None) -> int:
    """A node's ``main()``: init, build with ``make_node()``, spin on ``node.executor_kind``, shut down.

    A configuration error (``OnboardError``, or ``SystemExit`` raised by a node
    that refuses to start) prints ``<label>: error: ...`` and returns 2; Ctrl-C
    returns 0. ``on_close(node)`` runs before the node is destroyed (flush files,
    print a summary).
    """
    import sys

    import rclpy

    from onboard.errors import OnboardError
    rclpy.init(args=list(sys.argv if argv is None else argv))
    node = None
    try:
        node = make_node()
        ex = make_executor(getattr(node, "executor_kind", "events"))
        ex.add_node(node)
        spin_until_shutdown(ex, node)
    except (OnboardError, SystemExit) as exc:
        print(f"{label}: error: {exc.code if isinstance(exc, SystemExit) else exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        pass
    except Exception:
        if rclpy.ok():
            raise
        # SIGINT/SIGTERM shut the context down while a callback was publishing: a clean stop
    finally:
        if node is not None:
            if on_close is not None:
                on_close(node)
            node.destroy_node()
        rclpy.try_shutdown()
    return 0
