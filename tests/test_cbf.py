"""CBF-QPs (OSQP): identity without conflict, nearest safe command, invariance of the safe set."""
import numpy as np
from scipy.optimize import minimize

from onboard.spec import load_robot
from sim2real.cbf import ArmWorkspaceCBF, GeofenceCBF, SlackQP
from sim2real.kinematics import SerialArmKinematics

BIG = np.full(3, 50.0)


def _fence():
    return GeofenceCBF([-1, -1, 0], [1, 1, 2], v_max=2.0, alpha1=2.0, alpha2=2.0, alpha_v=2.0, slack_weight=1e6)


def test_geofence_cbf_is_the_identity_when_there_is_no_conflict():
    f = _fence()
    a = np.array([0.3, -0.2, 0.1])
    out = f.filter_accel([0, 0, 1], [0, 0, 0], a, -BIG, BIG)
    assert np.array_equal(out, a) and f.qp.last_status == "identity"


def test_geofence_cbf_returns_the_nearest_safe_acceleration():
    f = _fence()
    p, v, a_nom = np.array([0.8, 0, 1]), np.array([1.0, 0.5, 0]), np.array([4.0, 1.0, 0.0])
    out = f.filter_accel(p, v, a_nom, -BIG, BIG)
    G, b = f.rows(p, v)
    assert np.all(G @ out >= b - 1e-4)                         # safe (slack ~ 0 with a heavy penalty)
    ref = minimize(lambda u: np.sum((u - a_nom) ** 2), a_nom, method="SLSQP",
                   constraints=[{"type": "ineq", "fun": lambda u: G @ u - b}]).x
    assert np.allclose(out, ref, atol=1e-3)                    # and the nearest one


def test_double_integrator_under_the_geofence_cbf_never_leaves_the_box():
    f = _fence()
    rng = np.random.default_rng(0)
    p, v, dt = np.array([0.0, 0.0, 1.0]), np.zeros(3), 0.002
    for _ in range(4000):
        a = f.filter_accel(p, v, rng.uniform(-20, 20, 3), -np.full(3, 20.0), np.full(3, 20.0))
        v = v + a * dt
        p = p + v * dt
        assert np.all(p >= f.lo - 1e-3) and np.all(p <= f.hi + 1e-3)
        assert np.linalg.norm(v) <= f.v_max + 1e-2


def test_qp_reuses_one_osqp_problem_across_calls():
    qp = SlackQP(3, 2)
    solver = qp._solver
    for k in range(5):
        u = qp.solve(np.array([1.0, 0, 0]), np.array([[-1.0, 0, 0], [0, 1.0, 0]]), np.array([-0.5 + 0.1 * k, 0.0]),
                     -BIG, BIG)
        assert u[0] == np.clip(u[0], 0.5 - 0.1 * k - 1e-3, 0.5 - 0.1 * k + 1e-3)
    assert qp._solver is solver


def _arm():
    p = load_robot("franka_panda")
    kin = SerialArmKinematics.from_profile(p)
    return p, kin, ArmWorkspaceCBF(kin, [0.1, -0.6, 0.0], [0.85, 0.6, 1.0], alpha=5.0, slack_weight=1e6)


def test_arm_jacobian_matches_finite_differences_of_the_fk():
    p, kin, _ = _arm()
    q = p.default_pose + 0.1
    x, J = kin.position_jacobian(q)
    eps = 1e-7
    Jn = np.stack([(kin.tcp_position(q + eps * np.eye(7)[i]) - x) / eps for i in range(7)], axis=1)
    assert np.allclose(J, Jn, atol=1e-5)
    # at q = 0 the flange points down at (0.088, 0, 0.926): the known Panda zero pose
    assert np.allclose(kin.tcp_position(np.zeros(7)), [0.088, 0.0, 0.333 + 0.316 + 0.384 - 0.107 - 0.1034], atol=1e-6)


def test_arm_cbf_is_the_identity_when_there_is_no_conflict():
    p, kin, cbf = _arm()
    qd = np.full(7, 0.05)
    lim = np.full(7, 2.0)
    assert np.array_equal(cbf.filter_velocity(p.default_pose, qd, -lim, lim), qd)


def test_arm_cbf_keeps_the_tcp_inside_the_box_under_outward_velocity_commands():
    p, kin, cbf = _arm()
    q, dt = p.default_pose.copy(), 0.01
    lim = p.limits.velocity
    for _ in range(300):
        x, J = kin.position_jacobian(q)
        qd_nom = np.linalg.pinv(J) @ np.array([0.0, 0.0, -2.0])     # dive toward the floor
        qd = cbf.filter_velocity(q, qd_nom, -lim, lim)
        q = q + qd * dt
        assert kin.tcp_position(q)[2] >= -1e-3
    assert kin.tcp_position(q)[2] < 0.05        # it got close: the barrier slowed it, not blocked it
