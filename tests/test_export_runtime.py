"""Export writes a parity-checked, self-describing artifact; the runtime runs it without torch and refuses bad ones."""
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import onnx
import pytest

from diffusion_synth import PANDA, reach_demos, tiny_config
from onboard.cli import main
from onboard.errors import ContractError, OnboardError
from onboard.spec import CONTRACT_KEY, PolicyContract
from policies.diffusion.schedule import alphas_cumprod_for
from policies.runtime import PolicyRuntime

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from policies.diffusion.train import train

    root = tmp_path_factory.mktemp("export")
    train(tiny_config(steps=20), reach_demos(), root / "train", progress=False)
    return root / "train" / "checkpoint.pt"


@pytest.fixture(scope="module")
def artifact(trained, tmp_path_factory):
    out = tmp_path_factory.mktemp("artifact") / "policy.onnx"
    assert main(["export", str(trained), "--out", str(out)]) == 0
    return out


def _obs(data, i):
    return {k: v[i] for k, v in data.obs.items()}


def _copy_artifact(src: Path, dst_dir: Path, name="policy.onnx") -> Path:
    dst_dir.mkdir(parents=True, exist_ok=True)
    shutil.copy(src, dst_dir / name)
    shutil.copy(src.with_name(src.name + ".data"), dst_dir / (src.name + ".data"))
    return dst_dir / name


class RecordingSafety:
    """A tiny real safety object: clamps to the profile's joint limits and records every call."""

    def __init__(self):
        self.chunks, self.commands, self.resets = [], [], []
        self._last = None

    def reset(self, state, t):
        self.resets.append(t)
        self._last = np.asarray(state["q"], float)

    def filter_chunk(self, chunk, state, t):
        self.chunks.append(np.array(chunk))
        return chunk

    def filter(self, cmd, t, state=None):
        if cmd is None:            # no fresh command: hold the last output
            out = self._last.copy()
        else:
            out = np.asarray(cmd, float).copy()
            out[:7] = np.clip(out[:7], PANDA.limits.position[:, 0], PANDA.limits.position[:, 1])
        self.commands.append((cmd is None, out.copy()))
        self._last = out
        return out


# ---- export ---------------------------------------------------------------------------------------
def test_export_writes_graph_and_external_weights_with_a_contract_that_round_trips(artifact):
    data = artifact.with_name("policy.onnx.data")
    assert artifact.is_file() and data.is_file()
    assert not [p for p in artifact.parent.iterdir() if p.name.startswith(".export-")]
    model = onnx.load(str(artifact), load_external_data=False)
    locations = {e.value for t in model.graph.initializer for e in t.external_data if e.key == "location"}
    assert locations == {"policy.onnx.data"}            # relative name: the pair can be moved together
    inline = sum(len(t.raw_data) for t in model.graph.initializer)
    assert data.stat().st_size > 10 * inline              # the weights live in .data (tiny ones may stay inline)
    c = PolicyContract.from_json({p.key: p.value for p in model.metadata_props}[CONTRACT_KEY])
    assert c.policy_kind == "diffusion" and c.robot["name"] == "franka_panda"
    assert c.robot["joint_names"] == list(PANDA.joint_names) and c.robot["profile_hash"] == PANDA.hash
    assert c.action["names"] == list(PANDA.action_names) and c.action["type"] == "joint_position_absolute"
    assert c.obs_keys == ["joint_pos", "gripper_width", "goal"] and c.obs_dim == 11
    assert (c.obs_horizon, c.pred_horizon, c.action_horizon) == (2, 16, 8)
    assert c.sampler["kind"] == "ddim" and c.sampler["default_steps"] == 10 and c.sampler["few_steps"] <= 4
    np.testing.assert_allclose(c.sampler["alphas_cumprod"], alphas_cumprod_for(100))
    assert c.graphs["denoiser"]["inputs"]["obs_cond"] == ["batch", 22]
    assert c.provenance["train_config"]["pred_horizon"] == 16 and c.provenance["dataset"] == "synthetic"
    assert "git_sha" in c.provenance
    assert set(c.observation["normalization"]) == {"joint_pos", "gripper_width", "goal"}


def test_exported_graph_has_a_dynamic_batch_axis(artifact):
    rt = PolicyRuntime(artifact)
    rng = np.random.default_rng(0)
    for b in (1, 3, 5):
        eps = rt.artifact.denoise(rng.standard_normal((b, 16, 8)), np.full(b, 9), rng.standard_normal((b, 22)))
        assert eps.shape == (b, 16, 8)


