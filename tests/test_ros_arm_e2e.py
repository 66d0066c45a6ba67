"""End to end over real DDS: `onboard launch launch/arm_sim.launch.yaml` with a tiny exported artifact.

sim_node (MuJoCo Panda) and policy_node run as separate processes on this test
process's ROS_DOMAIN_ID (tests/conftest.py). The test process listens with its
own rclpy node.
"""
from __future__ import annotations

import os
import re
import signal

import numpy as np
import pytest

pytest.importorskip("rclpy")

from ros_fixtures import Launched, session_artifact, spin_until  # noqa: E402
from ros_tiny_artifact import GOAL_Q, PANDA  # noqa: E402

pytestmark = pytest.mark.ros


@pytest.fixture(scope="module")
def artifact(tmp_path_factory):
    return session_artifact(tmp_path_factory)


def test_launch_drives_the_simulated_arm_to_the_goal_safely_holds_on_stale_state_and_shuts_down_cleanly(artifact):
    from diagnostic_msgs.msg import DiagnosticArray
    from sensor_msgs.msg import JointState
    from std_msgs.msg import Float64MultiArray

    from ros_nodes.common import read_diagnostic, sensor_qos

    with Launched("launch/arm_sim.launch.yaml", f"policy:={artifact}", "sim_respawn:=true",
                  "sim_respawn_delay:=60", "dr:=false", probe="e2e_probe") as run:
        node, ex, lines = run.node, run.ex, run.lines
        seen = {"q": [], "cmd": [], "diag": []}
        node.create_subscription(JointState, "/joint_states", lambda m: seen["q"].append(np.array(m.position[:7])),
                                 sensor_qos(50))
        node.create_subscription(Float64MultiArray, "/forward_position_controller/commands",
                                 lambda m: seen["cmd"].append(np.array(m.data)), 50)
        node.create_subscription(DiagnosticArray, "/diagnostics",
                                 lambda m: seen["diag"].extend(read_diagnostic(s) for s in m.status), 50)
        # 1. commands reach the simulated arm and it moves toward the goal
        assert spin_until(ex, lambda: len(seen["q"]) > 0 and len(seen["cmd"]) > 0, 60), "".join(lines[-30:])
        d0 = np.abs(PANDA.default_pose - GOAL_Q).max()     # the sim starts at the ready pose (+-0.02 rad)
        assert spin_until(ex, lambda: np.abs(seen["q"][-1] - GOAL_Q).max() < 0.1 * d0, 30), \
            f"arm did not approach the goal: {seen['q'][-1]} vs {GOAL_Q}"

        # 2. the filter is active, and neither commands nor measured joints ever leave the limits
        assert spin_until(ex, lambda: any(d.get("state") == "running" for d in seen["diag"]), 10)
        running = [d for d in seen["diag"] if d.get("state") == "running"][-1]
        assert int(running["interventions"]) > 0 and running["safety_mode"] in ("RUN", "RAMP_IN")
        lo, hi = PANDA.limits.position[:, 0], PANDA.limits.position[:, 1]
        q_all, c_all = np.array(seen["q"]), np.array(seen["cmd"])
        assert np.all(q_all >= lo - 1e-3) and np.all(q_all <= hi + 1e-3)
        assert np.all(np.isfinite(c_all)) and np.all(c_all >= lo) and np.all(c_all <= hi)

        # 3. killing sim_node: the policy node holds and reports stale state
        sim_pid = int(re.search(r"started \[sim_node\] pid (\d+)", "".join(lines)).group(1))
        os.killpg(sim_pid, signal.SIGKILL)
        n_before = len(seen["diag"])
        assert spin_until(ex, lambda: any(d.get("state") == "stale" for d in seen["diag"][n_before:]), 15), \
            seen["diag"][-1:]
        stale = [d for d in seen["diag"][n_before:] if d.get("state") == "stale"][-1]
        assert stale["level"] == 3 and "stale" in stale["message"] and stale["safety_mode"] == "HOLD"
        held = len(seen["cmd"])
        spin_until(ex, lambda: len(seen["cmd"]) >= held + 5, 5)
        tail = np.array(seen["cmd"][held:])
        assert len(tail) and np.abs(np.diff(tail, axis=0)).max(initial=0) < 1e-3   # holding still
    # 4. clean shutdown: SIGINT to the runner ends everything, no orphans
    run.assert_clean_shutdown(nodes=2)
