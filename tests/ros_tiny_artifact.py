"""A tiny real artifact for the ROS tests: a few diffusion training steps on synthetic demos, exported.

Every demo commands the same goal pose (``GOAL_Q``), so the action statistics
are degenerate and the exported policy, however briefly trained, outputs the
goal pose exactly: the ROS tests can then assert that the arm moves toward it.
Observation keys are the ones sim_node provides for the reach task:
``joint_pos`` and ``gripper_width`` (from /joint_states) and ``target_pos``
(from /task_state).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from onboard.spec import load_robot

PANDA = load_robot("franka_panda")
GOAL_Q = PANDA.default_pose + np.array([0.5, 0.25, 0.0, 0.25, 0.0, 0.0, 0.0])
GOAL_WIDTH = 0.04


def make_tiny_artifact(out_dir: Path, action_spread: float = 0.0) -> Path:
    """``action_spread > 0`` scatters the demo actions around the goal pose (+- spread rad/m), so the
    action normalization has a nonzero span on every axis (a residual can only correct such axes)."""
    from policies.diffusion.train import TrainConfig, TrainData, train
    from policies.export import export_checkpoint

    rng = np.random.default_rng(0)
    n_ep, length = 4, 12
    q = PANDA.default_pose + rng.uniform(-0.3, 0.3, (n_ep * length, 7))
    data = TrainData(
        obs={"joint_pos": q.astype(np.float32),
             "gripper_width": np.full((n_ep * length, 1), GOAL_WIDTH, np.float32),
             "target_pos": rng.uniform([0.35, -0.2, 0.1], [0.6, 0.2, 0.35], (n_ep * length, 3)).astype(np.float32)},
        actions=(np.tile(np.r_[GOAL_Q, GOAL_WIDTH], (n_ep * length, 1))
                 + rng.uniform(-1, 1, (n_ep * length, 8)) * action_spread * np.r_[np.ones(7), 0.05]).astype(np.float32),
        episode_index=np.repeat(np.arange(n_ep), length),
        obs_spec=[{"name": "joint_pos", "shape": [7], "units": "rad"},
                  {"name": "gripper_width", "shape": [1], "units": "m"},
                  {"name": "target_pos", "shape": [3], "units": "m"}],
        action_names=list(PANDA.action_names), robot="franka_panda", control_rate_hz=10.0,
        meta={"dataset": "synthetic", "task": "ros_test_goal_pose"})
    cfg = TrainConfig(down_dims=(16, 32), n_groups=4, timestep_embed_dim=16, steps=4, batch_size=16,
                      warmup_steps=1, log_every=2, checkpoint_every=4, num_threads=1)
    out_dir = Path(out_dir)
    train(cfg, data, out_dir / "train", progress=False)
    art = out_dir / "policy.onnx"
    export_checkpoint(out_dir / "train" / "checkpoint.pt", art)
    return art
