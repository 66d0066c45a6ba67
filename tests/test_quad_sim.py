"""Quadrotor model, env, DR and baseline controller: specifications as tests (fast, real MuJoCo)."""
import math

import numpy as np
import pytest

from onboard.errors import ConfigError
from sim.quad_controllers import GeometricController
from sim.quad_env import OBS_DIM, OBS_SPEC, QuadEnv, QuadVecEnv, split_obs
from sim.quadrotor import GRAVITY_M_S2, QuadParams, QuadrotorBatch
from sim2real.quad_randomization import load_quad_dr_config


def test_nominal_figures_come_from_the_crazyflie_profile():
    p = QuadParams.from_profile()
    assert p.mass_kg == pytest.approx(0.027)
    assert p.kf == pytest.approx(3.16e-10)
    assert p.max_thrust_n == pytest.approx(2.25 * 0.027 * GRAVITY_M_S2)
    # four rotors at the hover speed carry the weight exactly
    assert 4 * p.kf * p.hover_rpm ** 2 == pytest.approx(p.weight_n)


def test_hover_thrust_equal_to_weight_holds_altitude():
    q = QuadrotorBatch(2, ground_effect=False)
    q.reset_drones(np.arange(2), [[0, 0, 1.0], [1.0, 0, 0.5]])
    q.set_command(np.full(2, q.nominal.weight_n), np.zeros((2, 3)))
    for _ in range(500):                                   # 1 s
        q.step()
    assert np.allclose(q.pos, [[0, 0, 1.0], [1.0, 0, 0.5]], atol=1e-6)
    assert np.allclose(q.rotor_thrusts().sum(1), q.nominal.weight_n, rtol=1e-9)


def test_thrust_above_weight_accelerates_up_at_the_expected_rate():
    q = QuadrotorBatch(1, ground_effect=False)
    q.drag[:] = 0.0                                        # thrust alone; drag has its own test
    q.body_drag[:] = 0.0
    q.reset_drones([0], [[0, 0, 1.0]])
    q.set_command([1.5 * q.nominal.weight_n], [[0, 0, 0]])
    for _ in range(100):                                   # 0.2 s, long after the 20 ms motor lag
        q.step()
    v0 = q.vel[0, 2]
    for _ in range(50):
        q.step()
    acc = (q.vel[0, 2] - v0) / (50 * q.dt_s)
    assert acc == pytest.approx(0.5 * GRAVITY_M_S2, rel=1e-3)


def test_drag_opposes_the_air_velocity_and_wind_pushes_the_drone_downwind():
    q = QuadrotorBatch(1, ground_effect=False)
    q.reset_drones([0], [[0, 0, 1.0]])
    q.wind_m_s[:] = [2.0, 0.0, 0.0]
    q.apply_forces()
    f = q.data.xfrc_applied[q.body_ids[0], :3]
    assert f[0] > 0 and abs(f[1]) < 1e-12


def test_motor_lag_reaches_63_percent_of_a_step_after_one_time_constant():
    q = QuadrotorBatch(1, ground_effect=False)
    q.set_plant([0], motor_tau_s=0.02)
    q.reset_drones([0], [[0, 0, 1.0]])
    rpm0 = q.rpm[0].copy()
    q.set_command([1.5 * q.nominal.weight_n], [[0, 0, 0]])
    steps = int(round(0.02 / q.dt_s))
    for _ in range(steps):
        q.step()
    target = q.rpm_cmd[0]
    frac = (q.rpm[0] - rpm0) / (target - rpm0)
    assert np.allclose(frac, 1 - math.exp(-1), atol=0.01)


def test_rate_loop_tracks_a_body_rate_step():
    q = QuadrotorBatch(1, ground_effect=False)
    q.reset_drones([0], [[0, 0, 1.0]])
    q.set_command([q.nominal.weight_n], [[1.0, 0, 0]])
    rates = []
    for _ in range(100):                                   # 0.2 s
        q.step()
        rates.append(q.omega_body[0].copy())
    rates = np.array(rates)
    assert abs(rates[-1, 0] - 1.0) < 0.05
    assert rates[:, 0].max() < 1.3                         # bounded overshoot
    assert np.abs(rates[:, 1:]).max() < 0.05               # no cross-coupling into pitch/yaw


def test_obs_spec_documents_every_observation_value_with_units():
    env = QuadVecEnv(2, task="hover")
    obs, _ = env.reset(seed=0)
    assert obs.shape == (2, OBS_DIM) and obs.dtype == np.float32
    assert sum(k["shape"][0] for k in env.obs_spec) == OBS_DIM
    assert all(k["units"] for k in OBS_SPEC)
    a = env.action_spec
    assert a["physical_max"][0] == pytest.approx(env.max_thrust_n)
    cmd = env.action_to_command(env.hover_action[None])
    assert cmd[0, 0] == pytest.approx(env.sim.nominal.weight_n)


