"""G1 legs: model sanity, DR reproducibility, the deployment state machine, train -> export -> evaluate."""
import json
import math

import mujoco
import numpy as np
import pytest

from onboard.errors import ConfigError
from onboard.spec import load_robot
from sim.g1_model import RobotIndex, build_model, load_description, pd_torque, standing_height_m
from sim.humanoid_env import CRITIC_DIM, FRAME_DIM, HumanoidVecEnv
from sim2real.humanoid_randomization import draw, load_humanoid_dr_config
from sim2real.humanoid_supervisor import ACTIVE, DAMPING, RAMP, ZERO_TORQUE, HumanoidSupervisor
from sim2real.safety import SafetyFilter


# ------------------------------------------------------------------ model
def test_description_matches_the_robot_profile():
    desc, prof = load_description(), load_robot("g1_12dof")
    assert desc.joint_names == prof.joint_names
    assert np.allclose(desc.default_pose, prof.default_pose)
    assert np.allclose(desc.torque_limit, prof.limits.torque)
    assert np.allclose(desc.joint_range, prof.limits.position)
    assert np.allclose(desc.kp, prof.raw["pd_gains"]["kp"]) and np.allclose(desc.kd, prof.raw["pd_gains"]["kd"])
    assert desc.total_mass_kg == pytest.approx(32.107, abs=1e-3)


def test_model_has_twelve_torque_limited_hinges_and_four_contact_spheres_per_foot():
    desc = load_description()
    m = build_model(2, desc)
    ix = RobotIndex.of(m, 2, desc)
    assert m.nu == 24 and m.nq == 2 * 19
    assert np.allclose(m.actuator_ctrlrange[ix.actuator[0], 1], desc.torque_limit)
    assert m.opt.timestep == pytest.approx(0.002)
    assert ix.foot_geoms.shape == (2, 2, 4)
    assert np.allclose(m.geom_size[ix.foot_geoms.ravel(), 0], 0.005)
    assert m.body_mass[ix.body_ids[0]].sum() == pytest.approx(desc.total_mass_kg)


def _contact_pairs(m, d) -> set:
    name = lambda g: mujoco.mj_id2name(m, mujoco.mjtObj.mjOBJ_GEOM, g) or "floor"  # noqa: E731
    return {tuple(sorted((name(d.contact.geom1[i]), name(d.contact.geom2[i])))) for i in range(d.ncon)}


def test_legs_have_collision_hulls_so_one_leg_cannot_pass_through_the_other():
    """The hulls (thigh, shank, sole; assumed sizes) touch the other leg's hulls only: legs rolled inward
    collide, the standing pose has no hull contact, and a robot sunk into the floor has no hull-floor contact
    (the feet touch the floor through their four spheres alone)."""
    desc = load_description()
    for hulls in (True, False):
        m = build_model(1, desc, leg_hulls=hulls)
        d = mujoco.MjData(m)
        q = np.r_[0.0, 0.0, standing_height_m() + 0.002, 1.0, 0.0, 0.0, 0.0, desc.default_pose]
        d.qpos[:] = q
        mujoco.mj_forward(m, d)
        assert not any("hull" in a + b for a, b in _contact_pairs(m, d))           # standing: none
        d.qpos[7 + 1], d.qpos[7 + 7] = -0.5, 0.5                                     # both hip rolls inward
        mujoco.mj_forward(m, d)
        pairs = _contact_pairs(m, d)
        crossing = {p for p in pairs if "left" in p[0] + p[1] and "right" in p[0] + p[1]}
        assert bool(crossing) == hulls and all("hull" in a and "hull" in b for a, b in crossing)
        d.qpos[:] = q
        d.qpos[2] = 0.3                                                              # sunk into the floor
        mujoco.mj_forward(m, d)
        assert not any("hull" in a + b and "floor" in a + b for a, b in _contact_pairs(m, d))
    m = build_model(1, desc)
    names = [mujoco.mj_id2name(m, mujoco.mjtObj.mjOBJ_GEOM, g) or "" for g in range(m.ngeom)]
    assert sum("hull" in n for n in names) == 6                                     # thigh, shank, sole per leg


def _hold_default_pose(gain_scale, seconds=5.0):
    """PD (500 Hz, torque-limited) toward the default pose; returns (fell_at_s or None, final qpos)."""
    desc = load_description()
    m = build_model(1, desc)
    d = mujoco.MjData(m)
    ix = RobotIndex.of(m, 1, desc)
    d.qpos[ix.qpos_base[0]] = [0, 0, standing_height_m() + 0.002, 1, 0, 0, 0]
    d.qpos[ix.qpos_joint[0]] = desc.default_pose
    kp, kd = desc.kp * gain_scale[0], desc.kd * gain_scale[1]
    for k in range(int(seconds / 0.002)):
        q, dq = d.qpos[ix.qpos_joint[0]], d.qvel[ix.qvel_joint[0]]
        d.ctrl[ix.actuator[0]] = pd_torque(desc.default_pose, q, dq, kp, kd, desc.torque_limit)
        mujoco.mj_step(m, d)
        if d.qpos[ix.qpos_base[0][2]] < 0.6:
            return k * 0.002, d.qpos.copy()
    return None, d.qpos.copy()


def test_robot_stands_under_stiff_pd_at_the_default_pose_for_5_s():
    """Model sanity (inertials, axes, ranges, feet): a stiff PD holds the default pose for 5 s."""
    desc = load_description()
    fell_at, qpos = _hold_default_pose((10.0, 5.0))
    assert fell_at is None
    quat = qpos[3:7]
    assert 2 * math.acos(min(1.0, abs(quat[0]))) < 0.1 and qpos[2] > 0.75
    assert np.abs(qpos[7:] - desc.default_pose).max() < 0.05
    assert np.linalg.norm(qpos[:2]) < 0.05      # it did not walk away


def test_profile_pd_gains_alone_cannot_hold_the_stance_so_balance_needs_the_policy():
    """Measured fact: the CoM sits ~4.6 cm ahead of the ankles at the default pose and the ankles'
    kp (2 x 40 N m/rad) is below the toppling stiffness m g h (~220 N m/rad): pure PD tips forward."""
    fell_at, qpos = _hold_default_pose((1.0, 1.0))
    assert fell_at is not None and fell_at < 3.0


def test_urdf_loads_in_pybullet_with_the_same_joints_and_mass(tmp_path):
    pb = pytest.importorskip("pybullet")
    from sim.g1_urdf import write_g1_urdf
    desc = load_description()
    path = write_g1_urdf(tmp_path / "g1.urdf")
    c = pb.connect(pb.DIRECT)
    try:
        r = pb.loadURDF(str(path), [0, 0, 1], flags=pb.URDF_USE_INERTIA_FROM_FILE, physicsClientId=c)
        names = [pb.getJointInfo(r, j, physicsClientId=c)[1].decode() for j in range(pb.getNumJoints(r, physicsClientId=c))]
        assert names == list(desc.joint_names)
        mass = sum(pb.getDynamicsInfo(r, j, physicsClientId=c)[0] for j in range(-1, 12))
        assert mass == pytest.approx(desc.total_mass_kg, abs=1e-6)
        lim = [pb.getJointInfo(r, j, physicsClientId=c)[8:11] for j in range(12)]
        assert np.allclose([l[:2] for l in lim], desc.joint_range)
        assert np.allclose([l[2] for l in lim], desc.torque_limit)
    finally:
        pb.disconnect(c)



def test_pybullet_twin_has_the_same_leg_hulls_as_mujoco():
    """The twin's leg hulls (URDF collision shapes, self-collision filtered per link pair) are MuJoCo's: the
    same leg-leg penetration depth as the legs roll or yaw into each other (first centimetres of overlap: deep
    overlaps, which the contact forces never allow, are reported differently), none standing, none without
    hulls, and a robot sunk into the floor touches it with its feet only."""
    pb = pytest.importorskip("pybullet")
    from sim.g1_pybullet import G1PyBulletEnv
    desc = load_description()
    m = build_model(1, desc)
    d = mujoco.MjData(m)
    name = lambda g: mujoco.mj_id2name(m, mujoco.mjtObj.mjOBJ_GEOM, g) or ""  # noqa: E731

    def depth_mujoco(q):
        d.qpos[:] = np.r_[0, 0, 1.0, 1, 0, 0, 0, q]
        mujoco.mj_forward(m, d)
        return min([d.contact.dist[i] for i in range(d.ncon)
                    if "hull" in name(d.contact.geom1[i]) and "hull" in name(d.contact.geom2[i])], default=0.0)

    for hulls in (True, False):
        env = G1PyBulletEnv(pushes=False, leg_hulls=hulls)
        try:
            env.reset()
            c, r = env.client, env.robot

            def depth_pybullet(q):
                for j in range(12):
                    pb.resetJointState(r, j, q[j], 0.0, physicsClientId=c)
                pb.performCollisionDetection(physicsClientId=c)
                cps = [p for p in pb.getContactPoints(r, r, physicsClientId=c)]
                assert all(min(p[3], p[4]) >= 0 and (p[3] < 6) != (p[4] < 6) for p in cps)   # leg against leg
                return min([p[8] for p in cps], default=0.0)

            assert depth_pybullet(desc.default_pose) == 0.0
            depths = []
            for joints, signs, angles in (((1, 7), (-1, 1), (0.15, 0.2)), ((2, 8), (1, -1), (0.35, 0.4, 0.45))):
                for a in angles:                                                  # hip roll, hip yaw inward
                    q = desc.default_pose.copy()
                    q[list(joints)] += a * np.array(signs)
                    depths.append((depth_pybullet(q), depth_mujoco(q)))
            depths = np.array(depths)
            if hulls:
                assert (depths[:, 0] < -0.02).sum() >= 4
                assert np.allclose(depths[:, 0], depths[:, 1], atol=1e-3)
            else:
                assert np.all(depths[:, 0] == 0.0)
            for j in range(12):
                pb.resetJointState(r, j, desc.default_pose[j], 0.0, physicsClientId=c)
            pos, orn = pb.getBasePositionAndOrientation(r, physicsClientId=c)
            pb.resetBasePositionAndOrientation(r, [pos[0], pos[1], pos[2] - 0.45], orn, physicsClientId=c)
            pb.performCollisionDetection(physicsClientId=c)
            links = {pb.getJointInfo(r, p[4], physicsClientId=c)[12].decode() if p[4] >= 0 else "pelvis"
                     for p in pb.getContactPoints(env.floor, r, physicsClientId=c)}
            assert links == {"left_ankle_roll_link", "right_ankle_roll_link"}
        finally:
            env.close()


