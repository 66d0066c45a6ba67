"""Residual RL on a frozen diffusion base: exact zero start, bounded output, base pinning, train -> export -> eval.

The base is a real (tiny) diffusion artifact: a few training steps on synthetic demos, exported with
``policies.export`` (tests/ros_tiny_artifact.py); the env is the real MuJoCo ``reach`` task under DR.
"""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st
from hypothesis.extra.numpy import arrays

from onboard.errors import ContractError, OnboardError
from policies.residual import ResidualActor, ResidualGraph, export_residual, load_checkpoint
from policies.residual_runtime import ResidualRuntime, artifact_sha256
from policies.residual_train import ResidualPPOConfig, ResidualSACConfig, state_from_obs, train_ppo, train_sac
from policies.runtime import PolicyRuntime
from tests.ros_tiny_artifact import make_tiny_artifact

TASK = "reach"


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    # actions spread around the goal pose, so every axis has a span the residual can act on
    return make_tiny_artifact(tmp_path_factory.mktemp("residual_base"), action_spread=0.2)


@pytest.fixture(scope="module")
def trained(base, tmp_path_factory):
    """A few PPO updates through the real env, then the exported residual artifact."""
    out = tmp_path_factory.mktemp("residual_run")
    cfg = ResidualPPOConfig(task=TASK, num_envs=2, num_steps=8, total_steps=32, update_epochs=1,
                            num_minibatches=2, base_num_steps=2, init_log_std=0.5, learning_rate=1e-2)
    res = train_ppo(base, cfg, out=out / "residual.pt", log=lambda _line: None)
    art = out / "residual.onnx"
    export_residual(out / "residual.pt", art)
    return res, out / "residual.pt", art


def _rollout(rt, seed: int, steps: int) -> list[np.ndarray]:
    from sim.arm_env import ArmEnv
    from sim2real.safety import SafetyFilter

    env = ArmEnv(task=TASK, dr=True, seed=seed)
    rt.safety = SafetyFilter.for_robot("franka_panda", dt_s=0.1)
    obs, _ = env.reset(seed=seed)
    state = state_from_obs(obs)
    rt.reset(state=state, t=0.0)
    cmds = []
    for k in range(steps):
        cmd = rt.act(obs, t=0.1 * k, state=state)
        cmds.append(cmd)
        obs, *_ = env.step(cmd)
        state = state_from_obs(obs)
    return cmds


def test_zero_initialised_residual_reproduces_the_base_exactly(base, tmp_path):
    """Same seeds -> identical commands: the base runtime alone, the untrained torch residual, and the
    untrained residual exported to ONNX, all through the same safety filter under DR."""
    ref = _rollout(PolicyRuntime(base, num_steps=2, seed=3), seed=11, steps=20)
    actor = ResidualActor(11 + 8, 8)          # tiny base: obs dim 11 (joint_pos, gripper_width, target_pos)
    graph = ResidualGraph(actor, 0.1)

    def torch_fn(x):
        with torch.no_grad():
            return graph(torch.as_tensor(x[:, :11]), torch.as_tensor(x[:, 11:])).numpy()
    got = _rollout(ResidualRuntime(base, torch_fn, num_steps=2, seed=3), seed=11, steps=20)
    assert all(np.array_equal(a, b) for a, b in zip(ref, got))

    from policies.residual import save_checkpoint
    ck = save_checkpoint(tmp_path / "zero.pt", {
        "algo": "none", "config": {}, "scale": 0.1, "actor": {"in_dim": 19, "act_dim": 8, "hidden": [256, 256]},
        "actor_state": actor.state_dict(), "base_artifact": str(base), "base_sha256": artifact_sha256(base),
        "base_num_steps": 2, "task": TASK, "dr": True, "history": [], "env_steps": 0, "wall_s": 0.0})
    export_residual(ck, tmp_path / "zero.onnx")
    exported = _rollout(ResidualRuntime(None, tmp_path / "zero.onnx", seed=3), seed=11, steps=20)
    assert all(np.array_equal(a, b) for a, b in zip(ref, exported))


@settings(max_examples=60)
@given(x=arrays(np.float32, (3, 19), elements=st.floats(-1e6, 1e6, width=32)),
       weight_scale=st.floats(0.0, 100.0), scale=st.floats(1e-3, 1.0))