def test_parity_failure_refuses_to_write_anything_and_exits_2(trained, tmp_path, monkeypatch, capsys):
    import policies.export as E

    real = E.torch_reference
    monkeypatch.setattr(E, "torch_reference", lambda *a: real(*a) + 1e-3)
    out = tmp_path / "policy.onnx"
    with pytest.raises(OnboardError) as err:
        E.export_checkpoint(trained, out)
    assert err.value.field == "parity"
    assert main(["export", str(trained), "--out", str(out)]) == 2
    assert "parity" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []      # no graph, no .data, no temp folder


def test_a_failed_re_export_leaves_the_previous_artifact_intact(artifact, trained, tmp_path, monkeypatch):
    import policies.export as E

    good = _copy_artifact(artifact, tmp_path)
    before = good.read_bytes(), good.with_name("policy.onnx.data").read_bytes()
    monkeypatch.setattr(E, "torch_reference", lambda *a: np.full_like(a[1], np.nan))
    with pytest.raises(OnboardError):
        E.export_checkpoint(trained, good)
    assert (good.read_bytes(), good.with_name("policy.onnx.data").read_bytes()) == before


def test_export_of_a_missing_or_corrupt_checkpoint_exits_2_naming_it(tmp_path, capsys):
    bad = tmp_path / "checkpoint.pt"
    assert main(["export", str(bad), "--out", str(tmp_path / "p.onnx")]) == 2
    bad.write_bytes(b"not a checkpoint")
    assert main(["export", str(bad), "--out", str(tmp_path / "p.onnx")]) == 2
    assert str(bad) in capsys.readouterr().err


