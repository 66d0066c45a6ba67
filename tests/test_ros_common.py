"""Plain-function pieces of the ROS layer: state gate, conversions, ros2_control messages (no ROS graph)."""
from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("rclpy")

from ros_nodes.adapters import ros2_control as rc  # noqa: E402
from ros_nodes.common import (StateGate, StateError, array_to_image, image_to_array, joint_state_arrays,  # noqa: E402
                              labeled_array, read_labeled_array)

J = ("a", "b", "c")


def test_joint_states_are_mapped_by_name_not_by_position():
    q, dq = joint_state_arrays(["c", "x", "a", "b"], [3, 9, 1, 2], [30, 90, 10, 20], J)
    assert q.tolist() == [1, 2, 3] and dq.tolist() == [10, 20, 30]


@pytest.mark.parametrize("names, pos, vel, reason", [
    (["a", "b"], [1, 2], [0, 0], "missing_joint"),
    (["a", "b", "c"], [1, float("nan"), 3], [], "nan"),
    (["a", "b", "c"], [1, 2, 3], [0, float("inf"), 0], "nan"),
    (["a", "b", "c"], [1, 2], [], "malformed"),
])
def test_unusable_joint_states_are_refused_with_a_reason(names, pos, vel, reason):
    with pytest.raises(StateError) as exc:
        joint_state_arrays(names, pos, vel, J)
    assert exc.value.reason == reason


def test_state_gate_rejects_out_of_order_stamps_and_keeps_the_last_good_state():
    g = StateGate(J, expected_rate_hz=100)
    assert g.offer(J, [1, 2, 3], [], stamp_s=1.0, receive_s=1.0)
    assert not g.offer(J, [9, 9, 9], [], stamp_s=0.5, receive_s=1.01)
    assert not g.offer(J, [9, 9, 9], [], stamp_s=1.0, receive_s=1.02)      # a replay
    assert not g.offer(J, [np.nan, 9, 9], [], stamp_s=2.0, receive_s=1.03)
    assert g.q.tolist() == [1, 2, 3]
    assert g.rejected == {"out_of_order": 2, "nan": 1}


def test_state_gate_reports_messages_at_ten_times_the_expected_rate():
    g = StateGate(J, expected_rate_hz=100)
    for k in range(1000):                      # 1000 messages within one second
        g.offer(J, [1, 2, 3], [], stamp_s=k * 1e-3, receive_s=k * 1e-3)
    assert g.rate_excess and g.accepted == 1000


def test_labeled_array_round_trips_named_blocks():
    vals = {"ee_pos": np.array([1.0, 2, 3]), "target_pos": np.array([4.0, 5, 6]), "yaw": np.array([7.0])}
    back = read_labeled_array(labeled_array(vals))
    assert list(back) == list(vals) and all(np.array_equal(back[k], vals[k]) for k in vals)


def test_image_round_trip_keeps_pixels():
    img = np.random.default_rng(0).integers(0, 255, (48, 64, 3), dtype=np.uint8)
    assert np.array_equal(image_to_array(array_to_image(img, 1.5)), img)


def test_forward_command_is_in_controller_joint_order():
    msg = rc.forward_command([1.0, 2.0, 3.0], J, ("c", "a", "b"))
    assert list(msg.data) == [3.0, 1.0, 2.0]
    with pytest.raises(KeyError):
        rc.forward_command([1.0, 2.0, 3.0], J, ("a", "z"))


def test_joint_trajectory_points_are_spaced_by_the_control_period_and_round_trip():
    chunk = np.array([[0.0, 0.1, 0.2], [0.1, 0.2, 0.3], [0.2, 0.3, 0.4]])
    msg = rc.joint_trajectory(chunk, J, ("b", "a", "c"), dt_s=0.1)
    assert msg.joint_names == ["b", "a", "c"]
    times, pos = rc.trajectory_arrays(msg, J)
    assert np.allclose(times, [0.1, 0.2, 0.3]) and np.allclose(pos, chunk)


def test_trajectory_sampling_interpolates_from_the_start_and_holds_the_last_point():
    times, pos = np.array([1.0, 2.0]), np.array([[1.0], [3.0]])
    s = lambda t: rc.sample_trajectory(times, pos, np.array([0.0]), t)[0]  # noqa: E731
    assert s(0.0) == 0.0 and s(0.5) == pytest.approx(0.5) and s(1.5) == pytest.approx(2.0) and s(9.0) == 3.0
