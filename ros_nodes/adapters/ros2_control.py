"""ros2_control command messages as plain functions.

- Forward position controller: ``/<controller>/commands`` carries a
  std_msgs/Float64MultiArray with one value per controller joint, in the
  controller's ``joints`` parameter order (not necessarily the policy's).
- JointTrajectoryController: ``/<controller>/joint_trajectory`` carries a
  trajectory_msgs/JointTrajectory; points are reached at ``time_from_start``
  after the header stamp (stamp 0 = "start now").
- Gripper: ``/gripper/commands`` Float64MultiArray ``[width_m]`` (the
  forward-controller convention; a franka_gripper action bridge maps it to
  Move/Grasp on a real Panda).

``sample_trajectory`` is the receiving side (used by sim_node): linear
interpolation of a trajectory by time, holding the last point.

Imports numpy and message types only.
"""
from __future__ import annotations

import numpy as np

from ros_nodes.common import duration_to_s, s_to_duration


def reorder(values, from_names, to_names) -> np.ndarray:
    """``values`` named by ``from_names`` -> the order of ``to_names`` (every name must exist)."""
    index = {n: i for i, n in enumerate(from_names)}
    missing = [n for n in to_names if n not in index]
    if missing:
        raise KeyError(f"controller joints {missing} are not in the command's joints {list(from_names)}")
    v = np.asarray(values, dtype=float)
    return v[[index[n] for n in to_names]]


def forward_command(positions, policy_joints, controller_joints):
    """Float64MultiArray for a forward position controller, in controller joint order."""
    from std_msgs.msg import Float64MultiArray
    return Float64MultiArray(data=reorder(positions, policy_joints, controller_joints).tolist())


def gripper_command(width_m: float):
    from std_msgs.msg import Float64MultiArray
    return Float64MultiArray(data=[float(width_m)])


def joint_trajectory(chunk, policy_joints, controller_joints, dt_s: float, *, first_offset_s: float | None = None,
                     stamp=None):
    """A multi-point JointTrajectory from a (H, n) chunk of joint targets spaced ``dt_s`` apart.

    Point k is due at ``first_offset_s + k * dt_s`` (default: ``dt_s``, i.e. the
    first target one control period from now). Velocities are finite
    differences so the JTC can spline through the points.
    """
    from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint
    chunk = np.atleast_2d(np.asarray(chunk, dtype=float))
    ordered = np.stack([reorder(row, policy_joints, controller_joints) for row in chunk])
    t0 = dt_s if first_offset_s is None else first_offset_s
    vel = np.gradient(ordered, dt_s, axis=0) if len(ordered) > 1 else np.zeros_like(ordered)
    msg = JointTrajectory()
    if stamp is not None:
        msg.header.stamp = stamp
    msg.joint_names = list(controller_joints)
    for k, row in enumerate(ordered):
        msg.points.append(JointTrajectoryPoint(positions=row.tolist(), velocities=vel[k].tolist(),
                                               time_from_start=s_to_duration(t0 + k * dt_s)))
    return msg


def trajectory_arrays(msg, wanted_joints) -> tuple[np.ndarray, np.ndarray]:
    """(times_s (K,), positions (K, n) in ``wanted_joints`` order) from a JointTrajectory."""
    if not msg.points:
        raise ValueError("trajectory has no points")
    times = np.array([duration_to_s(p.time_from_start) for p in msg.points])
    if np.any(np.diff(times) <= 0):
        raise ValueError("time_from_start must increase strictly")
    pos = np.stack([reorder(p.positions, msg.joint_names, wanted_joints) for p in msg.points])
    if not np.all(np.isfinite(pos)):
        raise ValueError("trajectory has non-finite positions")
    return times, pos


def sample_trajectory(times_s: np.ndarray, positions: np.ndarray, start_q: np.ndarray, t_s: float) -> np.ndarray:
    """Position at ``t_s`` after the trajectory start: linear from ``start_q`` at t=0 through the points."""
    ts = np.concatenate([[0.0], times_s])
    ps = np.vstack([start_q, positions])
    if t_s >= ts[-1]:
        return ps[-1].copy()
    if t_s <= 0:
        return ps[0].copy()
    k = int(np.searchsorted(ts, t_s, side="right")) - 1
    a = (t_s - ts[k]) / (ts[k + 1] - ts[k])
    return (1 - a) * ps[k] + a * ps[k + 1]