# ---- refusing bad artifacts -------------------------------------------------------------------------
@pytest.mark.parametrize("damage", ["truncate", "random_bytes"])
def test_a_corrupt_onnx_file_is_refused_naming_the_file(artifact, tmp_path, damage):
    p = _copy_artifact(artifact, tmp_path)
    raw = p.read_bytes()
    p.write_bytes(raw[: len(raw) // 3] if damage == "truncate" else np.random.default_rng(0).bytes(len(raw)))
    with pytest.raises(OnboardError) as err:
        PolicyRuntime(p)
    assert str(p) in str(err.value)


def test_a_missing_external_data_file_is_refused_naming_it(artifact, tmp_path):
    p = _copy_artifact(artifact, tmp_path)
    p.with_name("policy.onnx.data").unlink()
    with pytest.raises(OnboardError, match=r"policy\.onnx\.data"):
        PolicyRuntime(p)


def _with_metadata(artifact: Path, tmp_path: Path, value: str | None) -> Path:
    p = _copy_artifact(artifact, tmp_path)
    model = onnx.load(str(p), load_external_data=False)
    kept = [(q.key, q.value) for q in model.metadata_props if q.key != CONTRACT_KEY]
    del model.metadata_props[:]
    for k, v in kept:
        model.metadata_props.add(key=k, value=v)
    if value is not None:
        model.metadata_props.add(key=CONTRACT_KEY, value=value)
    onnx.save(model, str(p))
    return p


def test_an_artifact_without_a_contract_is_refused(artifact, tmp_path):
    p = _with_metadata(artifact, tmp_path, None)
    with pytest.raises(ContractError) as err:
        PolicyRuntime(p)
    assert CONTRACT_KEY in err.value.field and str(p) in str(err.value)


def test_a_malformed_contract_is_refused_naming_the_field(artifact, tmp_path):
    with pytest.raises(ContractError):
        PolicyRuntime(_with_metadata(artifact, tmp_path / "a", "{not json"))
    doc = json.loads(PolicyRuntime(artifact).contract.to_json())
    doc["action"]["action_horizon"] = 99
    with pytest.raises(ContractError) as err:
        PolicyRuntime(_with_metadata(artifact, tmp_path / "b", json.dumps(doc)))
    assert err.value.field == "action.action_horizon"


def test_a_contract_whose_obs_dim_disagrees_with_the_graph_is_refused(artifact, tmp_path):
    doc = json.loads(PolicyRuntime(artifact).contract.to_json())
    doc["observation"]["keys"][2]["shape"] = [4]
    doc["observation"]["normalization"].pop("goal")
    with pytest.raises(ContractError) as err:
        PolicyRuntime(_with_metadata(artifact, tmp_path, json.dumps(doc)))
    assert err.value.field == "graphs.denoiser.inputs.obs_cond"


def test_a_contract_with_other_joint_names_than_the_robot_is_refused(artifact, tmp_path):
    text = PANDA.path.read_text().replace("panda_joint7]", "panda_wrist]")
    renamed = tmp_path / "franka_panda.yaml"
    renamed.write_text(text)
    with pytest.raises(ContractError) as err:
        PolicyRuntime(artifact, robot=str(renamed))
    assert err.value.field == "robot.joint_names" and str(artifact) in str(err.value)


# ---- running ------------------------------------------------------------------------------------------
def test_receding_horizon_executes_exactly_action_horizon_commands_per_chunk(artifact):
    safety = RecordingSafety()
    rt = PolicyRuntime(artifact, safety=safety, num_steps=4, seed=1)
    data = reach_demos(1)
    rt.reset(state={"q": np.r_[data.obs["joint_pos"][0], 0.04]}, t=0.0)
    cmds = [rt.act(_obs(data, i), t=0.1 * i) for i in range(3 * 8)]
    assert rt.stats["chunks"] == 3 and len(safety.chunks) == 3
    assert all(c.shape == (8, 8) for c in safety.chunks)        # the executed part, action_horizon rows
    np.testing.assert_allclose(np.array(cmds), np.concatenate(safety.chunks))   # executed in order
    assert len(safety.commands) == 24 and safety.resets == [0.0]
    assert rt.act(_obs(data, 24)) is not None and rt.stats["chunks"] == 4


def test_history_padding_at_reset_matches_predict_chunk_with_a_single_observation(artifact):
    data = reach_demos(1)
    a = PolicyRuntime(artifact, num_steps=4, seed=7)
    b = PolicyRuntime(artifact, num_steps=4, seed=7)
    a.reset()
    first = a.act(_obs(data, 0))
    chunk = b.predict_chunk([_obs(data, 0), _obs(data, 0)])
    np.testing.assert_allclose(first, chunk[1], rtol=0, atol=1e-6)   # index obs_horizon-1 is "now"
    c = PolicyRuntime(artifact, num_steps=4, seed=7)
    np.testing.assert_allclose(c.predict_chunk([_obs(data, 0)]), chunk, atol=1e-6)
    assert chunk.shape == (16, 8)


def test_temporal_ensembling_replans_every_step_and_averages_overlapping_chunks(artifact):
    rt = PolicyRuntime(artifact, num_steps=2, temporal_ensemble=0.1, seed=3)
    data = reach_demos(1)
    cmds = [rt.act(_obs(data, i)) for i in range(5)]
    assert rt.stats["chunks"] == 5 and all(np.all(np.isfinite(c)) for c in cmds)


def test_a_non_finite_observation_holds_through_the_filter_and_is_counted(artifact):
    safety = RecordingSafety()
    rt = PolicyRuntime(artifact, safety=safety, num_steps=2)
    data = reach_demos(1)
    rt.reset(state={"q": np.r_[data.obs["joint_pos"][0], 0.04]}, t=0.0)
    good = rt.act(_obs(data, 0), t=0.0)
    bad = _obs(data, 1)
    bad["joint_pos"] = bad["joint_pos"].copy()
    bad["joint_pos"][2] = np.nan
    held = rt.act(bad, t=0.1)
    np.testing.assert_array_equal(held, good)
    assert safety.commands[-1][0] is True                   # the filter was asked to hold (no fresh command)
    assert rt.stats["nonfinite_obs"] == 1 and rt.stats["holds"] == 1
    assert np.all(np.isfinite(rt.act(_obs(data, 2), t=0.2)))
    assert rt.stats["chunks"] == 2                          # replanned after the gap


def test_without_a_filter_a_non_finite_observation_holds_the_last_command(artifact):
    rt = PolicyRuntime(artifact, num_steps=2)
    data = reach_demos(1)
    good = rt.act(_obs(data, 0))
    bad = {k: np.full_like(v, np.inf) for k, v in _obs(data, 1).items()}
    np.testing.assert_array_equal(rt.act(bad), good)


def test_a_missing_observation_key_is_an_error_naming_it(artifact):
    rt = PolicyRuntime(artifact)
    obs = _obs(reach_demos(1), 0)
    del obs["goal"]
    with pytest.raises(OnboardError, match="observation.goal"):
        rt.act(obs)


def test_runtime_imports_and_runs_an_artifact_where_torch_cannot_be_imported(artifact):
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
        rt = PolicyRuntime({str(artifact)!r}, robot="franka_panda", num_steps=4)
        obs = {{"joint_pos": np.zeros(7, np.float32) - 0.5, "gripper_width": np.array([0.04], np.float32),
               "goal": np.zeros(3, np.float32)}}
        cmds = [rt.act(obs) for _ in range(9)]
        assert rt.stats["chunks"] == 2 and all(np.isfinite(c).all() for c in cmds)
        assert not any(m == "torch" or m.startswith("torch.") for m in sys.modules), "torch was imported"
        print("ok", cmds[-1].shape)
    """)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, cwd=ROOT, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "ok (8,)" in r.stdout
