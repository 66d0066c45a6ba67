"""Quadrotor pipeline through the one runtime: CLI train -> export -> eval -> sim2sim, the MLP path of
PolicyRuntime (no torch), and the independent PyBullet plant (real MuJoCo, real PyBullet, real ORT)."""
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from onboard.cli import main
from onboard.errors import OnboardError

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def artifact(tmp_path_factory):
    """A tiny residual PPO trained, then exported, through the CLI (a few PPO updates)."""
    from quad_tiny import session_quad_artifact
    return session_quad_artifact(tmp_path_factory)


def _obs1(rng=None):
    from sim.quad_env import QuadVecEnv, split_obs
    env = QuadVecEnv(1, task="hover", dr=False, seed=3)
    obs, _ = env.reset()
    return {k: v[0].copy() for k, v in split_obs(obs).items()}


def test_the_runtime_runs_a_residual_artifact_and_records_its_baseline_and_envelope(artifact):
    from policies.runtime import PolicyRuntime
    rt = PolicyRuntime(artifact)
    c = rt.contract
    assert rt.kind == "mlp" and c.policy_kind == "residual"
    assert c.extra["residual"]["baseline"] == "sim.quad_controllers.GeometricController"
    assert c.safety_envelope["name"] == "crazyflie2x_figure8"      # trained on track: the tracking envelope
    cmd = rt.act(_obs1())
    lo, hi = c.action["normalization"]["min"], c.action["normalization"]["max"]
    assert cmd.shape == (4,) and np.all(cmd >= np.array(lo) - 1e-6) and np.all(cmd <= np.array(hi) + 1e-6)


def test_single_and_batched_runtime_calls_give_the_same_commands(artifact):
    from policies.runtime import PolicyRuntime
    obs = _obs1()
    one = PolicyRuntime(artifact)
    many = PolicyRuntime(artifact, num_envs=3)
    batch = {k: np.tile(v, (3, 1)) for k, v in obs.items()}
    for _ in range(3):      # the baseline's integrator advances identically
        a = one.act(obs)
        b = many.act_batch(batch)
        np.testing.assert_allclose(b, np.tile(a, (3, 1)), atol=1e-6)


def test_residual_command_stays_within_the_bound_around_the_baseline(artifact):
    from policies.runtime import PolicyRuntime
    from sim.quad_controllers import GeometricController, GeometricGains
    rt = PolicyRuntime(artifact)
    r = rt.contract.extra["residual"]
    ctl = GeometricController(r["mass_kg"], r["max_thrust_n"], r["dt_s"], 1,
                              GeometricGains(**{k: np.asarray(v) if isinstance(v, list) else v
                                                for k, v in r["gains"].items()}))
    rng = np.random.default_rng(0)
    for _ in range(20):
        obs = {k: v + rng.normal(0, 0.3, v.shape).astype(np.float32) for k, v in _obs1().items()}
        base = ctl.act({k: v[None].astype(float) for k, v in obs.items()})[0]
        a = rt.to_normalized(rt.act(obs))
        assert np.all(np.abs(a - base) <= r["scale"] + 1e-5)


def test_a_nonfinite_observation_never_reaches_the_policy_and_the_filter_holds(artifact):
    from onboard.spec import load_robot
    from policies.runtime import PolicyRuntime
    from sim2real.safety import SafetyFilter
    f = SafetyFilter.for_robot(load_robot("crazyflie2x"), dt_s=0.01)
    rt = PolicyRuntime(artifact, safety=f)
    st = {"pos": np.array([0, 0, 1.0]), "vel": np.zeros(3), "rpy": np.zeros(3)}
    rt.reset(st, 0.0)
    obs = _obs1()
    rt.act(obs, t=0.0, state=st)
    obs["vel_m_s"] = np.array([np.nan, 0, 0], np.float32)
    chunks = rt.stats["chunks"]
    cmd = rt.act(obs, t=0.01, state=st)
    assert np.all(np.isfinite(cmd)) and rt.stats["nonfinite_obs"] == 1
    assert rt.stats["chunks"] == chunks + 1   # batched rows run, but the bad row's output is discarded
    with pytest.raises(OnboardError, match="observation.rot6d"):
        rt.act({k: v for k, v in obs.items() if k != "rot6d"})


def test_the_runtime_runs_a_quadrotor_artifact_where_torch_cannot_be_imported(artifact):
    script = textwrap.dedent(f"""
        import sys
        class NoTorch:
            def find_spec(self, name, path=None, target=None):
                if name == "torch" or name.startswith("torch."):
                    raise ImportError("torch is not available on the robot")
                return None
        sys.meta_path.insert(0, NoTorch())
        import numpy as np
        from policies.runtime import PolicyRuntime
        rt = PolicyRuntime({str(artifact)!r})
        obs = {{"pos_error_m": np.zeros(3), "vel_m_s": np.zeros(3), "rot6d": np.array([1., 0, 0, 0, 1, 0]),
               "body_rates_rad_s": np.zeros(3), "ref_vel_m_s": np.zeros(3), "ref_acc_m_s2": np.zeros(3),
               "last_action": np.array([-0.11, 0, 0, 0])}}
        cmds = [rt.act(obs) for _ in range(5)]
        assert all(np.isfinite(c).all() for c in cmds)
        assert not any(m == "torch" or m.startswith("torch.") for m in sys.modules), "torch was imported"
        print("ok", cmds[-1].shape)
    """)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, cwd=ROOT, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "ok (4,)" in r.stdout