def _pybullet_inverse_inertia(fold: bool, q: np.ndarray, tmp_path) -> np.ndarray:
    """(12, 12) M^-1 of the fixed-base legs measured by PyBullet's forward dynamics: a unit torque on one
    joint from rest, no gravity, one step, dq / dt."""
    import pybullet as pb
    from sim.g1_pybullet import load_g1
    from sim.g1_urdf import write_g1_urdf
    c, dt = pb.connect(pb.DIRECT), 1e-4
    try:
        pb.setGravity(0, 0, 0, physicsClientId=c)
        pb.setTimeStep(dt, physicsClientId=c)
        urdf = write_g1_urdf(tmp_path / f"g1_{fold}.urdf", fold_armature=fold)
        r = (load_g1(pb, c, urdf, [0, 0, 1], fixed_base=True) if fold else
             pb.loadURDF(str(urdf), [0, 0, 1], useFixedBase=True, flags=pb.URDF_USE_INERTIA_FROM_FILE, physicsClientId=c))
        for j in range(12):
            pb.changeDynamics(r, j, linearDamping=0, angularDamping=0, jointDamping=0, physicsClientId=c)
            pb.setJointMotorControl2(r, j, pb.VELOCITY_CONTROL, force=0, physicsClientId=c)
        cols = []
        for k in range(12):
            for j in range(12):
                pb.resetJointState(r, j, q[j], 0.0, physicsClientId=c)
            pb.setJointMotorControlArray(r, list(range(12)), pb.TORQUE_CONTROL, forces=np.eye(12)[k].tolist(),
                                         physicsClientId=c)
            pb.stepSimulation(physicsClientId=c)
            cols.append([s[1] / dt for s in pb.getJointStates(r, range(12), physicsClientId=c)])
        return np.array(cols).T
    finally:
        pb.disconnect(c)


def test_pybullet_twin_folds_the_armature_so_its_joints_answer_torques_as_in_mujoco(tmp_path):
    """PyBullet has no armature (0.01 kg m^2 per joint in MuJoCo). Without it the plain URDF's joint-space
    inertia lacks exactly that on every joint, and the light ankles accelerate 6-33x faster than in MuJoCo;
    the twin folds it into the links and comes within 30% on every joint."""
    pytest.importorskip("pybullet")
    desc = load_description()
    lo, hi = desc.joint_range.T
    q = np.clip(desc.default_pose + np.random.default_rng(0).uniform(-0.3, 0.3, 12), lo + 0.05, hi - 0.05)
    m = build_model(1, desc)
    d = mujoco.MjData(m)
    ix = RobotIndex.of(m, 1, desc)
    d.qpos[ix.qpos_base[0]] = [0, 0, 1.0, 1, 0, 0, 0]
    d.qpos[ix.qpos_joint[0]] = q
    mujoco.mj_forward(m, d)
    full = np.zeros((m.nv, m.nv))
    mujoco.mj_fullM(m, d, full)
    m_mj = full[np.ix_(ix.qvel_joint[0], ix.qvel_joint[0])]     # fixed base: the joint block
    plain = _pybullet_inverse_inertia(False, q, tmp_path)
    assert np.allclose(np.diag(np.linalg.inv(plain)), np.diag(m_mj) - desc.armature, atol=1e-4)
    ratio_plain = np.diag(plain) / np.diag(np.linalg.inv(m_mj))
    assert ratio_plain.max() > 5.0                               # the ankles, far too fast
    ratio = np.diag(_pybullet_inverse_inertia(True, q, tmp_path)) / np.diag(np.linalg.inv(m_mj))
    assert np.all(ratio > 0.95) and np.all(ratio < 1.3), ratio


# ------------------------------------------------------------------ env and DR
def test_env_observation_is_47_per_frame_with_history_and_a_privileged_critic_view():
    env = HumanoidVecEnv(3, task="stand", history=4, seed=0)
    obs, info = env.reset()
    assert FRAME_DIM == 47 and obs.shape == (3, 4 * 47) and info["critic_obs"].shape == (3, CRITIC_DIM)
    parts = env.split_obs(obs)
    assert [k["name"] for k in env.obs_spec] == list(parts)
    assert parts["projected_gravity"].shape == (3, 12)
    assert np.allclose(parts["projected_gravity"][:, -1], -1.0, atol=1e-3)    # upright: gravity along -z
    obs, r, term, trunc, info = env.step(np.zeros((3, 12)))
    assert np.all(np.isfinite(obs)) and not term.any()


def test_dr_draws_are_reproducible_for_a_seed_and_differ_across_seeds():
    def rollout(seed):
        env = HumanoidVecEnv(2, task="stand", dr=True, seed=seed)
        env.reset()
        for _ in range(20):
            obs, *_ = env.step(np.full((2, 12), 0.1))
        return obs, env.kp.copy(), env.friction.copy(), env.action_delay_steps.copy()
    a, b, c = rollout(3), rollout(3), rollout(4)
    for x, y in zip(a, b):
        assert np.array_equal(x, y)
    assert not np.array_equal(a[1], c[1])



def test_gantry_starts_hold_the_pelvis_while_the_policy_acts_then_let_go():
    """The deployment's start (humanoid_sim_node): the policy acts while the pelvis hangs, then the gantry lets go.
    Held robots keep their start pose exactly, whatever the legs do; released ones fall freely under PD alone."""
    env = HumanoidVecEnv(3, task="stand", dr=True, seed=5, gantry_starts=1.0, gantry_s=(0.4, 0.4))
    env.reset()
    assert np.all(env.hang_steps == 20)
    start = env.qpos[:, 0:7].copy()
    kick = np.zeros((3, 12))
    kick[:, [0, 6]] = -2.0                                  # swing both hips hard: a free pelvis would move
    for _ in range(20):
        env.step(kick)
    assert np.array_equal(env.qpos[:, 0:7], start) and np.all(env.qvel[:, 0:6] == 0.0)
    assert not np.allclose(env.qpos[:, 7:], env.default_pose, atol=0.05)     # the legs did move
    for _ in range(15):
        _, _, term, _, _ = env.step(kick)
    assert term.any() or np.abs(env.qpos[:, 0:3] - start[:, 0:3]).max() > 0.02   # let go: it moves, or falls
    with pytest.raises(ConfigError, match="gantry_starts"):
        HumanoidVecEnv(1, gantry_starts=1.5)
    # off (the default) draws nothing extra: a seed's episodes are the ones it gave before gantry starts existed
    plain, off = HumanoidVecEnv(2, dr=True, seed=9), HumanoidVecEnv(2, dr=True, seed=9, gantry_starts=0.0)
    for e in (plain, off):
        e.reset()
        for _ in range(10):
            e.step(np.full((2, 12), 0.1))
    assert np.array_equal(plain.qpos, off.qpos) and np.array_equal(plain.friction, off.friction)
    assert not off.hang_steps.any()


def test_dr_config_covers_every_randomized_quantity_and_rejects_bad_ranges(tmp_path):
    cfg = load_humanoid_dr_config(task="stand")
    for sec, key in (("physics", "friction"), ("physics", "added_base_mass_kg"), ("physics", "com_offset_m"),
                     ("physics", "link_mass_scale"), ("pd", "kp_scale"), ("pd", "joint_offset_rad"),
                     ("latency", "action_delay_ms"), ("latency", "obs_delay_ms"),
                     ("observation_noise", "joint_vel_rad_s"), ("pushes", "interval_s")):
        assert cfg.get(sec, key) is not None, (sec, key)
    assert cfg.get("pushes", "max_vel_m_s") == 1.0
    d = draw(cfg, np.random.default_rng(0))
    assert 0 <= d.action_delay_steps <= 5 and 0.3 <= d.friction <= 1.25
    bad = tmp_path / "bad.yaml"
    bad.write_text("pd:\n  kp_scale: [1.2, 0.8]\n")
    with pytest.raises(ConfigError, match="pd.kp_scale"):
        load_humanoid_dr_config(bad)
    bad.write_text("physics:\n  gravity: [1, 2]\n")
    with pytest.raises(ConfigError, match="physics.gravity"):
        load_humanoid_dr_config(bad)


def test_action_delay_is_a_true_delay_not_a_filter():
    """A step in the PD target reaches the motors exactly `delay` physics steps later, unchanged."""
    env = HumanoidVecEnv(2, task="stand", seed=0)
    env.reset()
    env.set_episode_params(1, action_delay_steps=4)
    target = np.tile(env.default_pose, (2, 1))
    target[:, 3] += 0.3
    env.substeps = 3          # look inside the first 6 ms
    env.step_targets(target)
    # robot 0 has applied the new knee target since the first physics step; robot 1 still the old one
    k0 = env.kp[0, 3] * (target[0, 3] - env.qpos[0, 7 + 3])
    assert env.tau[0, 3] > 20 and env.tau[1, 3] < 5, (env.tau[:, 3], k0)
    env.step_targets(target)  # steps 4..6: robot 1 now sees the full step, not a blend
    assert env.tau[1, 3] > 20



def test_coarser_training_physics_step_keeps_delays_in_ms_and_rejects_non_divisors():
    """--physics-dt: a 5 ms training sim steps 4 times per 20 ms policy step, draws the same delays in ms
    (whole 5 ms steps instead of 2 ms ones), lets the same unactuated-policy robots fall at the same times as
    the 2 ms reference (within 3 policy steps), and a step that does not divide 20 ms is refused with the
    field and the fix."""
    cfg = load_humanoid_dr_config(task="stand")
    falls = {}
    for dt in (0.002, 0.005):
        env = HumanoidVecEnv(8, task="stand", dr=True, seed=3, physics_dt_s=dt)
        env.reset(seed=3)
        assert env.substeps == round(0.02 / dt) and env.model.opt.timestep == pytest.approx(dt)
        ms = np.concatenate([env.action_delay_steps, env.obs_delay_steps]) * dt * 1e3
        assert ms.min() >= 0 and ms.max() <= cfg.get("latency", "action_delay_ms")[1] + dt * 1e3 / 2
        if dt == 0.005:
            assert np.ptp(ms) > 0 and set(np.round(ms)) <= {0.0, 5.0, 10.0}
        env = HumanoidVecEnv(8, task="stand", dr=False, seed=3, physics_dt_s=dt)
        env.reset(seed=3)
        falls[dt] = np.full(8, -1.0)
        for k in range(100):                       # zero action: the default-pose targets, no balance
            _, _, term, _, _ = env.step(np.zeros((8, 12)))
            falls[dt][(falls[dt] < 0) & term] = k * 0.02
    assert np.all(falls[0.002] > 0.5) and np.all(np.abs(falls[0.005] - falls[0.002]) <= 0.06), falls
    with pytest.raises(ConfigError) as e:
        HumanoidVecEnv(1, physics_dt_s=0.003)
    assert e.value.field == "physics_dt_s" and "0.005" in e.value.fix

# ------------------------------------------------------------------ state machine
def _state(q=None, rpy=(0.0, 0.0, 0.0)):
    prof = load_robot("g1_12dof")
    return {"q": np.asarray(prof.default_pose if q is None else q, float), "dq": np.zeros(12), "rpy": np.asarray(rpy)}


def _sup(**gains):
    return HumanoidSupervisor(SafetyFilter.for_robot("g1_12dof", dt_s=0.02), **gains)


