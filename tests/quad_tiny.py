"""One tiny quadrotor artifact per pytest session: residual PPO, a few updates, through the CLI."""
from __future__ import annotations

from pathlib import Path


def session_quad_artifact(tmp_path_factory) -> Path:
    from onboard.cli import main
    root = tmp_path_factory.getbasetemp() / "quad_tiny_artifact"
    art = root / "quad.onnx"
    if not art.is_file():
        assert main(["train", "--policy", "ppo", "--task", "track", "--residual", "--total-steps", "192",
                     "--num-envs", "4", "--rollout-steps", "16", "--out", str(root / "train"), "--no-progress"]) == 0
        assert (root / "train" / "checkpoint.pt").is_file() and (root / "train" / "training_curve.png").is_file()
        assert main(["export", str(root / "train" / "checkpoint.pt"), "--out", str(art)]) == 0
    return art
