"""Robot profiles and the policy contract: load, round-trip, refuse bad input."""
import json

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from onboard.errors import ConfigError, ContractError
from onboard.spec import PolicyContract, load_robot
from onboard.spec.normalize import normalize, stats_from_array, unnormalize


def _contract(profile, **over):
    doc = dict(
        policy_kind="diffusion",
        robot={"name": profile.name, "profile_hash": profile.hash, "joint_names": list(profile.joint_names)},
        observation={"keys": [{"name": "joint_pos", "shape": [7], "units": "rad"}], "obs_horizon": 2,
                     "normalization": {"joint_pos": {"kind": "minmax", "min": [-1.0] * 7, "max": [1.0] * 7}}},
        action={"type": "joint_position_absolute", "names": list(profile.action_names),
                "dim": len(profile.action_names), "pred_horizon": 16, "action_horizon": 8, "control_rate_hz": 10},
        sampler={"kind": "ddim", "train_timesteps": 3, "alphas_cumprod": [0.9, 0.5, 0.1]},
    )
    doc.update(over)
    return PolicyContract(**doc)


def test_panda_profile_carries_the_shared_figures():
    p = load_robot("franka_panda")
    assert p.joint_names[0] == "panda_joint1" and p.n_joints == 7
    assert p.limits.velocity[4] == pytest.approx(2.61)
    assert p.limits.position[3].tolist() == pytest.approx([-3.0718, -0.0698])
    assert p.action_names[-1] == "gripper_width"


def test_unknown_robot_names_the_field_and_the_choices():
    with pytest.raises(ConfigError) as e:
        load_robot("no_such_robot")
    assert "robot" in str(e.value) and "franka_panda" in str(e.value)


def test_malformed_profile_yaml_names_file_and_line(tmp_path):
    f = tmp_path / "bad.yaml"
    f.write_text("name: x\nkind: arm\njoint_names: [a, b\n")
    with pytest.raises(ConfigError) as e:
        load_robot(f)
    assert str(f) in str(e.value) and "line" in str(e.value)


def test_contract_round_trips_through_json():
    p = load_robot("franka_panda")
    c = _contract(p)
    c2 = PolicyContract.from_json(c.to_json())
    assert c2 == c
    assert c2.obs_dim == 7 and c2.action_dim == 8 and c2.action_horizon == 8


def test_contract_with_wrong_joint_names_is_refused():
    p = load_robot("franka_panda")
    c = _contract(p, robot={"name": p.name, "joint_names": ["j%d" % i for i in range(7)]})
    with pytest.raises(ContractError) as e:
        c.check_robot(p, source="policy.onnx")
    assert "policy.onnx" in str(e.value) and "robot.joint_names" in str(e.value)


def test_contract_with_wrong_action_dim_is_refused():
    p = load_robot("franka_panda")
    names = list(p.joint_names)
    c = _contract(p, action={"type": "joint_position_absolute", "names": names, "dim": 7,
                             "pred_horizon": 16, "action_horizon": 8, "control_rate_hz": 10})
    with pytest.raises(ContractError) as e:
        c.check_robot(p)
    assert "action.names" in str(e.value)


@pytest.mark.parametrize("text,fld", [
    ("not json", "onboard.contract"),
    (json.dumps({"schema_version": 99}), "schema_version"),
    (json.dumps({"schema_version": 1, "policy_kind": "diffusion"}), "robot"),
])
def test_malformed_contract_json_names_the_field(text, fld):
    with pytest.raises(ContractError) as e:
        PolicyContract.from_json(text, source="a.onnx")
    assert fld in str(e.value) and "a.onnx" in str(e.value)


@settings(max_examples=60, deadline=None)
@given(st.dictionaries(st.sampled_from(["policy_kind", "robot", "observation", "action", "sampler"]),
                       st.one_of(st.none(), st.integers(), st.text(max_size=5), st.lists(st.integers(), max_size=3),
                                 st.dictionaries(st.text(max_size=4), st.integers(), max_size=3))))
def test_contract_parser_never_accepts_garbage_silently(doc):
    doc = dict(doc, schema_version=1)
    try:
        PolicyContract.from_dict(doc)
    except ContractError:
        return
    raise AssertionError(f"accepted {doc}")


@settings(max_examples=50, deadline=None)
@given(st.integers(2, 40), st.integers(1, 6), st.sampled_from(["minmax", "meanstd"]))
def test_normalize_then_unnormalize_is_identity(n, d, kind):
    rng = np.random.default_rng(n * 7 + d)
    x = rng.normal(size=(n, d)) * rng.uniform(0.1, 10, size=d)
    st_ = stats_from_array(x, kind)
    y = normalize(x, st_)
    if kind == "minmax":
        assert y.min() >= -1 - 1e-5 and y.max() <= 1 + 1e-5
    np.testing.assert_allclose(unnormalize(y, st_), x, rtol=1e-4, atol=1e-4)


def test_constant_feature_normalizes_to_zero_not_nan():
    x = np.ones((5, 2))
    y = normalize(x, stats_from_array(x))
    assert np.all(y == 0)