def test_supervisor_starts_limp_and_ramps_to_the_default_pose_in_2_s_then_goes_active():
    sup = _sup()
    crouch = np.asarray(load_robot("g1_12dof").default_pose) + 0.3
    cmd = sup.step(_state(crouch), 0.0, 0.0)
    assert sup.mode == ZERO_TORQUE and not cmd.kp.any() and not cmd.kd.any()
    assert sup.start(_state(crouch), 0.0)
    mid, modes = None, []
    for k in range(1, 111):
        t = k * 0.02
        cmd = sup.step(_state(crouch), t, t, policy_target=None if sup.mode == RAMP else crouch - 0.3)
        modes.append(cmd.mode)
        if k == 50:
            mid = cmd.q_target
    default = np.asarray(load_robot("g1_12dof").default_pose)
    assert np.allclose(mid, crouch + 0.5 * (default - crouch), atol=0.02)   # halfway at 1 s
    assert modes[:99].count(RAMP) == 99 and sup.mode == ACTIVE
    assert cmd.kp.any() and np.allclose(cmd.q_target, default, atol=1e-6)


def test_supervisor_tilt_violation_leads_to_damping_and_damping_is_latched():
    sup = _sup()
    sup.start(_state(), 0.0)
    t = 0.0
    for _ in range(110):
        t += 0.02
        sup.step(_state(), t, t, policy_target=_state()["q"])
    assert sup.mode == ACTIVE
    tilted = _state(rpy=(0.0, 0.7, 0.0))
    cmd = sup.step(tilted, t + 0.02, t + 0.02, policy_target=tilted["q"] + 0.1)
    assert sup.mode == DAMPING and cmd.mode == DAMPING
    assert not cmd.kp.any() and cmd.kd.all() and np.allclose(cmd.q_target, tilted["q"])
    for k in range(10):   # upright again: still damping until an explicit reset
        cmd = sup.step(_state(), t + 0.04 + k * 0.02, t + 0.04 + k * 0.02, policy_target=_state()["q"])
        assert cmd.mode == DAMPING
    sup.reset(t + 1.0)
    assert sup.mode == ZERO_TORQUE and sup.start(_state(), t + 1.0) and sup.mode == RAMP


def test_supervisor_stale_state_leads_to_damping_from_ramp_and_from_active():
    for phase_s in (0.5, 3.0):
        sup = _sup()
        sup.start(_state(), 0.0)
        t = 0.0
        while t < phase_s:
            t += 0.02
            sup.step(_state(), t, t, policy_target=_state()["q"])
        assert sup.mode == (RAMP if phase_s < 2 else ACTIVE)
        last_stamp = t
        for _ in range(5):                  # the state stops arriving; commands keep coming
            t += 0.02
            cmd = sup.step(None, last_stamp, t, policy_target=_state()["q"])
        assert sup.mode == DAMPING and not cmd.kp.any()
        assert "watchdog" in sup.reason


def test_supervisor_refuses_to_start_from_a_stale_or_tilted_state():
    sup = _sup()
    assert not sup.start(_state(), t=1.0, stamp_s=0.5) and sup.mode == ZERO_TORQUE
    assert not sup.start(_state(rpy=(0.8, 0, 0)), t=1.0) and sup.mode == ZERO_TORQUE
    assert "tilted" in sup.reason


def test_supervisor_stands_the_simulated_robot_and_damps_after_a_violent_push():
    env = HumanoidVecEnv(1, task="stand", seed=0)
    env.fall_tilt_rad = 1.2          # let the supervisor, not the env's episode end, see the tilt
    env.reset()
    prof = load_robot("g1_12dof")   # stiff gains: PD alone holds the pose (see the model sanity tests)
    sup = _sup(kp=10 * np.asarray(prof.raw["pd_gains"]["kp"]), kd=5 * np.asarray(prof.raw["pd_gains"]["kd"]))
    t = 0.0
    assert sup.start(env.robot_state(0), t)
    for k in range(250):                 # 5 s: ramp, then hold the default pose through the filter
        cmd = sup.step(env.robot_state(0), t, t, policy_target=env.default_pose)
        env.step_targets(cmd.q_target[None], kp=cmd.kp[None], kd=cmd.kd[None])
        t += env.dt_s
    assert sup.mode == ACTIVE and env.qpos[0, 2] > 0.7
    env.qvel[0, 0] += 3.0                # a shove no PD stance survives
    for k in range(100):
        cmd = sup.step(env.robot_state(0), t, t, policy_target=env.default_pose)
        env.step_targets(cmd.q_target[None], kp=cmd.kp[None], kd=cmd.kd[None])
        t += env.dt_s
        if sup.mode == DAMPING:
            break
    assert sup.mode == DAMPING and sup.reason == "attitude"


# ------------------------------------------------------------------ train -> export -> evaluate
def test_tiny_ppo_train_export_and_evaluate_through_the_runtime_and_safety_filter(tmp_path):
    pytest.importorskip("torch")
    from policies.humanoid_ppo import (HumanoidPPOConfig, evaluate, export_humanoid, runtime_act_fn,
                                       save_checkpoint, torch_act_fn, train)
    from policies.runtime import PolicyRuntime
    cfg = HumanoidPPOConfig(num_envs=4, num_steps=8, total_steps=4 * 8 * 2, history=2, hidden=(32, 32),
                            critic_hidden=(32, 32), log_every=1)
    res = train(cfg, log=lambda line: None)
    assert res.env_steps == 64 and res.model.critic[0].in_features == CRITIC_DIM
    assert res.model.actor[0].in_features == 2 * 47
    ck = save_checkpoint(res, tmp_path / "g1.pt")
    contract = export_humanoid(ck, tmp_path / "g1.onnx")
    assert contract.action["type"] == "joint_pd_offset" and contract.robot["name"] == "g1_12dof"
    assert [k["shape"] for k in contract.observation["keys"]][:2] == [[6], [6]]
    # The runtime (ONNX Runtime, no torch) gives the torch policy's PD targets on the same observation.
    env = HumanoidVecEnv(3, task="stand", history=2, seed=1)
    obs, _ = env.reset()
    obs, *_ = env.step(np.zeros((3, 12)))
    rt = PolicyRuntime(tmp_path / "g1.onnx", robot="g1_12dof", num_envs=3)
    got = rt.act_batch(env.split_obs(obs))
    want = torch_act_fn(res)(obs, env)
    assert np.allclose(got, want, atol=1e-4)
    ev_t = evaluate(torch_act_fn(res), episodes=2, num_envs=2, history=2, episode_s=0.5)
    ev_r = evaluate(runtime_act_fn(tmp_path / "g1.onnx", 2), episodes=2, num_envs=2, history=2, episode_s=0.5)
    for ev in (ev_t, ev_r):
        assert ev["episodes"] == 2 and 0.0 <= ev["survival"] <= 1.0 and ev["mean_episode_s"] > 0


def test_pybullet_twin_from_the_same_description_topples_like_mujoco_under_the_profile_pd():
    """Sim-to-sim sanity: same URDF-side description, same PD; both simulators tip forward within ~0.5 s."""
    pytest.importorskip("pybullet")
    from sim.g1_pybullet import G1PyBulletEnv
    env = G1PyBulletEnv(history=2, episode_s=3.0, pushes=False)
    try:
        env.reset(seed=0)
        st = env.robot_state()
        assert abs(st["rpy"][0]) < 1e-6 and abs(st["rpy"][1]) < 1e-6
        assert np.allclose(st["q"], env.default_pose)
        fell_pb, pitch = None, 0.0
        for k in range(150):
            _, _, term, _, _ = env.step_targets(env.default_pose)
            if term[0]:
                fell_pb = (k + 1) * 0.02
                break
            pitch = env.robot_state()["rpy"][1]
    finally:
        env.close()
    fell_mj, _ = _hold_default_pose((1.0, 1.0))
    assert fell_pb is not None and pitch > 0.3            # forward, as in MuJoCo
    assert abs(fell_pb - fell_mj) < 0.5


def test_walk_task_samples_velocity_commands_and_scores_gait_contacts():
    env = HumanoidVecEnv(4, task="walk", seed=2)
    obs, _ = env.reset()
    c = env.command
    assert np.all(c[:, 0] >= -0.3) and np.all(c[:, 0] <= 0.8) and np.any(np.abs(c) > 0.05)
    assert np.allclose(env.split_obs(obs)["velocity_command"][:, -3:], c * [2.0, 2.0, 0.25], atol=1e-6)
    assert env.reward_scales["contact"] > 0 and env.reward_scales["feet_swing_height"] < 0
    stand = HumanoidVecEnv(2, task="stand", seed=2)
    stand.reset()
    assert not stand.command.any() and stand.reward_scales["contact"] == 0.0
    _, r, *_ = env.step(np.zeros((4, 12)))
    assert np.all(np.isfinite(r))


def test_step_in_place_scores_the_gait_at_zero_command():
    still = HumanoidVecEnv(2, task="stand", seed=3)
    march = HumanoidVecEnv(2, task="stand", seed=3, step_in_place=True)
    assert march.reward_scales["contact"] > 0 and still.reward_scales["contact"] == 0.0
    for e in (still, march):
        e.reset()
    _, r_still, *_ = still.step(np.zeros((2, 12)))
    _, r_march, *_ = march.step(np.zeros((2, 12)))
    # Same physics and seed; both feet down at the start: stance matches for one foot, so the march pays it.
    assert np.all(r_march != r_still) and not march.command.any()


def test_push_curriculum_scales_pushes_and_rises_only_while_the_robot_survives():
    from policies.humanoid_ppo import HumanoidPPOConfig, PushCurriculum
    cfg = HumanoidPPOConfig(push_curriculum=True, push_start=0.3, push_window=4)
    cur = PushCurriculum(cfg)
    assert cur.update([True, True, True, True]) == 0.3            # all fell: stays at the floor
    assert cur.update([False] * 4) == 0.4                         # none fell: up one step
    for _ in range(10):
        cur.update([False] * 4)
    assert cur.scale == 1.0                                       # capped at the YAML's pushes
    assert cur.update([True, True, True, False]) == 0.9           # 75 % fell: down
    with pytest.raises(Exception, match="push_start"):
        HumanoidPPOConfig(push_start=0.0).validate()
    with pytest.raises(Exception, match="ent_coef"):                     # --ent-coef: a bonus, never a penalty
        HumanoidPPOConfig(ent_coef=-0.01).validate()
    from policies.humanoid_ppo import train
    with pytest.raises(ConfigError, match="nope.yaml"):                  # --dr-config names a missing file
        train(HumanoidPPOConfig(num_envs=4, total_steps=96, dr_config="/nope.yaml"))
    env = HumanoidVecEnv(1, task="stand", dr=True, seed=4)
    env.reset()
    env.push_scale = 0.5
    env.next_push_step[:] = env.t_step
    v0 = env.qvel[0, 0:2].copy()
    env.step(np.zeros((1, 12)))
    assert 0.0 < np.linalg.norm(env.push_vel[0]) / math.exp(-env.dt_s) <= 0.5 * env.push_max_vel[0] + 1e-9
    assert not np.array_equal(v0, env.qvel[0, 0:2])