def test_cli_eval_reports_rmse_crashes_and_interventions_through_the_runtime(artifact, capsys, tmp_path):
    assert main(["eval", str(artifact), "--task", "quad_hover", "--episodes", "2", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "baseline" in out and "quad.onnx" in out and "crashes 0/2" in out
    assert "interventions" in out and "ramp_in=" in out
    import json
    rows = json.loads((tmp_path / "eval_report.json").read_text())["rows"]
    assert [r["episodes"] for r in rows] == [2, 2] and rows[1]["safety_filter"].endswith("crazyflie2x_figure8.yaml")


def test_cli_sim2sim_reports_the_rmse_ratio_between_mujoco_and_pybullet(artifact, capsys, tmp_path):
    assert main(["sim2sim", str(artifact), "--task", "quad_hover", "--episodes", "2", "--out", str(tmp_path)]) == 0
    import json
    rep = json.loads((tmp_path / "sim2sim_report.json").read_text())
    p = rep["policy"]
    assert p["mujoco"]["plant"] == "mujoco" and p["pybullet"]["plant"] == "pybullet"
    assert p["rmse_ratio_pybullet_over_mujoco"] == pytest.approx(p["pybullet"]["rmse_m_mean"] / p["mujoco"]["rmse_m_mean"])
    assert "ratio" in capsys.readouterr().out


def test_cli_refuses_bad_quadrotor_arguments_with_exit_2(artifact, tmp_path):
    assert main(["train", "--policy", "ppo", "--task", "flip", "--out", str(tmp_path)]) == 2
    assert main(["eval", str(artifact), "--task", "quad_loop", "--episodes", "1"]) == 2
    assert main(["train", "--out", str(tmp_path)]) == 2          # diffusion still needs --dataset


# ---- the independent PyBullet plant ---------------------------------------------------------------

def test_pybullet_hover_thrust_equal_to_weight_holds_altitude():
    from sim.quad_pybullet import PyBulletQuadBatch
    q = PyBulletQuadBatch(2, ground_effect=False)
    q.reset_drones(np.arange(2), np.array([[0, 0, 1.0], [1.0, 0, 0.5]]))
    q.set_command(np.full(2, q.nominal.weight_n), np.zeros((2, 3)))
    for _ in range(500):
        q.step()
    assert np.allclose(q.pos, [[0, 0, 1.0], [1.0, 0, 0.5]], atol=1e-4)
    assert np.allclose(q.kf[:, None] * q.rpm**2, q.nominal.weight_n / 4, rtol=1e-6)
    q.close()


def test_pybullet_and_mujoco_plants_agree_on_a_thrust_step_and_a_rate_step():
    from sim.quad_pybullet import PyBulletQuadBatch
    from sim.quadrotor import QuadrotorBatch
    out = []
    for Plant in (QuadrotorBatch, PyBulletQuadBatch):
        q = Plant(1, ground_effect=False)
        q.reset_drones(np.array([0]), np.array([[0, 0, 1.0]]))
        q.set_command(np.array([1.3 * q.nominal.weight_n]), np.array([[0.8, 0.0, 0.0]]))
        for _ in range(100):
            q.step()
        out.append((q.pos[0].copy(), q.omega_body[0].copy()))
    (p_m, w_m), (p_b, w_b) = out
    assert np.allclose(w_m, w_b, atol=0.05) and abs(w_b[0] - 0.8) < 0.05
    assert np.allclose(p_m, p_b, atol=0.01)


def test_pybullet_env_draws_the_same_seeded_task_and_the_baseline_settles_on_it():
    from sim.quad_controllers import GeometricController
    from sim.quad_env import QuadVecEnv, split_obs
    a, b = QuadVecEnv(2, task="hover", dr=True, seed=7, plant="pybullet"), QuadVecEnv(2, task="hover", dr=True, seed=7)
    a.reset(), b.reset()
    assert np.allclose(a._center, b._center) and np.allclose(a.sim.kf, b.sim.kf)   # same task and DR draw
    env = QuadVecEnv(2, task="hover", dr=False, seed=7, plant="pybullet")
    obs, _ = env.reset()
    ctl = GeometricController.for_env(env)
    for _ in range(300):
        obs, _, term, _, info = env.step(ctl.act(split_obs(obs)))
        assert not term.any()
    assert np.all(np.abs(env.true_reference_error()) < 0.05)
    with pytest.raises(Exception, match="plant"):
        QuadVecEnv(1, plant="gazebo")