def test_residual_output_never_exceeds_its_scale_for_any_input(x, weight_scale, scale):
    torch.manual_seed(0)
    actor = ResidualActor(19, 8, hidden=(16,))
    with torch.no_grad():
        for p in actor.parameters():
            p.normal_(0.0, weight_scale)
        out = ResidualGraph(actor, scale)(torch.from_numpy(x[:, :11]), torch.from_numpy(x[:, 11:])).numpy()
    assert np.all(np.isfinite(out))
    assert np.all(np.abs(out) <= np.float32(scale))


@settings(max_examples=40)
@given(corr=arrays(np.float64, (8,), elements=st.floats(allow_nan=True, allow_infinity=True)),
       share=st.floats(0.0, 1.0))
def test_runtime_cap_bounds_the_applied_correction_for_any_residual_output(base, corr, share):
    """Whatever the residual returns (huge, inf, NaN), the command moves off the base by at most
    share * scale in normalized units; a non-finite correction falls back to the base."""
    rt = _CAP_RT.get(str(base))
    if rt is None:
        rt = _CAP_RT.setdefault(str(base), ResidualRuntime(base, None, num_steps=2, seed=0))
    rt.max_residual_share = share
    from sim.arm_env import ArmEnv
    env = _CAP_ENV.setdefault("env", ArmEnv(task=TASK, dr=False, seed=0))
    obs, _ = env.reset(seed=1)
    rt.reset()
    rt.observe(obs, t=0.0)
    base_cmd = rt._base_cmd.copy()
    cmd = rt.compose(corr)
    st_ = rt.contract.action["normalization"]
    half_span = 0.5 * (np.asarray(st_["max"]) - np.asarray(st_["min"]))
    bound = share * rt.scale * half_span + 1e-9
    assert np.all(np.abs(cmd - base_cmd) <= bound)
    assert rt.last_residual_magnitude <= share * rt.scale + 1e-12
    if not np.all(np.isfinite(corr)):
        assert np.array_equal(cmd, base_cmd)


_CAP_RT: dict = {}
_CAP_ENV: dict = {}


def test_runtime_refuses_a_residual_trained_on_another_base(base, trained, tmp_path):
    _res, _ck, art = trained
    other = tmp_path / "other" / "policy.onnx"
    other.parent.mkdir()
    shutil.copy(base, other)
    shutil.copy(base.with_name(base.name + ".data"), other.with_name(other.name + ".data"))
    with open(other.with_name(other.name + ".data"), "ab") as f:
        f.write(b"\0")                      # still loadable; different weights file -> different hash
    with pytest.raises(ContractError) as e:
        ResidualRuntime(other, art)
    assert e.value.field == "extra.residual.base_sha256"
    ResidualRuntime(base, art)              # the right base is accepted


def test_contract_records_scale_base_hash_and_the_residual_graph(base, trained):
    _res, _ck, art = trained
    rt = ResidualRuntime(None, art)
    r = rt.residual_contract.extra["residual"]
    assert rt.residual_contract.policy_kind == "residual"
    assert r["scale"] == pytest.approx(0.1)
    assert r["base_sha256"] == artifact_sha256(base)
    assert r["base_num_steps"] == 2 and rt.num_steps == 2
    assert set(rt.residual_contract.graphs["residual"]["inputs"]) == {"obs", "base_action"}


def test_safety_filter_runs_on_the_sum_of_base_and_bounded_correction(base, trained):
    res, ck, art = trained
    assert res.env_steps == 32 and load_checkpoint(ck)["algo"] == "ppo"
    rt = ResidualRuntime(None, art, seed=3)
    _rollout(rt, seed=5, steps=3)                    # installs a real SafetyFilter, runs a few steps
    seen = []
    inner = rt.safety.filter
    rt.safety.filter = lambda cmd, t, state=None: seen.append(np.array(cmd)) or inner(cmd, t, state)
    from sim.arm_env import ArmEnv
    env = ArmEnv(task=TASK, dr=True, seed=5)
    obs, _ = env.reset(seed=5)
    st_ = state_from_obs(obs)
    rt.reset(state=st_, t=0.0)
    x = rt.observe(obs, t=0.0, state=st_)
    corr = np.full(8, 0.05)                          # a known correction, inside the bound
    rt.compose(corr)
    norm = rt.contract.action["normalization"]
    half_span = 0.5 * (np.asarray(norm["max"]) - np.asarray(norm["min"]))
    assert len(seen) == 1
    assert np.allclose(seen[0], rt._base_cmd + corr * half_span)
    assert np.all(np.abs(rt.residual(x)) <= 0.1 + 1e-6)