def test_training_stream_limits_match_the_deployed_safety_filter_command_for_command():
    from onboard.paths import config_dir
    from policies.humanoid_ppo import StreamLimits
    from sim2real.safety_envelope import load_envelope
    prof = load_robot("g1_12dof")
    envl = load_envelope(prof, config_dir() / "safety" / "g1_12dof.yaml")
    envl.ramp_in_s = 0.0
    filt = SafetyFilter(prof, envl, dt_s=0.02)
    lim = StreamLimits(2, 0.02)
    q0 = np.asarray(prof.default_pose, float)
    st = {"q": q0, "dq": np.zeros(12), "rpy": np.zeros(3)}
    filt.reset(st, 0.0)
    lim.reset([0, 1], [q0, q0])
    rng = np.random.default_rng(0)
    for k in range(1, 60):
        cmd = q0 + rng.normal(0, 0.4, 12)
        want = filt.filter(cmd, k * 0.02, st)
        got = lim(np.stack([cmd, cmd]))
        assert np.allclose(got[0], want, atol=1e-12) and np.allclose(got[1], want, atol=1e-12)


@pytest.mark.parametrize("args,field,fix", [(["--physics-dt", "0.003"], "physics_dt_s", "--physics-dt 0.002"),
                                            (["--update-epochs", "0"], "update_epochs", "--update-epochs"),
                                            (["--async-rollout", "--workers", "2"], "workers", "drop --workers"),
                                            (["--gait-period", "2"], "gait_period_s", "between 0.3 and 1.2 s"),
                                            (["--final-std", "-0.1"], "final_std", "--final-std between 0"),
                                            (["--std-anneal-frac", "0"], "std_anneal_frac", "--std-anneal-frac"),
                                            (["--average-frac", "1"], "average_frac", "--average-frac as a share"),
                                            (["--average-every", "0"], "average_every", "--average-every 10")],
                         ids=["physics_dt", "update_epochs", "async_with_workers", "gait_period", "final_std",
                              "std_anneal_frac", "average_frac", "average_every"])
def test_trainer_module_refuses_a_bad_option_with_exit_2_and_writes_nothing(tmp_path, args, field, fix):
    import os
    import subprocess
    import sys
    r = subprocess.run([sys.executable, "-m", "policies.humanoid_ppo", *args, "--out",
                        str(tmp_path / "g1" / "policy"), "--eval-episodes", "0"], capture_output=True, text=True,
                       env=dict(os.environ, ORT_DISABLE_TELEMETRY="1"), timeout=120)
    assert r.returncode == 2, r.stderr
    assert field in r.stderr and fix in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "g1").exists()


def test_cli_trains_exports_and_evaluates_the_g1_legs(tmp_path, capsys):
    torch = pytest.importorskip("torch")
    from onboard.cli import main

    out = tmp_path / "g1"
    assert main(["train", "--policy", "humanoid", "--task", "stand", "--total-steps", "96", "--num-envs", "4",
                 "--out", str(out), "--no-progress"]) == 0
    assert (out / "policy.pt").is_file() and (out / "policy.onnx").is_file()
    first = torch.load(out / "policy.pt", weights_only=False)
    # --resume continues OUT/policy.pt (weights and statistics); without one it is refused, exit 2
    assert main(["train", "--policy", "humanoid", "--task", "stand", "--total-steps", "96", "--num-envs", "4",
                 "--out", str(out), "--no-progress", "--resume"]) == 0
    again = torch.load(out / "policy.pt", weights_only=False)
    assert again["config"]["resume"] == str(out / "policy.pt")
    assert again["stats_count"] > first["stats_count"]          # the observation statistics carried on
    assert main(["train", "--policy", "humanoid", "--task", "stand", "--total-steps", "96", "--num-envs", "4",
                 "--out", str(tmp_path / "nothing_here"), "--no-progress", "--resume"]) == 2
    assert main(["eval", str(out / "policy.onnx"), "--task", "stand", "--episodes", "1"]) == 0
    printed = capsys.readouterr().out
    assert "runtime_safety_mujoco_dr" in printed and "runtime_safety_pybullet" in printed
    # Survival against push size, through the runtime + filter, with its plot and report
    assert main(["eval", str(out / "policy.onnx"), "--task", "stand", "--episodes", "2", "--push-sweep", "0,1.0",
                 "--out", str(tmp_path / "sweep")]) == 0
    printed = capsys.readouterr().out
    assert "pushes <= 0.00 m/s | survived" in printed and "pushes <= 1.00 m/s | survived" in printed
    import json
    rows = json.loads((tmp_path / "sweep" / "push_sweep.json").read_text())["rows"]
    assert [r["push_max_vel_m_s"] for r in rows] == [0.0, 1.0] and all(r["episodes"] == 2 for r in rows)
    assert (tmp_path / "sweep" / "push_sweep.png").stat().st_size > 0
    assert "per_push" in json.loads((tmp_path / "sweep" / "push_sweep.json").read_text())
    assert main(["eval", str(out / "policy.onnx"), "--task", "stand", "--push-sweep", "0,fast"]) == 2
    # the deployment's start: episodes begin on the gantry, then it lets go
    assert main(["eval", str(out / "policy.onnx"), "--task", "stand", "--episodes", "2", "--push-sweep", "0",
                 "--gantry", "0.2,0.4", "--out", str(tmp_path / "gantry")]) == 0
    assert "gantry 0.2-0.4 s | pushes <= 0.00 m/s | survived" in capsys.readouterr().out
    assert json.loads((tmp_path / "gantry" / "push_sweep.json").read_text())["rows"][0]["gantry_s"] == [0.2, 0.4]
    assert main(["eval", str(out / "policy.onnx"), "--task", "stand", "--push-sweep", "0", "--gantry", "1,0"]) == 2
    assert main(["eval", str(out / "policy.onnx"), "--task", "stand", "--gantry", "0,1"]) == 2   # sweep only
    (out / "policy.pt").unlink()
    assert main(["eval", str(out / "policy.onnx"), "--episodes", "1"]) == 2      # names the missing checkpoint
    # --recipe push-recovery: the best measured stand + push recipe, in the artifact's contract
    assert main(["train", "--policy", "humanoid", "--task", "stand", "--recipe", "push-recovery", "--total-steps", "96",
                 "--num-envs", "4", "--out", str(tmp_path / "push"), "--no-progress"]) == 0
    from policies.artifact import load_artifact
    extra = load_artifact(tmp_path / "push" / "policy.onnx", robot="g1_12dof").contract.extra
    assert extra["placement_gain_rad_per_m_s"] == 0.4 and extra["velocity_estimator"]
    assert extra["gait_reference_rad"] == 0.3 and extra["gantry_starts"] == 0.3
    assert extra["training_physics_dt_s"] == 0.005 and extra["gait_period_s"] == 0.4
    assert load_artifact(tmp_path / "push" / "policy.onnx", robot="g1_12dof").contract.provenance[
        "train_config"]["average_frac"] == 0.15
    assert (tmp_path / "push" / "policy_last.onnx").is_file()     # the last weights, beside the average


def test_gait_reference_lifts_the_swing_leg_and_travels_in_the_exported_graph(tmp_path):
    pytest.importorskip("torch")
    import torch
    from policies.humanoid_ppo import (GaitReferenceActor, HumanoidPPOConfig, export_humanoid, load_checkpoint,
                                       save_checkpoint, torch_act_fn, train)
    from policies.runtime import PolicyRuntime
    from sim.humanoid_env import knee_reference
    cfg = HumanoidPPOConfig(num_envs=4, num_steps=8, total_steps=64, history=2, hidden=(32, 32),
                            critic_hidden=(32, 32), step_in_place=True, gait_reference=0.3, reference_reward=True)
    res = train(cfg, log=lambda line: None)
    assert isinstance(res.model.actor, GaitReferenceActor)
    # With the residual net silenced, the actor is the reference: the left leg swings while sin(phase) < 0.
    with torch.no_grad():
        for p in res.model.actor.net.parameters():
            p.zero_()
    env = HumanoidVecEnv(1, task="stand", history=2, seed=0)
    obs, _ = env.reset()
    act = torch_act_fn(res)
    lifted = []
    for _ in range(40):                                   # one 0.8 s gait period
        target = act(obs, env)
        sin = obs[0, res.model.actor.sin_index]
        off = (target[0] - env.default_pose) / 0.3
        swing, stance = (slice(0, 6), slice(6, 12)) if sin < 0 else (slice(6, 12), slice(0, 6))
        np.testing.assert_allclose(off[swing][[0, 3, 4]], np.array([-1, 2, -1]) * abs(sin), atol=1e-5)
        assert np.allclose(off[stance], 0.0, atol=1e-6) and np.allclose(off[swing][[1, 2, 5]], 0.0, atol=1e-6)
        lifted.append(sin < 0)
        # The env's knee-reference reward follows the same reference as the actor's prior.
        np.testing.assert_allclose(knee_reference(env.t_step * env.dt_s, 0.3, env.default_pose)[0],
                                   target[0, [3, 9]], atol=1e-5)
        obs, *_ = env.step_targets(target)
    assert 15 <= sum(lifted) <= 25                         # each leg swings about half the period
    follows = HumanoidVecEnv(2, task="stand", seed=0, gait_reference=0.3, step_in_place=True)
    follows.reset()
    follows.t_step[:] = 31                                 # the action answered t = 30 steps: left knee flexed
    follows.qpos[0, 7 + 3] = knee_reference(30 * follows.dt_s, 0.3, follows.default_pose)[0]
    follows.qpos[1, 7 + 3] = follows.default_pose[3]
    follows.qpos[:, 7 + 9] = follows.default_pose[9]
    r, *_ = follows._reward(np.zeros((2, 12)), np.ones((2, 2), bool))
    assert r[0] - r[1] > 0.5 * follows.reward_scales["knee_reference"] * follows.dt_s
    # The reference lives in the ONNX graph: the runtime gives the same PD targets as torch.
    ck = save_checkpoint(res, tmp_path / "g.pt")
    contract = export_humanoid(ck, tmp_path / "g.onnx")
    assert contract.extra["gait_reference_rad"] == 0.3
    res2, _ = load_checkpoint(ck)
    obs, *_ = env.step_targets(target)
    rt = PolicyRuntime(tmp_path / "g.onnx", robot="g1_12dof", num_envs=1)
    assert np.allclose(rt.act_batch(env.split_obs(obs)), torch_act_fn(res2)(obs, env), atol=1e-4)
    with pytest.raises(Exception, match="gait_reference"):
        HumanoidPPOConfig(gait_reference=0.9).validate()


