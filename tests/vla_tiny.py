"""A tiny VLA artifact for the ROS tests: random-image dataset -> 3 training steps -> three-graph export.

Built once per pytest session (``session_vla_artifact``). Its outputs are
meaningless as behaviour; the tests use it for plumbing (instruction switch,
holds, cameras over DDS), never for success.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

IMG = 32
INSTRUCTIONS = ["push the red cube toward the robot", "pick up the blue cube and place it on the pad",
                "put the green block on the white pad"]
STATE_SPEC = [{"name": "joint_pos", "shape": [7], "units": "rad"}, {"name": "joint_vel", "shape": [7], "units": "rad/s"},
              {"name": "gripper_width", "shape": [1], "units": "m"}, {"name": "ee_pos", "shape": [3], "units": "m"}]


def _dataset(root: Path, episodes: int = 3, length: int = 20) -> Path:
    from onboard.spec import load_robot
    from policies.dataset import LeRobotDatasetWriter, features_from_env

    panda = load_robot("franka_panda")
    rng = np.random.default_rng(0)
    feats = features_from_env(STATE_SPEC, panda.action_names, cameras=("front", "wrist"), image_size=(IMG, IMG))
    with LeRobotDatasetWriter(root, fps=10, features=feats, robot_type="franka_panda") as w:
        for ep in range(episodes):
            q0 = np.asarray(panda.default_pose) + rng.normal(0, 0.05, 7)
            for k in range(length):
                q = q0 + 0.005 * k
                w.add_frame({"observation.joint_pos": q.astype(np.float32),
                             "observation.joint_vel": np.zeros(7, np.float32),
                             "observation.gripper_width": np.array([0.04], np.float32),
                             "observation.ee_pos": np.array([0.4, 0.0, 0.3], np.float32),
                             "observation.images.front": rng.integers(0, 256, (IMG, IMG, 3), dtype=np.uint8),
                             "observation.images.wrist": rng.integers(0, 256, (IMG, IMG, 3), dtype=np.uint8),
                             "action": np.concatenate([q + 0.01, [0.04]]).astype(np.float32)},
                            task=INSTRUCTIONS[ep % len(INSTRUCTIONS)])
            w.save_episode()
    return root


def session_vla_artifact(tmp_path_factory) -> Path:
    from policies.dataset import load_dataset
    from policies.vla.export import export_checkpoint
    from policies.vla.train import data_from_dataset, tiny_config, train

    root = tmp_path_factory.getbasetemp() / "ros_vla_tiny"
    entry = root / "artifact" / "policy.onnx"
    if not entry.is_file():
        data = data_from_dataset(load_dataset(_dataset(root / "data")), source="tiny")
        train(tiny_config(steps=3), data, root / "train", progress=False)
        export_checkpoint(root / "train" / "checkpoint.pt", root / "artifact")
    return entry