def test_ppo_keeps_the_checkpoint_best_on_held_out_validation_seeds(base, tmp_path):
    cfg = ResidualPPOConfig(task=TASK, num_envs=2, num_steps=8, total_steps=32, update_epochs=1, num_minibatches=2,
                            base_num_steps=2, init_log_std=0.5, learning_rate=1e-2, val_every=1, val_episodes=2)
    res = train_ppo(base, cfg, out=tmp_path / "residual.pt", log=lambda _line: None)
    vals = [r for r in res.history if "val_success" in r]
    assert [r["update"] for r in vals] == [1, 2]
    sel = load_checkpoint(tmp_path / "residual.pt")["selection"]
    assert sel["val_seeds"] == [50_000, 50_001] and 0.0 <= sel["base_val"] <= 1.0
    # the kept checkpoint is the best validation score seen (the base alone at update 0 included)
    assert sel["val_success"] == max([sel["base_val"]] + [r["val_success"] for r in vals])
    assert load_checkpoint(tmp_path / "residual_last.pt")["env_steps"] == 32
    if sel["update"] == 0:        # nothing beat the base: the kept residual is the zero-initialised one
        mu = load_checkpoint(tmp_path / "residual.pt")["actor_state"]["mu.weight"]
        assert float(mu.abs().max()) == 0.0


def test_sac_with_base_demonstrations_runs_and_checkpoints(base, tmp_path):
    cfg = ResidualSACConfig(task=TASK, num_envs=2, total_steps=24, demo_episodes=1, batch_size=16,
                            learning_starts=8, updates_per_step=0.5, base_num_steps=2, hidden=(32, 32))
    res = train_sac(base, cfg, out=tmp_path / "sac.pt", log=lambda _line: None)
    ck = load_checkpoint(tmp_path / "sac.pt")
    assert ck["algo"] == "sac" and res.env_steps == 24
    assert res.history[0]["demos"]["episodes"] >= 1
    export_residual(tmp_path / "sac.pt", tmp_path / "sac.onnx")
    assert ResidualRuntime(None, tmp_path / "sac.onnx").residual_contract.provenance["algo"] == "sac"


def test_expert_demonstrations_are_the_applied_bounded_correction(base):
    """``expert_corrections`` = clip((expert - base) / (span/2), +-scale); the env then executes exactly
    base + correction, so where the bound is not active the executed command IS the expert's."""
    from policies.residual_train import ResidualVecEnv

    venv = ResidualVecEnv(base, 1, task=TASK, safety=False, base_num_steps=2, scale=0.1, seed=4)
    venv.attach_experts()
    ex, rt, env = venv.experts[0], venv.rts[0], venv.envs[0]
    seen, sent = [], []
    ex_act, env_step = ex.act, env.step
    ex.act = lambda obs=None: seen.append(ex_act(obs)) or seen[-1]
    env.step = lambda cmd: sent.append(np.array(cmd)) or env_step(cmd)
    venv.reset()
    clipped = free = 0
    for _ in range(25):
        c = venv.expert_corrections()[0]
        base_cmd = rt._base_cmd.copy()
        venv.step(c[None])
        half = 0.5 * (np.asarray(rt._act_norm["max"]) - np.asarray(rt._act_norm["min"]))
        assert np.all(np.abs(c) <= 0.1 + 1e-12)
        live = half > 0                   # a zero-span axis (constant in the demos) cannot be corrected
        assert np.all(c[~live] == 0.0)
        np.testing.assert_allclose(c[live], np.clip((seen[-1] - base_cmd)[live] / half[live], -0.1, 0.1), atol=1e-9)
        np.testing.assert_allclose(sent[-1], base_cmd + c * half, atol=1e-9)
        inside = live & (np.abs(c) < 0.1 - 1e-9)
        np.testing.assert_allclose(sent[-1][inside], seen[-1][inside], atol=1e-6)
        clipped, free = clipped + int((live & ~inside).sum()), free + int(inside.sum())
    assert free > 0 and clipped > 0       # both regimes were exercised