def test_mirror_maps_match_the_physics_of_the_reflected_robot():
    from sim.humanoid_env import CRITIC_MIRROR, JOINT_MIRROR, actor_mirror, mirror
    env = HumanoidVecEnv(2, task="stand", seed=0, history=3)
    env.reset()
    q0 = env.default_pose + np.random.default_rng(1).uniform(-0.1, 0.1, 12)
    for i, q in enumerate((q0, mirror(q0, JOINT_MIRROR))):   # robot 1 starts as robot 0's reflection, yaw 0
        env.qpos[i, 2:7] = [env.stand_height + 0.002, 1, 0, 0, 0]
        env.qpos[i, 7:] = q
    mujoco.mj_forward(env.model, env.data)
    env._qpos_fifo[:] = env.qpos
    rng = np.random.default_rng(2)
    for _ in range(10):
        a = rng.normal(0, 0.5, 12)
        obs, _, _, _, info = env.step(np.stack([a, mirror(a, JOINT_MIRROR)]))
    c = info["critic_obs"]
    keep = np.r_[0:45, 47:CRITIC_DIM]        # both robots share the clock: the phase is not reflected here
    assert np.abs(c[0] - c[1]).max() > 0.05                     # the motion is not symmetric by itself
    np.testing.assert_allclose(mirror(c[0], CRITIC_MIRROR)[keep], c[1][keep], atol=2e-3)
    a_perm = actor_mirror(3)
    phase = np.isin(a_perm[0], env.obs_slices["gait_phase"].start + np.arange(6))
    np.testing.assert_allclose(mirror(obs[0], a_perm)[~phase], obs[1][~phase], atol=2e-3)


@pytest.mark.parametrize("estimator", [False, True], ids=["plain", "estimator_and_placement"])
def test_symmetric_actor_answers_the_mirrored_robot_with_the_mirrored_action(tmp_path, estimator):
    """Also with the velocity estimator and the foot-placement prior: the estimator is symmetrized too
    (vy flips), so the whole actor stays equivariant."""
    pytest.importorskip("torch")
    import torch
    from policies.humanoid_ppo import (HumanoidPPOConfig, MirrorSymmetricNet, export_humanoid, load_checkpoint,
                                       save_checkpoint, torch_act_fn, train)
    from policies.runtime import PolicyRuntime
    from sim.humanoid_env import JOINT_MIRROR, actor_mirror, mirror
    cfg = HumanoidPPOConfig(num_envs=4, num_steps=8, total_steps=64, history=2, hidden=(32, 32),
                            critic_hidden=(32, 32), symmetry=True, gait_reference=0.3, estimator=estimator,
                            placement_gain=0.4 if estimator else 0.0, side_step=0.05 if estimator else 0.0,
                            force_step=estimator, early_touchdown=estimator)
    res = train(cfg, log=lambda line: None)
    assert any(isinstance(m, MirrorSymmetricNet) for m in res.model.actor.modules())
    with torch.no_grad():                               # make the inner MLP clearly lopsided
        for p in res.model.actor.parameters():
            p.add_(torch.randn_like(p) * 0.3)
    env = HumanoidVecEnv(3, task="stand", history=2, seed=5)
    obs, _ = env.reset()
    for _ in range(3):
        obs, *_ = env.step(np.random.default_rng(1).normal(0, 0.5, (3, 12)))
    act = torch_act_fn(res)
    a, a_m = act(obs, env), act(mirror(obs, actor_mirror(2)), env)
    off, off_m = a - env.default_pose, a_m - env.default_pose
    np.testing.assert_allclose(off_m, mirror(off, JOINT_MIRROR), atol=1e-5)
    with torch.no_grad():                               # the inner MLP alone is not equivariant: the wrapper is
        inner = res.model.actor.net.net
        y = inner(torch.as_tensor(res.norm.actor(obs))).numpy()
        y_m = inner(torch.as_tensor(res.norm.actor(mirror(obs, actor_mirror(2))))).numpy()
    assert np.abs(y_m - mirror(y, JOINT_MIRROR)).max() > 1e-2
    if estimator:                                       # the placement prior really acts in this test
        with torch.no_grad():
            assert np.abs(res.model.actor.placement(torch.as_tensor(res.norm.actor(obs))).numpy()).max() > 1e-3
    # Exported: ONNX Runtime reproduces the equivariant policy.
    ck = save_checkpoint(res, tmp_path / "s.pt")
    export_humanoid(ck, tmp_path / "s.onnx")
    res2, _ = load_checkpoint(ck)
    rt = PolicyRuntime(tmp_path / "s.onnx", robot="g1_12dof", num_envs=3)
    d = env.default_pose                                # the artifact bounds the target to 2.5 rad of the default
    assert np.allclose(rt.act_batch(env.split_obs(obs)), d + np.clip(torch_act_fn(res2)(obs, env) - d, -2.5, 2.5),
                       atol=1e-4)
    plain = HumanoidPPOConfig(num_envs=4, num_steps=8, total_steps=64, history=2, hidden=(32, 32),
                              critic_hidden=(32, 32), resume=str(ck))
    with pytest.raises(Exception, match="symmetry"):                 # resume must keep the actor's structure
        train(plain, log=lambda line: None)


def test_sharded_env_equals_its_shards_stepped_alone_and_offsets_finished_robots():
    from sim.humanoid_env import ShardedHumanoidEnv
    kw = dict(task="stand", dr=True, history=2, episode_s=0.1)
    env = ShardedHumanoidEnv(4, shards=2, seed=3, **kw)
    try:
        alone = [HumanoidVecEnv(2, seed=3, **kw), HumanoidVecEnv(2, seed=3 + 7919, **kw)]
        obs, info = env.reset(seed=3)
        want = [e.reset(seed=s) for e, s in zip(alone, (3, 3 + 7919))]
        np.testing.assert_array_equal(obs, np.concatenate([w[0] for w in want]))
        assert not np.array_equal(obs[:2], obs[2:])                  # the shards draw different episodes
        rng = np.random.default_rng(0)
        for t in range(5):                                           # 0.1 s episodes: all end at step 5
            a = rng.normal(0, 0.3, (4, 12))
            obs, rew, term, trunc, info = env.step(a)
            parts = [e.step(a[2 * k:2 * k + 2]) for k, e in enumerate(alone)]
            np.testing.assert_array_equal(rew, np.concatenate([p[1] for p in parts]))
            np.testing.assert_array_equal(info["critic_obs"], np.concatenate([p[4]["critic_obs"] for p in parts]))
        assert sorted(info["done_idx"]) == [0, 1, 2, 3] and len(info["episode_return"]) == 4
        np.testing.assert_array_equal(env.robot_state(3)["q"], alone[1].robot_state(1)["q"])
        env.push_scale = 0.5
        assert env.local.push_scale == 0.5
    finally:
        env.close()
    with pytest.raises(ConfigError, match="workers"):
        ShardedHumanoidEnv(5, shards=2)


def test_force_step_keeps_the_knee_reference_however_the_net_pulls(tmp_path):
    pytest.importorskip("torch")
    import torch
    from policies.humanoid_ppo import HumanoidPPOConfig, export_humanoid, load_checkpoint, save_checkpoint, train
    from policies.runtime import PolicyRuntime
    cfg = HumanoidPPOConfig(num_envs=4, num_steps=8, total_steps=64, history=2, hidden=(32, 32),
                            critic_hidden=(32, 32), gait_reference=0.3, force_step=True)
    res = train(cfg, log=lambda line: None)
    actor = res.model.actor
    with torch.no_grad():                        # a net that tries to straighten both knees hard
        last = [m for m in actor.net.modules() if isinstance(m, torch.nn.Linear)][-1]
        last.bias[[3, 9]] = -10.0
        last.bias[[0, 6]] = -2.0
    env = HumanoidVecEnv(2, task="stand", history=2, seed=0)
    obs, _ = env.reset()
    for _ in range(12):
        obs, *_ = env.step(np.zeros((2, 12)))
    x = torch.as_tensor(res.norm.actor(obs))
    with torch.no_grad():
        out, ref = actor(x).numpy(), actor.reference(x).numpy()
    np.testing.assert_allclose(out[:, [3, 9]], ref[:, [3, 9]], atol=1e-6)     # floored at the reference
    assert ref[:, [3, 9]].max() > 0.5 and np.all(out[:, [0, 6]] < ref[:, [0, 6]] - 1.0)   # hips stay free
    ck = save_checkpoint(res, tmp_path / "f.pt")
    export_humanoid(ck, tmp_path / "f.onnx")
    res2, _ = load_checkpoint(ck)
    assert res2.model.actor.force_step
    # without foot placement the actor keeps the keys of earlier checkpoints (they must still load)
    assert {k for k in res2.model.state_dict() if k.startswith("actor.") and "net." not in k} == {
        "actor.pattern", "actor.sin_mean", "actor.sin_std"}
    rt = PolicyRuntime(tmp_path / "f.onnx", robot="g1_12dof", num_envs=2)
    got = rt.act_batch(env.split_obs(obs))
    np.testing.assert_allclose((got - env.default_pose)[:, [3, 9]] / 0.25, ref[:, [3, 9]], atol=1e-4)
    with pytest.raises(Exception, match="gait reference"):
        HumanoidPPOConfig(force_step=True).validate()


def test_early_touchdown_forces_the_knees_only_while_the_lift_rises(tmp_path):
    """--early-touchdown: the knee floor of --force-step holds over the rising half of each swing only, so a
    net that straightens the knees lands the swing foot early after the top of the lift; in the exported graph too."""
    pytest.importorskip("torch")
    import torch
    from policies.humanoid_ppo import HumanoidPPOConfig, export_humanoid, load_checkpoint, save_checkpoint, train
    from policies.runtime import PolicyRuntime
    cfg = HumanoidPPOConfig(num_envs=4, num_steps=8, total_steps=64, history=2, hidden=(32, 32),
                            critic_hidden=(32, 32), gait_reference=0.3, force_step=True, early_touchdown=True)
    res = train(cfg, log=lambda line: None)
    actor = res.model.actor
    with torch.no_grad():                        # a net that tries to straighten both knees hard
        [m for m in actor.net.modules() if isinstance(m, torch.nn.Linear)][-1].bias[[3, 9]] = -10.0
    env = HumanoidVecEnv(1, task="stand", history=2, seed=0)
    obs, _ = env.reset()
    rows, phases = [], []
    for k in range(40):                          # one period is 40 policy steps (0.8 s at 50 Hz)
        obs, *_ = env.step(np.zeros((1, 12)))
        rows.append(obs[0])
        phases.append(((k + 1) * env.dt_s / 0.8) % 1.0)
    x = torch.as_tensor(res.norm.actor(np.asarray(rows)))
    phases = np.asarray(phases)
    with torch.no_grad():
        out, ref = actor(x).numpy(), actor.reference(x).numpy()
    left_rising, right_rising = (phases > 0.5) & (phases < 0.75), (phases > 0.0) & (phases < 0.25)
    for knee, rising in ((3, left_rising), (9, right_rising)):
        assert rising.sum() >= 8 and ref[rising, knee].max() > 0.5
        np.testing.assert_allclose(out[rising, knee], ref[rising, knee], atol=1e-6)   # floored while rising
        falling = (ref[:, knee] > 0.3) & ~rising                                       # lowering half of the swing
        assert falling.sum() >= 4 and np.all(out[falling, knee] < ref[falling, knee] - 5.0)
    ck = save_checkpoint(res, tmp_path / "e.pt")
    export_humanoid(ck, tmp_path / "e.onnx")
    assert load_checkpoint(ck)[0].model.actor.early_touchdown
    rt = PolicyRuntime(tmp_path / "e.onnx", robot="g1_12dof", num_envs=40)
    got = rt.act_batch(env.split_obs(np.asarray(rows)))
    clear = np.abs(phases * 4 - np.round(phases * 4)) > 1e-3     # off the quarter-period switch points
    np.testing.assert_allclose((got - env.default_pose)[clear][:, [3, 9]] / 0.25, np.clip(out[clear][:, [3, 9]], -10, 10),
                               atol=1e-4)
    with pytest.raises(Exception, match="force-step"):
        HumanoidPPOConfig(gait_reference=0.3, early_touchdown=True).validate()


