"""The quadrotor over ROS 2: the node logic in closed loop without DDS, then sim + policy over real DDS."""
from __future__ import annotations

import numpy as np
import pytest


@pytest.fixture(scope="module")
def artifact(tmp_path_factory):
    from quad_tiny import session_quad_artifact
    return session_quad_artifact(tmp_path_factory)


def _fly(core, loop, t0, seconds, feed_state=True):
    from ros_nodes.adapters.quad_common import rot_to_quat_wxyz
    cmds = []
    for k in range(int(round(seconds * 100))):
        t = t0 + k * 0.01
        if feed_state:
            st = core.state()
            loop.on_odometry(st["pos"], rot_to_quat_wxyz(st["rot"]), st["rot"].T @ st["vel"], st["gyro"], t)
            loop.on_imu(st["gyro"])
        cmd = loop.tick(t)
        if cmd is not None:
            core.on_command(cmd, t)
            cmds.append(cmd)
        core.step(t)
    return np.array(cmds)


def test_policy_loop_flies_the_sim_core_to_the_setpoint_and_the_filter_lands_it_on_state_loss(artifact):
    from ros_nodes.quad_policy_node import QuadPolicyLoop, RUNNING, STALE
    from ros_nodes.quad_sim_node import QuadSimCore
    core = QuadSimCore(seed=1, dr=False, start_pos=(0.3, -0.2, 0.8))
    loop = QuadPolicyLoop(artifact, setpoint=(0.0, 0.0, 1.0))
    assert loop.ok, loop.error
    assert loop.tick(0.0) is None                      # no odometry yet: nothing is commanded
    _fly(core, loop, 0.0, 4.0)
    assert loop.status == RUNNING and core.crashes == 0
    assert np.linalg.norm(core.env.sim.pos[0] - [0, 0, 1.0]) < 0.05
    s = loop.safety.summary()
    assert s["counts"].get("ramp_in", 0) > 0          # the filter sat in the command path
    # odometry stops: no policy output, the filter's fallback descends (thrust below hover)
    cmds = _fly(core, loop, 4.0, 0.5, feed_state=False)
    assert loop.status == STALE and loop.safety.mode in ("LAND", "HOLD")
    assert np.all(cmds[-10:, 0] <= 0.027 * 9.81 + 1e-6)


def test_policy_loop_tracks_the_figure8_reference_through_the_shared_observation_builder(artifact):
    from ros_nodes.quad_policy_node import QuadPolicyLoop
    from ros_nodes.quad_sim_node import QuadSimCore
    core = QuadSimCore(seed=3, dr=False, start_pos=(0.0, 0.0, 1.0))
    loop = QuadPolicyLoop(artifact, reference="figure8", setpoint=(0.0, 0.0, 1.0))
    _fly(core, loop, 0.0, 6.0)
    e = np.array(loop.errors)
    assert core.crashes == 0 and np.sqrt((e ** 2).mean()) < 0.15
    assert max(loop.errors) < 0.3            # a moving reference (|x| up to 1 m) followed closely


def test_sim_firmware_levels_then_stops_the_motors_when_commands_stop():
    from ros_nodes.quad_sim_node import FLYING, LEVELING, MOTORS_OFF, WAITING, QuadSimCore
    core = QuadSimCore(start_pos=(0, 0, 1.0))
    assert core.step(0.0) is None and core.status == WAITING          # held until the first command
    core.on_command([0.027 * 9.81, 0.5, 0.0, 0.0], 0.0)
    seen = []
    for k in range(260):
        core.step(k * 0.01)
        seen.append(core.status)
    assert seen[50] == FLYING and LEVELING in seen and seen[-1] == MOTORS_OFF
    assert seen.index(LEVELING) == pytest.approx(101, abs=2)


def test_quad_policy_node_reports_a_bad_artifact_instead_of_flying(tmp_path):
    from ros_nodes.quad_policy_node import NO_POLICY, QuadPolicyLoop
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not onnx")
    loop = QuadPolicyLoop(bad)
    assert not loop.ok and loop.tick(0.0) is None and loop.status == NO_POLICY
    level, msg, values = loop.diagnostics(0.0)
    assert level == "error" and "no policy" in msg


@pytest.mark.ros
def test_launch_flies_the_simulated_quadrotor_to_its_setpoint_over_dds_and_shuts_down_cleanly(artifact):
    pytest.importorskip("rclpy")
    from diagnostic_msgs.msg import DiagnosticArray
    from nav_msgs.msg import Odometry
    from std_msgs.msg import Float64MultiArray

    from ros_fixtures import Launched
    from ros_nodes.common import read_diagnostic, sensor_qos

    with Launched("launch/quad_sim.launch.yaml", f"policy:={artifact}", "start_pos:=[0.4, -0.3, 0.7]",
                  "setpoint:=[0.0, 0.0, 1.0]", probe="quad_e2e_probe") as run:
        node = run.node
        seen = {"pos": [], "cmd": [], "diag": []}
        node.create_subscription(Odometry, "/quad/odom", lambda m: seen["pos"].append(
            np.array([m.pose.pose.position.x, m.pose.pose.position.y, m.pose.pose.position.z])), sensor_qos(50))
        node.create_subscription(Float64MultiArray, "/quad/cmd", lambda m: seen["cmd"].append(np.array(m.data)), 50)
        node.create_subscription(DiagnosticArray, "/diagnostics",
                                 lambda m: seen["diag"].extend(read_diagnostic(s) for s in m.status), 50)
        assert run.spin_until(lambda: len(seen["cmd"]) > 0 and len(seen["pos"]) > 0, 45), run.tail()
        near = lambda: len(seen["pos"]) > 0 and np.linalg.norm(seen["pos"][-1] - [0, 0, 1.0]) < 0.1   # noqa: E731
        assert run.spin_until(near, 15), f"did not reach the setpoint: {seen['pos'][-1]}"
        n0 = len(seen["pos"])
        run.spin_until(lambda: len(seen["pos"]) >= n0 + 150, 5)                  # ~1.5 s more
        held = np.array(seen["pos"][n0:])
        assert len(held) > 50 and np.linalg.norm(held - [0, 0, 1.0], axis=1).max() < 0.1     # holds
        c = np.array(seen["cmd"])
        assert np.all(np.isfinite(c)) and np.all(c[:, 0] >= 0) and np.all(np.abs(c[:, 1:]) <= [3.84, 3.84, 3.49])
        pol = [d for d in seen["diag"] if d["name"].startswith("quad_policy_node")]
        assert pol and pol[-1]["state"] == "running" and int(pol[-1]["interventions"]) > 0
        sim = [d for d in seen["diag"] if d["name"].startswith("quad_sim_node")]
        assert sim and sim[-1]["crashes"] == "0"
    run.assert_clean_shutdown(nodes=2)
