"""What the humanoid sim node and the humanoid policy node share: topics, the joint-command
message, IMU/JointState conversions and the observation history, as plain functions.

Topics (G1 legs, joint order = ``sim.g1_model.load_description().joint_names``):
- ``/g1/joint_states`` sensor_msgs/JointState: the 12 leg joints, position [rad],
  velocity [rad/s], effort [N m] (the applied motor torque).
- ``/g1/imu`` sensor_msgs/Imu in ``pelvis``: orientation (world -> pelvis),
  angular velocity (body frame, rad/s), linear acceleration (specific force,
  body frame, m/s^2: +9.81 on z when standing still).
- ``/g1/joint_cmd`` std_msgs/Float64MultiArray, 36 values
  ``[q_target(12) rad, kp(12) N m/rad, kd(12) N m s/rad]`` in joint order; the
  layout names the three blocks (labels ``q_target``, ``kp``, ``kd``) as
  ``ros_nodes.common.labeled_array`` writes them. A flat 36-value array with no
  layout is accepted too. What a unitree_hg ``LowCmd`` carries per motor
  (``ros_nodes.adapters.unitree_hg`` maps it on the robot).

The observation is the env's (``sim.humanoid_env.build_frame`` +
``history_layout``): ``ObservationHistory`` only feeds it measured quantities,
so training and deployment share one observation builder.
Imports numpy, sim (g1_model, humanoid_env) and ros_nodes.common; message types lazily.
"""
from __future__ import annotations

import numpy as np

from sim.g1_model import quat_rotate_inverse, rpy_from_quat
from sim.humanoid_env import ACTION_SCALE, FRAME_DIM, GAIT_PERIOD_S, OBS_SPEC, build_frame, history_layout

JOINT_STATE_TOPIC = "/g1/joint_states"
IMU_TOPIC = "/g1/imu"
JOINT_CMD_TOPIC = "/g1/joint_cmd"
N_JOINTS = 12


# ---- joint command ------------------------------------------------------------------------

def joint_cmd_array(q_target, kp, kd):
    """[q_target, kp, kd] (12 each) -> a labeled Float64MultiArray."""
    from ros_nodes.common import labeled_array
    return labeled_array({"q_target": q_target, "kp": kp, "kd": kd})