def _export_and_compare(res, env, obs, path):
    """Save + export ``res``; the artifact through PolicyRuntime must equal the reloaded torch policy. Returns
    the contract."""
    from policies.humanoid_ppo import export_humanoid, load_checkpoint, save_checkpoint, torch_act_fn
    from policies.runtime import PolicyRuntime
    ck = save_checkpoint(res, path.with_suffix(".pt"))
    contract = export_humanoid(ck, path.with_suffix(".onnx"))
    rt = PolicyRuntime(path.with_suffix(".onnx"), robot="g1_12dof", num_envs=env.num_envs)
    np.testing.assert_allclose(rt.act_batch(env.split_obs(obs)), torch_act_fn(load_checkpoint(ck)[0])(obs, env),
                               atol=1e-4)
    return contract


def test_side_step_lifts_the_leg_on_the_side_the_body_moves_to_and_lowers_the_other(tmp_path):
    """--side-step V0: with the estimator pinned to a sideways velocity, the reference lifts the leg on that
    side whatever the gait clock says and lowers the other (gate g from 0 at V0 to 1 at 2 V0); the knee floor
    of --force-step keeps only the lowering; placement weights the gated leg as at touchdown; in the graph."""
    pytest.importorskip("torch")
    import torch
    from policies.humanoid_ppo import HumanoidPPOConfig, train
    cfg = HumanoidPPOConfig(num_envs=4, num_steps=8, total_steps=64, history=2, hidden=(32, 32),
                            critic_hidden=(32, 32), gait_reference=0.3, estimator=True, placement_gain=0.4,
                            force_step=True, side_step=0.3)
    res = train(cfg, log=lambda line: None)
    actor = res.model.actor
    env = HumanoidVecEnv(1, task="stand", history=2, seed=0)
    obs, _ = env.reset()
    for _ in range(7):                           # t = 0.14 s: phase 0.175, the right leg halfway up its lift
        obs, *_ = env.step(np.zeros((1, 12)))
    x = torch.as_tensor(res.norm.actor(obs))
    knee = 2 * 0.3 / 0.25                        # the pattern's knee per unit lift [action units]
    clock_r = math.sin(2 * math.pi * 0.175)
    est = [m for m in res.model.estimator.modules() if isinstance(m, torch.nn.Linear)][-1]
    net = [m for m in actor.net.net.modules() if isinstance(m, torch.nn.Linear)][-1]   # the MLP in EstimatorFedNet
    cases = {0.0: (0.0, clock_r), 0.8: (1.0, 0.0), 0.45: (0.5, 0.5 * clock_r), -0.8: (0.0, 1.0)}
    for vy, (lift_l, lift_r) in cases.items():
        with torch.no_grad():
            est.weight.zero_()
            est.bias.copy_(torch.tensor([0.0, 2 * vy, 0.0]))             # the estimate, m/s x 2
            net.weight.zero_()
            net.bias.zero_()
            net.bias[[3, 9]] = -10.0                                      # a net that straightens both knees
            ref, out = actor.reference(x).numpy()[0], actor(x).numpy()[0]
            place = actor.placement(x).numpy()[0]
        np.testing.assert_allclose(ref[[3, 9]], [knee * lift_l, knee * lift_r], atol=1e-5)
        floor_r = clock_r * (1.0 - (1.0 if vy == 0.8 else 0.5 if vy == 0.45 else 0.0))
        np.testing.assert_allclose(out[9], max(ref[9] - 10.0, knee * floor_r), atol=1e-5)   # floor: clock x (1 - g_L)
        np.testing.assert_allclose(out[3], max(ref[3] - 10.0, 0.0), atol=1e-5)   # the clock's floor (0 here) ...
        assert lift_l == 0 or out[3] < ref[3] - 1.0                      # ... so the side step itself is not forced
        if vy == 0.8:                                                    # gated left leg: full outward roll
            np.testing.assert_allclose(place[1], 0.4 * 0.8 / 0.25, atol=1e-5)
    assert _export_and_compare(res, env, obs, tmp_path / "s").extra["side_step_m_s"] == 0.3
    with pytest.raises(Exception, match="side_step"):
        HumanoidPPOConfig(gait_reference=0.3, side_step=0.3).validate()              # no estimator
    with pytest.raises(Exception, match="side_step"):
        HumanoidPPOConfig(gait_reference=0.3, estimator=True, side_step=2.0).validate()


def test_evaluation_charges_a_fall_to_the_push_just_before_it():
    """evaluate() logs every push of the scored episodes with its size and whether a fall followed within
    FATAL_PUSH_S; the sweep bins them by size (the 'which pushes kill it' plot)."""
    import copy

    from onboard.evaluation import fatal_push_bins
    from policies.humanoid_ppo import FATAL_PUSH_S, evaluate
    from sim2real.humanoid_randomization import load_humanoid_dr_config

    bins = fatal_push_bins([(0.05, False), (0.93, True), (0.97, False), (0.91, True)])
    assert [(b["lo"], b["pushes"], b["fatal"]) for b in bins] == [(0.0, 1, 0), (0.9, 3, 2)]
    assert bins[1]["ci95"][0] < 2 / 3 < bins[1]["ci95"][1]
    cfg = copy.deepcopy(load_humanoid_dr_config(task="stand"))
    cfg.sections["pushes"].update(interval_s=[0.2, 0.3], max_vel_m_s=1.0)
    hold = lambda obs, env: np.tile(env.default_pose, (env.num_envs, 1))      # noqa: E731  PD alone: it falls
    r = evaluate(hold, episodes=2, num_envs=2, dr=cfg, episode_s=4.0)
    mags = np.array([m for m, _ in r["pushes"]])
    assert r["falls"] == 2 and len(mags) >= 2 and np.all((mags >= 0) & (mags <= 1.0 + 1e-9))
    assert any(k for _, k in r["pushes"])                  # the push(es) just before each fall are charged
    # pushes every 0.2-0.3 s and a fall inside 4 s: at most FATAL_PUSH_S / 0.2 + 1 pushes per fall are fatal
    assert sum(k for _, k in r["pushes"]) <= 2 * (FATAL_PUSH_S / 0.2 + 1)
    cfg.sections.pop("pushes")
    assert evaluate(hold, episodes=2, num_envs=2, dr=cfg, episode_s=4.0)["pushes"] == []


def test_capture_step_rewards_a_touchdown_where_it_stops_the_body():
    """The capture-step term: a foot landing on its stance spot moved by v sqrt(h/g) scores 1, 0.1 m off
    exp(-1), a foot that does not touch down 0; the stance spots turn with the heading."""
    import math

    from sim.humanoid_env import BASE_HEIGHT_TARGET_M, capture_step_reward

    off = np.array([[0.0, 0.1], [0.0, -0.1]])
    base, v = np.array([[1.0, 2.0]]), np.array([[0.8, 0.0]])
    lead = 0.8 * math.sqrt(BASE_HEIGHT_TARGET_M / 9.81)
    on = np.array([[[1.0 + lead, 2.1], [1.0 + lead, 1.9]]])
    np.testing.assert_allclose(capture_step_reward(on, base, np.zeros(1), v, np.array([[True, False]]), off), [1.0])
    off_by = on + [[[0.0, 0.1], [0.0, 0.0]]]
    np.testing.assert_allclose(capture_step_reward(off_by, base, np.zeros(1), v, np.array([[True, True]]), off),
                               [math.exp(-1) + 1.0])
    turned = np.array([[[1.0 - 0.1, 2.0], [1.0 + 0.1, 2.0]]])          # heading +90 deg: left foot at -x
    np.testing.assert_allclose(capture_step_reward(turned, base, np.array([math.pi / 2]), np.zeros((1, 2)),
                                                   np.array([[True, True]]), off), [2.0], atol=1e-9)
    env = HumanoidVecEnv(2, task="stand", seed=1, capture_reward=5.0)
    assert env.reward_scales["capture_step"] == 5.0
    np.testing.assert_allclose(np.abs(env.foot_offsets[:, 1]), np.abs(env.foot_offsets[0, 1]))   # mirror pair
    assert env.foot_offsets[0, 1] > 0.05                                 # the left foot is on the left
    env.reset()
    for _ in range(5):
        env.step(np.zeros((2, 12)))
    assert "capture_step" not in HumanoidVecEnv(1, task="stand", seed=1).reward_scales
    from policies.humanoid_ppo import HumanoidPPOConfig
    with pytest.raises(Exception, match="capture_reward"):
        HumanoidPPOConfig(capture_reward=-1.0).validate()


def test_velocity_estimator_learns_the_pushed_body_velocity_from_the_history():
    """The estimator's regression (fit_estimator) on real pushed robots: from the standardized history alone
    it predicts the true body velocity of held-out robots better than the best constant does."""
    pytest.importorskip("torch")
    import copy

    import torch

    from policies.humanoid_ppo import (VEL_COLUMNS, VELOCITY_UNITS, HumanoidPPOConfig, ObsNormalizer,
                                       fit_estimator, velocity_estimator)
    from sim2real.humanoid_randomization import load_humanoid_dr_config
    torch.manual_seed(0)
    cfg = copy.deepcopy(load_humanoid_dr_config(task="stand"))
    cfg.sections["pushes"].update(interval_s=[0.1, 0.3], max_vel_m_s=1.0)
    env = HumanoidVecEnv(64, task="stand", dr=cfg, seed=4, history=3)
    obs, info = env.reset(seed=4)
    norm, xs, vs = ObsNormalizer(env), [], []
    rng = np.random.default_rng(0)
    for _ in range(40):
        norm.update(info["critic_obs"])
        xs.append(obs), vs.append(info["critic_obs"][:, VEL_COLUMNS])
        obs, *_, info = env.step(rng.normal(0, 0.3, (64, 12)))
    x = torch.as_tensor(norm.actor(np.concatenate(xs)))
    y = np.concatenate(vs)
    robot = np.tile(np.arange(64), 40)
    train, test = torch.as_tensor(robot < 48), torch.as_tensor(robot >= 48)      # held-out robots
    est = velocity_estimator(env.obs_dim, 3, symmetry=False)
    opt = torch.optim.Adam(est.parameters(), lr=1e-3)
    pcfg = HumanoidPPOConfig(update_epochs=5, num_minibatches=4)
    y_train, y_test = y[train.numpy()], y[test.numpy()]
    first = fit_estimator(est, opt, x[train], y_train, pcfg, rng)
    for _ in range(40):
        fit_estimator(est, opt, x[train], y_train, pcfg, rng)
    with torch.no_grad():
        err = float(((est(x[test]).numpy() - y_test) ** 2).sum(-1).mean() ** 0.5) / VELOCITY_UNITS
    spread = float(((y_test - y_train.mean(0)) ** 2).sum(-1).mean() ** 0.5) / VELOCITY_UNITS
    print(f"held-out RMS error {err:.3f} m/s against {spread:.3f} m/s for the best constant")
    assert spread > 0.3                                   # the pushes really move the bodies
    # measured: 0.50 m/s against 0.73 m/s from 1920 noisy samples of falling, shoved robots; in training
    # the estimator sees ~1500 fresh samples per update for thousands of updates
    assert err < 0.8 * spread and err < first


