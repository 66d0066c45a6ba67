"""Quadrotor PPO: a tiny train -> export -> evaluate through the artifact, and the residual bound."""
import numpy as np
import pytest
import torch

from onboard.errors import OnboardError
from policies.ppo import PPOConfig, evaluate, load_checkpoint, policy_act_fn, save_checkpoint, squash, train
from sim.quad_env import QuadVecEnv, split_obs


def tiny(mode):
    return PPOConfig(mode=mode, num_envs=4, num_steps=16, total_steps=4 * 16 * 3, num_minibatches=2,
                     update_epochs=2, hidden=(32, 32), log_every=1)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    res = train(tiny("residual"), log=lambda *_: None)
    path = save_checkpoint(res, tmp_path_factory.mktemp("ppo") / "residual.pt")
    return res, path


def test_a_tiny_residual_ppo_run_updates_the_policy_and_saves_a_checkpoint(trained):
    res, path = trained
    assert res.env_steps == 4 * 16 * 3
    fresh = train(PPOConfig(**{**tiny("residual").__dict__, "total_steps": 1}), log=lambda *_: None)
    before = fresh.model.actor[0].weight.detach()
    assert not torch.equal(before, res.model.actor[0].weight.detach())
    again, ck = load_checkpoint(path)
    assert again.config.mode == "residual" and ck["env_meta"]["max_thrust_n"] > 0
    assert np.allclose(again.obs_rms.mean, res.obs_rms.mean)


def test_residual_action_never_leaves_the_bound_around_the_baseline():
    cfg = PPOConfig(mode="residual", residual_scale=0.2)
    rng = np.random.default_rng(0)
    base = rng.uniform(-0.7, 0.7, (1000, 4))
    u = rng.standard_normal((1000, 4)) * 100
    a = squash(u, base, cfg)
    assert np.all(np.abs(a - base) <= 0.2 + 1e-12) and np.all(np.abs(a) <= 1)


def test_config_refuses_an_unbounded_residual():
    with pytest.raises(OnboardError, match="residual_scale"):
        PPOConfig(residual_scale=2.0).validate()


def test_exported_artifact_acts_like_the_torch_policy_in_closed_loop_through_the_one_runtime(trained, tmp_path):
    from policies.export_mlp import export_ppo_checkpoint
    from policies.runtime import PolicyRuntime
    res, path = trained
    contract = export_ppo_checkpoint(path, tmp_path / "quad.onnx")
    assert contract.policy_kind == "residual" and contract.action["type"] == "thrust_body_rates"
    rt = PolicyRuntime(tmp_path / "quad.onnx", num_envs=3)
    env = QuadVecEnv(3, task="track", dr=True, seed=5)
    obs, _ = env.reset()
    torch_act, state = policy_act_fn(res), {"env": env}
    rt.reset_envs()
    for _ in range(20):
        a_torch = torch_act(obs, state)
        a_onnx = rt.act_normalized_batch(split_obs(obs))
        assert np.abs(a_torch - a_onnx).max() < 1e-4
        obs, *_ = env.step(a_onnx)
    cmd = rt.act_batch(split_obs(obs))
    assert cmd.shape == (3, 4) and np.all(cmd[:, 0] >= 0) and np.all(cmd[:, 0] <= env.max_thrust_n + 1e-6)
    np.testing.assert_allclose(rt.to_normalized(cmd), np.clip(rt.to_normalized(cmd), -1, 1), atol=1e-6)


def test_evaluation_counts_exactly_the_requested_episodes():
    out = evaluate(lambda obs, s: np.tile(s["env"].hover_action, (len(obs), 1)), episodes=3, task="hover",
                   dr=False, num_envs=2)
    assert out["episodes"] == 3 and 0 <= out["crash_rate"] <= 1


def test_held_out_evaluation_runs_the_baseline_through_the_safety_filter():
    from policies.quad_eval import rpy_from_rot6d, run_episodes
    out = run_episodes("baseline", episodes=2, num_envs=2, safety=True)
    assert out["episodes"] == 2 and out["safety_filter"].endswith("crazyflie2x_figure8.yaml")
    assert out["safety_interventions"].get("ramp_in", 0) > 0      # the filter really sat in the path
    rot = np.eye(3)[:, :2].T.reshape(1, 6)
    assert np.allclose(rpy_from_rot6d(rot), 0)
