"""Domain randomization: reproducible draws, a true action delay, and config errors that name the field."""
import numpy as np
import pytest

from onboard.errors import ConfigError
from sim.arm_env import ArmEnv
from sim2real.randomization import DRConfig, load_dr_config


def _params(env):
    m, ix = env.model, env.ix
    return np.concatenate([m.body_mass[[ix.object_body_id]], m.geom_size[ix.object_geom_id],
                           m.geom_friction[ix.object_geom_id], m.dof_damping[ix.arm_dof_adr],
                           m.dof_armature[ix.arm_dof_adr], m.dof_frictionloss[ix.arm_dof_adr],
                           m.actuator_gainprm[ix.arm_actuator_ids, 0]])


def _rollout(env, seed, n=15):
    obs, info = env.reset(seed=seed)
    traj = []
    q = obs["joint_pos"].copy()
    for k in range(n):
        a = np.concatenate([q + 0.02 * np.sin(0.3 * k), [0.04]])
        obs, *_ = env.step(a)
        traj.append(np.concatenate([obs["joint_pos"], obs["object_pos"]]))
    return _params(env), info["action_delay_steps"], np.array(traj)


def test_same_seed_gives_identical_draws_and_trajectories():
    a = _rollout(ArmEnv("push", dr=True, seed=0), seed=7)
    b = _rollout(ArmEnv("push", dr=True, seed=0), seed=7)
    np.testing.assert_array_equal(a[0], b[0])
    assert a[1] == b[1]
    np.testing.assert_array_equal(a[2], b[2])


def test_different_seeds_give_different_physics():
    env = ArmEnv("push", dr=True, seed=0)
    a = _rollout(env, seed=1)
    b = _rollout(env, seed=2)
    assert not np.allclose(a[0], b[0])
    assert not np.allclose(a[2], b[2])


def test_randomization_never_compounds_across_episodes():
    env = ArmEnv("push", dr=True, seed=0)
    env.reset(seed=5)
    first = _params(env)
    for s in range(6):
        env.reset(seed=100 + s)
    env.reset(seed=5)
    np.testing.assert_array_equal(_params(env), first)


def test_dr_off_keeps_nominal_physics():
    env = ArmEnv("push", dr=False, seed=0)
    env.reset(seed=1)
    p1 = _params(env)
    env.reset(seed=2)
    np.testing.assert_array_equal(p1, _params(env))


@pytest.mark.parametrize("delay", [0, 1, 3])
def test_action_latency_is_a_true_delay_of_whole_control_steps(delay):
    cfg = DRConfig(sections={"latency": {"action_delay_steps": (delay, delay)}})
    env = ArmEnv("reach", dr=cfg, seed=0)
    obs, info = env.reset(seed=0)
    assert info["action_delay_steps"] == delay
    hold = np.concatenate([obs["joint_pos"], obs["gripper_width"]])
    stepped = hold.copy()
    stepped[0] += 0.2
    applied = []
    for k in range(delay + 3):
        _, _, _, _, info = env.step(stepped if k == 0 else hold)
        applied.append(info["applied_action"][0])
    # The step command reaches the actuators exactly `delay` control steps later, unchanged
    # (a FIFO, not a low-pass filter), and only for one step.
    expected = [hold[0]] * (delay + 3)
    expected[delay] = stepped[0]
    np.testing.assert_allclose(applied, expected)
    assert env.data.ctrl[env.ix.arm_actuator_ids[0]] == pytest.approx(hold[0])


@pytest.mark.parametrize("task", ["reach", "push", "pick_place"])
def test_shipped_dr_configs_load(task):
    cfg = load_dr_config(robot="franka_panda", task=task)
    assert cfg.get("actuator", "kp_scale")[0] < cfg.get("actuator", "kp_scale")[1]


@pytest.mark.parametrize("text,field", [
    ("object:\n  mass_scale: [1.3, 0.7]\n", "object.mass_scale"),
    ("object:\n  mass_scale: heavy\n", "object.mass_scale"),
    ("joints:\n  dampin_scale: [0.8, 1.2]\n", "joints.dampin_scale"),
    ("latency:\n  action_delay_steps: [0, 1.5]\n", "latency.action_delay_steps"),
    ("observation_noise:\n  joint_pos: -0.1\n", "observation_noise.joint_pos"),
    ("wind: {speed: [0, 1]}\n", "wind"),
    ("object: [1, 2\n", "line"),
])
def test_malformed_dr_yaml_error_names_the_file_and_the_field(tmp_path, text, field):
    path = tmp_path / "bad_dr.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_dr_config(path)
    assert str(path) in str(err.value) and field in str(err.value)
    with pytest.raises(ConfigError):
        ArmEnv("push", dr=path)