def read_joint_cmd(msg_or_data) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A joint-command message (labeled or flat 36 values) -> (q_target, kp, kd).

    Raises ValueError on a wrong size, a non-finite value or negative gains."""
    dims = getattr(getattr(msg_or_data, "layout", None), "dim", None)
    if dims:
        from ros_nodes.common import read_labeled_array
        blocks = read_labeled_array(msg_or_data)
        missing = {"q_target", "kp", "kd"} - set(blocks)
        if missing:
            raise ValueError(f"joint command layout lacks {sorted(missing)}")
        q, kp, kd = blocks["q_target"], blocks["kp"], blocks["kd"]
    else:
        data = np.asarray(getattr(msg_or_data, "data", msg_or_data), dtype=float).ravel()
        if data.size != 3 * N_JOINTS:
            raise ValueError(f"joint command has {data.size} values, expected {3 * N_JOINTS} "
                             "[q_target(12), kp(12), kd(12)]")
        q, kp, kd = data[:N_JOINTS], data[N_JOINTS:2 * N_JOINTS], data[2 * N_JOINTS:]
    for name, v in (("q_target", q), ("kp", kp), ("kd", kd)):
        if v.shape != (N_JOINTS,):
            raise ValueError(f"joint command block {name} has {v.size} values, expected {N_JOINTS}")
        if not np.all(np.isfinite(v)):
            raise ValueError(f"joint command block {name} is not finite")
    if np.any(kp < 0) or np.any(kd < 0):
        raise ValueError("negative kp/kd in the joint command")
    return q.astype(float), kp.astype(float), kd.astype(float)


# ---- sensor messages ----------------------------------------------------------------------

def joint_state_msg(names, q, dq, tau, stamp):
    from sensor_msgs.msg import JointState
    m = JointState()
    m.header.stamp = stamp
    m.name = list(names)
    m.position = [float(v) for v in q]
    m.velocity = [float(v) for v in dq]
    m.effort = [float(v) for v in tau]
    return m


def imu_msg(quat_wxyz, gyro, specific_force, stamp, frame_id: str = "pelvis"):
    from sensor_msgs.msg import Imu
    m = Imu()
    m.header.stamp = stamp
    m.header.frame_id = frame_id
    m.orientation.w, m.orientation.x, m.orientation.y, m.orientation.z = (float(v) for v in quat_wxyz)
    m.angular_velocity.x, m.angular_velocity.y, m.angular_velocity.z = (float(v) for v in gyro)
    m.linear_acceleration.x, m.linear_acceleration.y, m.linear_acceleration.z = (float(v) for v in specific_force)
    return m


def imu_arrays(msg) -> tuple[np.ndarray, np.ndarray]:
    """An Imu message -> (quat wxyz (4,), gyro (3,))."""
    o, w = msg.orientation, msg.angular_velocity
    return np.array([o.w, o.x, o.y, o.z], float), np.array([w.x, w.y, w.z], float)


def leg_state(q, dq, quat_wxyz, gyro) -> dict:
    """The supervisor's / safety filter's state dict from measured quantities."""
    quat = np.asarray(quat_wxyz, float)
    return {"q": np.asarray(q, float), "dq": np.asarray(dq, float), "quat": quat, "gyro": np.asarray(gyro, float),
            "rpy": rpy_from_quat(quat[None])[0]}


# ---- observation --------------------------------------------------------------------------

def frame_from_state(q, dq, quat_wxyz, gyro, command, last_action, t_s, default_pose,
                     period_s: float = GAIT_PERIOD_S) -> np.ndarray:
    """One 47-D frame (the env's ``build_frame``) from one robot's measured state; ``period_s`` is the
    artifact's gait period (``sim.humanoid_env.gait_period_of_contract``)."""
    quat = np.asarray(quat_wxyz, float)[None]
    grav = quat_rotate_inverse(quat, np.array([[0.0, 0.0, -1.0]]))
    return build_frame(np.asarray(gyro, float)[None], grav, np.asarray(q, float)[None],
                       np.asarray(dq, float)[None], np.asarray(command, float)[None],
                       np.asarray(last_action, float)[None], np.array([float(t_s)]),
                       np.asarray(default_pose, float), period_s)[0]


def last_action_of(q_target, default_pose) -> np.ndarray:
    """The env's ``last_action`` for an applied PD target: (target - default) / ACTION_SCALE."""
    return (np.asarray(q_target, float) - np.asarray(default_pose, float)) / ACTION_SCALE


def history_of_contract(contract) -> int:
    """Frames of history the artifact's observation holds (its first key is history x 3)."""
    first = contract.observation["keys"][0]
    return int(np.prod(first["shape"])) // OBS_SPEC[0]["shape"][0]


class ObservationHistory:
    """The actor's observation: the last ``history`` frames, key-major, as the env lays it out."""

    def __init__(self, history: int):
        self.history = int(history)
        self.frames = np.zeros((self.history, FRAME_DIM), np.float32)
        self._perm, self.slices = history_layout(self.history)
        self.empty = True

    def push(self, frame) -> None:
        if self.empty:              # the env starts every episode with its first frame repeated
            self.frames[:] = frame
            self.empty = False
        else:
            self.frames[:-1] = self.frames[1:]
            self.frames[-1] = frame

    def flat(self) -> np.ndarray:
        return self.frames.reshape(-1)[self._perm]

    def obs(self) -> dict:
        f = self.flat()
        return {name: f[sl] for name, sl in self.slices.items()}