def test_foot_placement_prior_swings_the_feet_toward_the_estimated_velocity(tmp_path):
    """--placement-gain K: with the residual net silenced and the estimator pinned to v, the reference adds
    hip pitch -K vx and outward hip roll K vy, weighted by each leg's (1 +- cos) / 2; it lives in the
    exported graph; bad settings are refused."""
    pytest.importorskip("torch")
    import torch

    from policies.humanoid_ppo import HumanoidPPOConfig, train
    cfg = HumanoidPPOConfig(num_envs=4, num_steps=8, total_steps=64, history=2, hidden=(32, 32),
                            critic_hidden=(32, 32), gait_reference=0.3, estimator=True, placement_gain=0.4)
    res = train(cfg, log=lambda line: None)
    actor = res.model.actor
    env = HumanoidVecEnv(2, task="stand", history=2, seed=0)
    obs, _ = env.reset()
    for _ in range(7):
        obs, *_ = env.step(np.zeros((2, 12)))
    last = [m for m in res.model.estimator.modules() if isinstance(m, torch.nn.Linear)][-1]
    x = torch.as_tensor(res.norm.actor(obs))
    cos = obs[:, actor.sin_index + 1]
    w_left, w_right = 0.5 * (1 + cos), 0.5 * (1 - cos)
    for v in ([0.5, 0.25], [-0.4, -0.3]):
        with torch.no_grad():
            last.weight.zero_()
            last.bias.copy_(torch.tensor([2 * v[0], 2 * v[1], 0.0]))       # the estimate, in m/s x 2
            place = actor.placement(x).numpy() * 0.25                       # radians on the PD target
        np.testing.assert_allclose(place[:, 0], -0.4 * v[0] * w_left, atol=1e-6)
        np.testing.assert_allclose(place[:, 6], -0.4 * v[0] * w_right, atol=1e-6)
        np.testing.assert_allclose(place[:, 1], 0.4 * max(v[1], 0) * w_left, atol=1e-6)
        np.testing.assert_allclose(place[:, 7], -0.4 * max(-v[1], 0) * w_right, atol=1e-6)
        assert np.all(place[:, [2, 3, 4, 5, 8, 9, 10, 11]] == 0)
    assert np.abs(place).max() > 0.01
    contract = _export_and_compare(res, env, obs, tmp_path / "p")
    assert contract.extra["placement_gain_rad_per_m_s"] == 0.4 and contract.extra["velocity_estimator"]
    with pytest.raises(Exception, match="placement_gain"):
        HumanoidPPOConfig(gait_reference=0.3, placement_gain=0.4).validate()        # no estimator
    with pytest.raises(Exception, match="placement_gain"):
        HumanoidPPOConfig(gait_reference=0.3, estimator=True, placement_gain=2.0).validate()


def test_clock_action_paces_the_gait_clock_and_is_refused_by_the_export(tmp_path):
    """--clock-action: a 13th action runs the gait clock at 0.5x-2.5x real time; the observation's gait phase,
    the knee reference and the stance windows follow it; at rate 1 the env is the plain one. The symmetric
    actor gives a robot and its mirror image the same clock rate. Not exportable yet: the export refuses it
    with the field and the fix, and writes nothing."""
    pytest.importorskip("torch")
    from onboard.errors import OnboardError
    from policies.humanoid_ppo import HumanoidPPOConfig, export_humanoid, save_checkpoint, torch_act_fn, train
    from sim.humanoid_env import (CLOCK_RATE_RANGE, GAIT_PERIOD_S, ShardedHumanoidEnv, actor_mirror, clock_rate,
                                  mirror)
    assert clock_rate(0.0) == 1.0 and clock_rate(-10) == CLOCK_RATE_RANGE[0] and clock_rate(10) == CLOCK_RATE_RANGE[1]
    plain = HumanoidVecEnv(3, task="stand", history=2, seed=4)
    paced = HumanoidVecEnv(3, task="stand", history=2, seed=4, clock_action=True)
    assert plain.action_dim == 12 and paced.action_dim == 13
    o_plain, _ = plain.reset()
    o_paced, _ = paced.reset()
    a = np.zeros((3, 13))
    a[1, 12], a[2, 12] = 2.0, -1.0                          # robot 1 at 2x, robot 2 at 0.5x, robot 0 at 1x
    for k in range(10):
        o_plain, r_plain, *_ = plain.step(a[:, :12])
        o_paced, r_paced, *_ = paced.step(a)
    np.testing.assert_allclose(paced.clock_s, [0.2, 0.4, 0.1], atol=1e-9)
    phase = paced.split_obs(o_paced)["gait_phase"][:, [-2, -1]]     # newest sin, cos
    np.testing.assert_allclose(phase, np.c_[np.sin(2 * np.pi * paced.clock_s / GAIT_PERIOD_S),
                                            np.cos(2 * np.pi * paced.clock_s / GAIT_PERIOD_S)], atol=1e-6)
    np.testing.assert_allclose(o_paced[0], o_plain[0], atol=1e-5)      # rate 1: the plain env's robot
    np.testing.assert_allclose(r_paced[0], r_plain[0], atol=1e-6)
    sharded = ShardedHumanoidEnv(4, shards=2, task="stand", history=2, seed=4, clock_action=True)
    try:
        sharded.reset()
        sharded.step_targets_clock(np.c_[np.tile(sharded.default_pose, (4, 1)), [1.0, 2.0, 1.0, 2.0]])
        assert sharded.action_dim == 13
    finally:
        sharded.close()
    cfg = HumanoidPPOConfig(num_envs=4, num_steps=8, total_steps=64, history=2, hidden=(32, 32),
                            critic_hidden=(32, 32), symmetry=True, gait_reference=0.3, force_step=True,
                            clock_action=True)
    res = train(cfg, log=lambda line: None)
    assert res.model.log_std.shape == (13,)
    import torch
    with torch.no_grad():
        for p in res.model.actor.parameters():
            p.add_(torch.randn_like(p) * 0.3)
    act = torch_act_fn(res)
    out, out_m = act(o_paced, paced), act(mirror(o_paced, actor_mirror(2)), paced)
    assert out.shape == (3, 13) and np.all((out[:, 12] >= 0.5) & (out[:, 12] <= 2.5))
    np.testing.assert_allclose(out_m[:, 12], out[:, 12], atol=1e-5)
    ck = save_checkpoint(res, tmp_path / "c.pt")
    with pytest.raises(OnboardError) as e:
        export_humanoid(ck, tmp_path / "c.onnx")
    assert e.value.field == "clock_action" and "--clock-action" in e.value.fix
    assert not (tmp_path / "c.onnx").exists()


def test_gait_period_is_the_policys_own_from_training_to_the_artifact_the_evaluation_and_the_node(tmp_path):
    """--gait-period: the env's observed phase and knee reference run at the chosen period; a policy trained
    with it carries it in its contract (extra.gait_period_s), and the evaluation (runtime + filter) and the
    robot node's loop build their observations with the artifact's period, not the default."""
    pytest.importorskip("torch")
    from types import SimpleNamespace

    from onboard.errors import ContractError, OnboardError
    from policies.humanoid_ppo import (HumanoidPPOConfig, evaluate, export_humanoid, runtime_act_fn, save_checkpoint,
                                       torch_act_fn, train)
    from ros_nodes.humanoid_policy_node import HumanoidPolicyLoop
    from sim.humanoid_env import GAIT_PERIOD_S, gait_period_of_contract, knee_reference
    env = HumanoidVecEnv(2, task="stand", history=2, seed=0, gait_period_s=0.6, step_in_place=True)
    obs, _ = env.reset()
    for _ in range(10):
        obs, *_ = env.step(np.zeros((2, 12)))
    t = env.t_step * env.dt_s
    np.testing.assert_allclose(env.split_obs(obs)["gait_phase"][:, [-2, -1]],
                               np.c_[np.sin(2 * np.pi * t / 0.6), np.cos(2 * np.pi * t / 0.6)], atol=1e-6)
    # a quarter period in, the left knee of the reference is fully lifted at 0.6 s and not yet at 0.8 s
    lifted = knee_reference(np.array([0.45]), 0.3, env.default_pose, 0.6)[0]
    assert lifted[0] == pytest.approx(env.default_pose[3] + 0.6)
    assert knee_reference(np.array([0.45]), 0.3, env.default_pose)[0][0] < lifted[0] - 0.05
    with pytest.raises(ConfigError) as e:
        HumanoidVecEnv(1, gait_period_s=0.2)
    assert e.value.field == "gait_period_s"
    cfg = HumanoidPPOConfig(num_envs=4, num_steps=8, total_steps=64, history=2, hidden=(32, 32),
                            critic_hidden=(32, 32), gait_period_s=0.6)
    res = train(cfg, log=lambda line: None)
    assert torch_act_fn(res).gait_period_s == 0.6
    ck = save_checkpoint(res, tmp_path / "p.pt")
    contract = export_humanoid(ck, tmp_path / "p.onnx")
    assert contract.extra["gait_period_s"] == 0.6
    from onboard.cli import main        # the re-export the contract error below points to
    assert main(["export", str(ck), "--out", str(tmp_path / "again.onnx")]) == 0
    from policies.artifact import load_artifact
    assert load_artifact(tmp_path / "again.onnx", robot="g1_12dof").contract.extra["gait_period_s"] == 0.6
    act = runtime_act_fn(tmp_path / "p.onnx", 1)
    assert act.gait_period_s == 0.6
    r = evaluate(act, episodes=1, num_envs=1, history=2, episode_s=0.2)
    assert r["episodes"] == 1
    with pytest.raises(OnboardError) as e:       # a simulator built with another period is refused
        evaluate(runtime_act_fn(tmp_path / "p.onnx", 1), episodes=1, num_envs=1, history=2, episode_s=0.2,
                 make_env=lambda n, seed: HumanoidVecEnv(n, history=2, seed=seed, episode_s=0.2))
    assert e.value.field == "gait_period_s"
    assert HumanoidPolicyLoop(str(tmp_path / "p.onnx")).gait_period_s == 0.6
    # artifacts from before the option carry 0.8; a bad value names the field and the fix
    assert gait_period_of_contract(SimpleNamespace(extra={})) == GAIT_PERIOD_S == 0.8
    with pytest.raises(ContractError) as e:
        gait_period_of_contract(SimpleNamespace(extra={"gait_period_s": "fast"}), "p.onnx")
    assert e.value.field == "extra.gait_period_s" and "re-export" in e.value.fix and e.value.file == "p.onnx"


