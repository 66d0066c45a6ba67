"""Tiny synthetic demonstrations for the diffusion tests: a 'reach' in joint space.

Not a simulator: the action is a first-order step of the joints toward a goal
given in the observation, so a policy can learn it in a few dozen steps.
"""
import numpy as np

from onboard.spec import load_robot
from policies.diffusion.train import TrainConfig, TrainData

PANDA = load_robot("franka_panda")


def reach_demos(episodes: int = 12, length: int = 30, seed: int = 0) -> TrainData:
    rng = np.random.default_rng(seed)
    q_all, g_all, w_all, goal_all, act, ep = [], [], [], [], [], []
    for e in range(episodes):
        q = PANDA.default_pose + rng.uniform(-0.3, 0.3, 7)
        goal = PANDA.default_pose + rng.uniform(-0.3, 0.3, 7)
        width = 0.04
        for _ in range(length):
            nxt = q + 0.25 * (goal - q)
            q_all.append(q.copy()); w_all.append([width]); goal_all.append(goal[:3]); act.append(np.r_[nxt, width])
            ep.append(e)
            q = nxt
    return TrainData(obs={"joint_pos": np.asarray(q_all, np.float32), "gripper_width": np.asarray(w_all, np.float32),
                          "goal": np.asarray(goal_all, np.float32)},
                     actions=np.asarray(act, np.float32), episode_index=np.asarray(ep),
                     obs_spec=[{"name": "joint_pos", "shape": [7], "units": "rad"},
                               {"name": "gripper_width", "shape": [1], "units": "m"},
                               {"name": "goal", "shape": [3], "units": "rad"}],
                     action_names=list(PANDA.action_names), robot="franka_panda", control_rate_hz=10.0,
                     meta={"dataset": "synthetic", "task": "synthetic_reach"})


def tiny_config(**kw) -> TrainConfig:
    base = dict(down_dims=(16, 32), n_groups=4, timestep_embed_dim=16, steps=30, batch_size=32,
                warmup_steps=5, log_every=5, checkpoint_every=10, lr=3e-3, num_threads=1)
    base.update(kw)
    return TrainConfig(**base)