def test_action_delay_is_a_true_fifo_delay():
    env = QuadVecEnv(1, task="hover")
    env.reset(seed=0)
    env.set_disturbances([0], action_delay_steps=[7])
    seen = []
    orig = env.sim.set_command

    def spy(thrust, rates):
        seen.append(float(thrust[0]))
        orig(thrust, rates)
    env.sim.set_command = spy
    env.step(np.array([[0.5, 0, 0, 0]]))
    env.step(np.array([[0.5, 0, 0, 0]]))
    new = env.action_to_command(np.array([[0.5, 0, 0, 0]]))[0, 0]
    # the new command reaches the rate loop exactly 7 physics steps later, unchanged (no filtering)
    assert seen[:7] == [pytest.approx(env.sim.nominal.weight_n)] * 7
    assert seen[7:] == [pytest.approx(new)] * 3


def test_same_seed_gives_the_same_randomized_episode_and_a_new_seed_does_not():
    def rollout(seed):
        env = QuadVecEnv(2, task="track", dr=True, seed=seed)
        ctl = GeometricController.for_env(env)
        obs, _ = env.reset()
        out = [obs]
        for _ in range(30):
            obs, *_ = env.step(ctl.act(split_obs(obs)))
            out.append(obs)
        return np.array(out), env.sim.kf.copy(), env.action_delay_steps.copy()
    a, kf_a, d_a = rollout(3)
    assert not np.array_equal(a[1:, :, :3], rollout(4)[0][1:, :, :3])   # noise streams differ too
    b, kf_b, _ = rollout(3)
    c, kf_c, _ = rollout(4)
    assert np.array_equal(a, b) and np.array_equal(kf_a, kf_b)
    assert not np.array_equal(kf_a, kf_c)
    nominal = QuadParams.from_profile().kf
    assert np.all((kf_a >= 0.9 * nominal) & (kf_a <= 1.1 * nominal))
    assert np.all((d_a >= 0) & (d_a <= 10))               # 0-20 ms at 2 ms per physics step


def test_dr_config_errors_name_the_file_and_the_field(tmp_path):
    bad = tmp_path / "dr.yaml"
    bad.write_text("physics:\n  mass_scale: [1.2, 0.8]\n")
    with pytest.raises(ConfigError) as e:
        load_quad_dr_config(bad)
    assert "physics.mass_scale" in str(e.value) and str(bad) in str(e.value)
    bad.write_text("wind:\n  gusts: 3\n")
    with pytest.raises(ConfigError, match="wind.gusts"):
        load_quad_dr_config(bad)


def _fly_baseline(task, trajectory, dr, n, seed):
    env = QuadVecEnv(n, task=task, trajectory=trajectory, dr=dr, seed=seed)
    ctl = GeometricController.for_env(env)
    obs, _ = env.reset()
    rmse, crash = np.full(n, np.nan), np.zeros(n, bool)
    for _ in range(env.max_steps):
        obs, _, _, _, info = env.step(ctl.act(split_obs(obs)))
        if "done_idx" in info:
            for j, i in enumerate(info["done_idx"]):
                if np.isnan(rmse[i]):
                    rmse[i], crash[i] = info["episode_rmse_m"][j], info["crash"][i]
            ctl.reset(info["done_idx"])
    return rmse, crash, env


def test_baseline_controller_settles_on_a_hover_setpoint():
    env = QuadVecEnv(4, task="hover", seed=1)
    ctl = GeometricController.for_env(env)
    obs, _ = env.reset()
    for _ in range(400):                                   # 4 s of the 5 s episode
        obs, *_ = env.step(ctl.act(split_obs(obs)))
    assert np.linalg.norm(env.true_reference_error(), axis=1).max() < 0.02


def test_baseline_controller_flies_the_figure8_under_dr_without_crashing():
    rmse, crash, _ = _fly_baseline("track", "figure8", True, 4, seed=11)
    assert not crash.any()
    assert np.all(rmse < 0.45) and rmse.mean() < 0.25


def test_gym_env_returns_named_observations_and_stops_at_the_end():
    env = QuadEnv(task="hover", episode_s=0.05)
    obs, _ = env.reset(seed=0)
    assert set(obs) == {k["name"] for k in OBS_SPEC}
    done = False
    for _ in range(5):
        obs, r, term, trunc, info = env.step(env.vec.hover_action)
        done = term or trunc
    assert done and trunc