def test_async_rollout_learns_one_update_behind_in_a_worker_process_and_reproduces_a_run():
    """--async-rollout: the robots step in a worker process (with its own copy of the model and the
    estimator fit) while the learner updates. Every update after the first learns from the rollout of the
    weights one update older (policy lag 1), by schedule rather than by timing, so two runs with one seed
    give the same weights; the worker is gone when training returns."""
    torch = pytest.importorskip("torch")
    import multiprocessing as mp

    from policies.humanoid_ppo import HumanoidPPOConfig, _new_model, train
    cfg = HumanoidPPOConfig(num_envs=4, num_steps=40, total_steps=4 * 40 * 4, history=2, hidden=(32, 32),
                            critic_hidden=(32, 32), gait_reference=0.3, symmetry=True, estimator=True,
                            placement_gain=0.4, physics_dt_s=0.005, async_rollout=True, log_every=1, seed=3)
    runs = [train(cfg, log=lambda line: None) for _ in range(2)]
    assert not mp.active_children()
    a, b = runs
    assert [r["policy_lag"] for r in a.history] == [0, 1, 1, 1] and a.env_steps == 640
    assert all(r["rollout_s"] > 0 and r["learn_s"] > 0 for r in a.history)
    assert "est_rmse_m_s" not in a.history[0] and np.isfinite(a.history[-1]["est_rmse_m_s"])
    torch.manual_seed(3)
    init = _new_model(cfg, HumanoidVecEnv(1, task="stand", history=2)).state_dict()
    sa, sb = a.model.state_dict(), b.model.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)                     # the same run twice
    assert not torch.equal(sa["critic.0.weight"], init["critic.0.weight"])   # and it learnt
    est = [k for k in sa if k.startswith("estimator.") and k.endswith("weight")]
    assert est and not all(torch.equal(sa[k], init[k]) for k in est)        # the worker's fit came back
    assert a.norm.frame.count > 100                                         # so did the statistics


def test_the_update_estimates_once_per_rollout_and_gets_the_same_policy():
    """The PPO update passes the velocity estimate made once for the whole rollout; the actor's output
    is the same as when it estimates for itself."""
    torch = pytest.importorskip("torch")
    from policies.humanoid_ppo import AsymmetricActorCritic
    torch.manual_seed(0)
    env = HumanoidVecEnv(1, task="stand", history=2)
    for symmetry in (False, True):
        ac = AsymmetricActorCritic(env.obs_dim, env.critic_dim, 12, (32, 32), (32, 32), -1.0, 0.3, 2, symmetry,
                                   True, True, 0.4)
        x = torch.randn(16, env.obs_dim + env.critic_dim)
        v = ac.estimate(x)
        assert v.shape == (16, 3) and not v.requires_grad
        assert torch.allclose(ac.dist(x, v).mean, ac.dist(x).mean, atol=1e-6)
        assert not torch.allclose(ac.dist(x, v + 1.0).mean, ac.dist(x).mean, atol=1e-3)   # v is really used
    plain = AsymmetricActorCritic(env.obs_dim, env.critic_dim, 12, (32, 32), (32, 32))
    assert plain.estimate(x) is None


def test_decoupled_ppo_clips_around_the_proximal_weights_and_equals_plain_ppo_when_on_policy():
    """ppo_update(logp_prox=...): stale actions (behaviour log-probabilities 0.5 below the current ones) start
    the plain update outside the clip range on every sample; the decoupled update starts inside it. With
    proximal == behaviour it is plain PPO, step for step."""
    torch = pytest.importorskip("torch")
    import copy

    from policies.humanoid_ppo import AsymmetricActorCritic, HumanoidPPOConfig
    from policies.ppo import Rollout, ppo_update
    torch.manual_seed(0)
    ac = AsymmetricActorCritic(20, 10, 12, (32, 32), (32, 32))
    ro = Rollout(8, 4, 30, 12)
    ro.obs[:] = np.random.default_rng(0).normal(size=ro.obs.shape)
    with torch.no_grad():
        d = ac.dist(torch.as_tensor(ro.obs.reshape(-1, 30)))
        u = d.sample()
        prox = d.log_prob(u).sum(-1)
    ro.u[:] = u.numpy().reshape(ro.u.shape)
    adv = np.random.default_rng(1).normal(size=(8, 4)).astype(np.float32)
    cfg = HumanoidPPOConfig(update_epochs=1, num_minibatches=1, num_envs=4, num_steps=8)

    def run(logp_behaviour, logp_prox):
        m = copy.deepcopy(ac)
        ro.logp[:] = logp_behaviour.numpy().reshape(ro.logp.shape)
        opt = torch.optim.Adam(m.parameters(), lr=1e-3)
        return m, ppo_update(m, opt, ro, adv, adv, cfg, np.random.default_rng(2), logp_prox=logp_prox)

    _, stale = run(prox - 0.5, None)
    _, decoupled = run(prox - 0.5, prox)
    assert stale["clip_frac"] == 1.0 and decoupled["clip_frac"] == 0.0
    a, _ = run(prox, None)
    b, _ = run(prox, prox)
    assert all(torch.allclose(p, q, atol=1e-7) for p, q in zip(a.parameters(), b.parameters()))


def test_weight_average_is_the_mean_of_the_snapshots_over_the_actor_only():
    """--average-frac: the kept actor parameters are the mean of the snapshots; the critic and the buffers
    (input statistics, mirror permutations) stay the run's last ones."""
    torch = pytest.importorskip("torch")
    from policies.humanoid_ppo import AsymmetricActorCritic, WeightAverager
    env = HumanoidVecEnv(1, task="stand", history=2)
    ac = AsymmetricActorCritic(env.obs_dim, env.critic_dim, 12, (32, 32), (32, 32), gait_reference=0.3, history=2,
                               symmetry=True, estimator=True)
    avg = WeightAverager(ac)
    assert avg.names and not any(n.startswith("critic.") for n in avg.names)
    assert any(n.startswith("estimator.") for n in avg.names)
    snaps = []
    gen = torch.Generator().manual_seed(0)
    for _ in range(3):
        with torch.no_grad():
            for p in ac.parameters():
                p.copy_(torch.randn(p.shape, generator=gen))
        snaps.append({n: p.detach().clone() for n, p in ac.named_parameters()})
        avg.add(ac)
    last = {k: v.clone() for k, v in ac.state_dict().items()}
    avg.apply(ac)
    assert avg.count == 3
    params = dict(ac.named_parameters())
    for n in avg.names:
        want = (snaps[0][n] + snaps[1][n] + snaps[2][n]) / 3
        assert torch.allclose(params[n], want, atol=1e-6), n
        assert not torch.allclose(params[n], snaps[2][n]), n        # it moved off the last weights
    for n, p in params.items():
        if n.startswith("critic."):
            assert torch.equal(p, last[n])
    for n, b in ac.named_buffers():
        assert torch.equal(b, last[n])


def test_trainer_with_average_frac_writes_the_average_and_the_last_weights(tmp_path):
    """The module keeps the averaged actor as <out>.pt/.onnx and the last weights as <out>_last.pt/.onnx; the
    two differ in the actor and agree in the critic."""
    import os
    import subprocess
    import sys
    torch = pytest.importorskip("torch")
    out = tmp_path / "g1" / "policy"
    r = subprocess.run([sys.executable, "-m", "policies.humanoid_ppo", "--task", "stand", "--total-steps", "960",
                        "--num-envs", "4", "--average-frac", "0.5", "--average-every", "2", "--out", str(out),
                        "--eval-episodes", "0"], capture_output=True, text=True,
                       env=dict(os.environ, ORT_DISABLE_TELEMETRY="1"), timeout=300)
    assert r.returncode == 0, r.stderr
    line = next(json.loads(x) for x in r.stdout.splitlines() if '"weight_average"' in x)
    assert line["weight_average"]["snapshots"] == 3      # 10 updates: after updates 6, 8 and 10 (the last half)
    for suffix in ("", "_last"):
        assert (out.parent / f"policy{suffix}.pt").is_file() and (out.parent / f"policy{suffix}.onnx").is_file()
    a = torch.load(out.parent / "policy.pt", weights_only=False)["state_dict"]
    b = torch.load(out.parent / "policy_last.pt", weights_only=False)["state_dict"]
    assert not torch.equal(a["actor.0.weight"], b["actor.0.weight"])
    assert torch.equal(a["critic.0.weight"], b["critic.0.weight"])


def test_std_anneal_caps_the_noise_only_over_the_last_share_of_training_down_to_final_std():
    """--final-std: before the anneal the noise is the policy's own; over the last std_anneal_frac the cap falls
    log-linearly per joint from where each joint was to final_std; a joint already below the cap keeps its own."""
    torch = pytest.importorskip("torch")
    from policies.humanoid_ppo import AsymmetricActorCritic, HumanoidPPOConfig, anneal_std
    env = HumanoidVecEnv(1, task="stand", history=2)
    ac = AsymmetricActorCritic(env.obs_dim, env.critic_dim, 12, (32, 32), (32, 32))
    with torch.no_grad():
        ac.log_std.copy_(torch.full((12,), math.log(0.4)))
        ac.log_std[0] = math.log(0.1)                 # one joint already quieter than the target
    cfg = HumanoidPPOConfig(final_std=0.2, std_anneal_frac=0.3)
    cfg.validate()
    assert anneal_std(ac, 0.5, cfg, None) is None     # before 70% of training: untouched
    assert torch.allclose(ac.log_std[1:].exp(), torch.tensor(0.4))
    start = anneal_std(ac, 0.85, cfg, None)           # half-way through the anneal: the geometric mean
    assert torch.allclose(ac.log_std[1:].exp(), torch.tensor(math.sqrt(0.4 * 0.2)), atol=1e-6)
    assert math.isclose(float(ac.log_std[0].exp()), 0.1, rel_tol=1e-6)
    with torch.no_grad():
        ac.log_std[1] = math.log(0.9)                 # the update pushed a joint up: the cap pulls it back
    assert anneal_std(ac, 1.0, cfg, start) is start
    assert torch.allclose(ac.log_std[1:].exp(), torch.tensor(0.2), atol=1e-6)
    assert math.isclose(float(ac.log_std[0].exp()), 0.1, rel_tol=1e-6)
