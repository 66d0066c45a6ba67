"""Scripted experts: they succeed under DR, push uses both routes, and actions are smooth policy actions.

The 40-episode success figures are measured by ``bench/bench_env_step.py --experts``; here a
handful of episodes per task keeps the suite fast.
"""
import numpy as np
import pytest

from sim.arm_env import ArmEnv
from sim.experts import make_expert, run_episode


@pytest.mark.parametrize("task", ["reach", "push", "pick_place"])
def test_expert_succeeds_under_domain_randomization(task):
    env = ArmEnv(task, dr=True, seed=123)
    expert = make_expert(env)
    wins = sum(run_episode(env, expert, seed=1000 + i)["success"] for i in range(10))
    assert wins >= 9, f"{task}: expert succeeded in {wins}/10"


def test_push_expert_goes_around_the_block_on_both_sides():
    env = ArmEnv("push", dr=True, seed=0)
    expert = make_expert(env)
    routes = {run_episode(env, expert, seed=i)["route"] for i in range(8)}
    assert routes == {"left", "right"}


def test_expert_actions_are_absolute_joint_targets_within_limits_and_smooth():
    env = ArmEnv("pick_place", dr=True, seed=0)
    expert = make_expert(env)
    actions = []
    run_episode(env, expert, seed=3, record=lambda obs, a: actions.append(a))
    actions = np.array(actions)
    assert actions.shape[1] == 8 and actions.dtype == np.float32
    assert env.action_space.contains(actions[0])
    lim = env.profile.limits
    assert np.all(actions[:, :7] >= lim.position[:, 0]) and np.all(actions[:, :7] <= lim.position[:, 1])
    joint_speed = np.abs(np.diff(actions[:, :7], axis=0)) * env.control_hz
    assert np.all(joint_speed <= lim.velocity)
    assert np.all(np.abs(np.diff(actions[:, 7])) * env.control_hz <= 0.05 + 1e-4)   # Franka Hand speed


def test_same_seed_gives_the_same_demonstration():
    def demo():
        env = ArmEnv("push", dr=True, seed=0)
        actions = []
        run_episode(env, make_expert(env), seed=11, record=lambda o, a: actions.append(a))
        return np.array(actions)
    np.testing.assert_array_equal(demo(), demo())