def test_sac_with_expert_and_base_demos_and_validation_selection(base, tmp_path):
    cfg = ResidualSACConfig(task=TASK, num_envs=2, total_steps=24, demo_episodes=1, batch_size=16,
                            learning_starts=8, updates_per_step=0.5, base_num_steps=2, hidden=(32, 32),
                            demo_source="both", val_every_steps=12, val_episodes=2)
    res = train_sac(base, cfg, out=tmp_path / "residual.pt", log=lambda _line: None)
    demos = [r["demos"] for r in res.history if "demos" in r]
    assert [d["demos"] for d in demos] == ["base rollouts", "expert rollouts"]
    vals = [r for r in res.history if "val_success" in r]
    assert [r["env_steps"] for r in vals] == [12, 24]
    sel = res.selection
    assert sel["val_success"] == max([sel["base_val"]] + [r["val_success"] for r in vals])
    assert load_checkpoint(tmp_path / "residual_last.pt")["env_steps"] == 24
    assert load_checkpoint(tmp_path / "residual.pt")["algo"] == "sac"
    with pytest.raises(OnboardError, match="demo source"):
        ResidualSACConfig(demo_source="teleop").validate()


def test_cli_eval_reports_base_and_residual_side_by_side_on_the_same_seeds(trained, tmp_path, capsys):
    from onboard.cli import main

    _res, ck, _art = trained
    art = tmp_path / "cli_residual.onnx"
    assert main(["export", str(ck), "--out", str(art)]) == 0
    out = tmp_path / "ev"
    assert main(["eval", str(art), "--task", TASK, "--episodes", "2", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "base+residual" in text and "same seeds" in text
    rep = json.loads((out / "eval_report.json").read_text())
    base_row, res_row = rep["rows"]
    assert [e["seed"] for e in base_row["per_episode"]] == [e["seed"] for e in res_row["per_episode"]]
    assert all(e["residual_abs_max"] == 0.0 for e in base_row["per_episode"])
    assert all(len(e["residual_abs_per_step"]) == e["steps"] for e in res_row["per_episode"])
    assert all(e["residual_abs_max"] <= 0.1 + 1e-6 for e in res_row["per_episode"])
    assert (out / "eval_residual.png").is_file()
    # the cap is a safety parameter: at 0 the "residual" row is the base again
    assert main(["eval", str(art), "--task", TASK, "--episodes", "1", "--out", str(tmp_path / "ev0"),
                 "--max-residual-share", "0"]) == 0
    rep0 = json.loads((tmp_path / "ev0" / "eval_report.json").read_text())
    assert rep0["rows"][1]["per_episode"][0]["residual_abs_max"] == 0.0


def test_policy_node_loop_runs_a_residual_artifact_and_publishes_its_magnitude(trained):
    pytest.importorskip("rclpy")
    from ros_nodes.policy_node import RUNNING, PolicyLoop
    from tests.ros_tiny_artifact import PANDA

    _res, _ck, art = trained
    loop = PolicyLoop(str(art), max_residual_share=0.5)
    assert loop.ok, loop.error
    assert loop.rt.max_residual_share == 0.5
    loop.on_task_state({"target_pos": np.array([0.5, 0.0, 0.3])})
    names = list(PANDA.joint_names) + ["panda_finger_joint1", "panda_finger_joint2"]
    for k in range(5):
        loop.on_joint_state(names, list(PANDA.default_pose) + [0.02, 0.02], [0.0] * 9, stamp_s=0.1 * k,
                            receive_s=0.1 * k)
        out = loop.tick(0.1 * k + 0.001)
    assert out is not None and loop.status == RUNNING
    _level, _msg, values = loop.diagnostics(0.5)
    assert 0.0 <= values["residual_abs"] <= 0.5 * 0.1 + 1e-9
