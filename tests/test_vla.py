"""The VLA: tokenizer, model, training, three-graph export with parity, and the instruction-aware runtime.

A tiny synthetic LeRobot v3 dataset (real writer, real mp4s) drives a few
training steps of a tiny model; the export and runtime tests use that
artifact. The last test runs the whole path on data collected in the
language-conditioned MuJoCo env (skipped until ``sim.lang_env`` exists).
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from onboard.errors import OnboardError
from policies.vla.tokenizer import BOS_ID, EOS_ID, PAD_ID, UNK_ID, WordTokenizer

CORPUS = ["push the red cube to the pad", "put the green block on the pad", "pick up the blue cube and place it on the pad",
          "move the yellow cube onto the pad"]
STATE_SPEC = [{"name": "joint_pos", "shape": [7], "units": "rad"}, {"name": "joint_vel", "shape": [7], "units": "rad/s"},
              {"name": "gripper_width", "shape": [1], "units": "m"}, {"name": "ee_pos", "shape": [3], "units": "m"}]
IMG = 32


# ---- tokenizer -----------------------------------------------------------------------------------
def test_tokenizer_round_trips_training_instructions():
    tok = WordTokenizer.build(CORPUS)
    for text in CORPUS:
        ids, mask = tok.encode(text, 16)
        assert ids.dtype == np.int64 and ids.shape == (16,) and mask.dtype == bool
        assert ids[0] == BOS_ID and ids[mask.sum() - 1] == EOS_ID and np.all(ids[~mask] == PAD_ID)
        assert tok.decode(ids) == text
    assert tok.decode(tok.encode("Push the RED cube, to the pad!", 16)[0]) == "push the red cube to the pad"
    again = WordTokenizer.from_dict(tok.to_dict())
    assert again.vocab == tok.vocab and np.array_equal(again.encode(CORPUS[2], 16)[0], tok.encode(CORPUS[2], 16)[0])


def test_tokenizer_maps_unknown_words_to_unk_and_names_them():
    tok = WordTokenizer.build(CORPUS)
    assert tok.unknown_words("shove the crimson cube to the pad") == ["shove", "crimson"]
    ids, _ = tok.encode("shove the crimson cube", 8)
    assert list(ids[:6]) == [BOS_ID, UNK_ID, tok.index["the"], UNK_ID, tok.index["cube"], EOS_ID]
    assert tok.decode(ids) == "<unk> the <unk> cube"
    ids, mask = tok.encode(" ".join(["red"] * 30), 8)          # long text: cut, eos kept
    assert mask.all() and ids[-1] == EOS_ID
    with pytest.raises(OnboardError):
        WordTokenizer.from_dict({"kind": "word", "vocab": ["a", "b"]})


# ---- model ---------------------------------------------------------------------------------------
def test_model_maps_instruction_images_and_state_to_an_action_chunk():
    import torch

    from policies.vla.model import VLAConfig, VLAPolicy

    cfg = VLAConfig(vocab_size=20, max_len=10, state_dim=11, action_dim=8, image_size=(IMG, IMG), d_model=32,
                    n_heads=2, text_layers=1, fusion_layers=1, cnn_channels=(8, 16, 16), n_readout=2,
                    head_down_dims=(16, 32), pretrained_text_encoder="/nonexistent/encoder.pt")
    m = VLAPolicy(cfg).eval()
    assert cfg.pretrained_text_encoder is None                  # absent path: from scratch, no error
    b = 3
    ids = torch.randint(4, 20, (b, 10))
    mask = torch.ones(b, 10, dtype=torch.bool)
    imgs = [torch.randint(0, 256, (b, IMG, IMG, 3), dtype=torch.uint8) for _ in cfg.cameras]
    ctx = m.context(ids, mask, imgs, torch.randn(b, 11))
    assert ctx.shape == (b, cfg.context_dim)
    v = m.head(torch.randn(b, 16, 8), torch.rand(b), ctx)
    assert v.shape == (b, 16, 8)
    chunk = m.sample(ctx, torch.randn(b, 16, 8), num_steps=3)
    assert chunk.shape == (b, 16, 8) and float(chunk.abs().max()) <= 1.0
    # padding is masked: what stands in padded positions does not change the context
    mask2 = mask.clone()
    mask2[:, -3:] = False
    ids2 = ids.clone()
    ids2[:, -3:] = 0
    a = m.context(ids2, mask2, imgs, torch.zeros(b, 11))
    ids2[:, -3:] = 7
    assert torch.allclose(a, m.context(ids2, mask2, imgs, torch.zeros(b, 11)), atol=1e-5)


# ---- a tiny dataset, training and export (shared by the tests below) -----------------------------
def _write_tiny_dataset(root, episodes=3, length=20, seed=0):
    from policies.dataset import LeRobotDatasetWriter, features_from_env

    rng = np.random.default_rng(seed)
    names = [f"panda_joint{i}" for i in range(1, 8)] + ["gripper_width"]
    feats = features_from_env(STATE_SPEC, names, cameras=("front", "wrist"), image_size=(IMG, IMG))
    with LeRobotDatasetWriter(root, fps=10, features=feats, robot_type="franka_panda") as w:
        for ep in range(episodes):
            q0 = np.array([0.0, -0.785, 0.0, -2.356, 0.0, 1.571, 0.785]) + rng.normal(0, 0.05, 7)
            instr = CORPUS[ep % len(CORPUS)]
            for k in range(length):
                q = q0 + 0.01 * k
                frame = {"observation.joint_pos": q.astype(np.float32),
                         "observation.joint_vel": np.zeros(7, np.float32),
                         "observation.gripper_width": np.array([0.04], np.float32),
                         "observation.ee_pos": np.array([0.4, 0.0, 0.3], np.float32) + 0.001 * k,
                         "observation.images.front": rng.integers(0, 256, (IMG, IMG, 3), dtype=np.uint8),
                         "observation.images.wrist": rng.integers(0, 256, (IMG, IMG, 3), dtype=np.uint8),
                         "action": np.concatenate([q + 0.01, [0.04]]).astype(np.float32)}
                w.add_frame(frame, task=instr)
            w.save_episode()
    return root


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    from policies.dataset import load_dataset
    from policies.vla.export import export_checkpoint
    from policies.vla.train import data_from_dataset, tiny_config, train

    base = tmp_path_factory.mktemp("vla")
    ds = load_dataset(_write_tiny_dataset(base / "data"))
    data = data_from_dataset(ds, source="tiny")
    ckpt = train(tiny_config(steps=3), data, base / "train", progress=False)
    res = export_checkpoint(base / "train" / "checkpoint.pt", base / "artifact")
    return {"base": base, "data": data, "ckpt": ckpt, "export": res}


def test_training_writes_a_checkpoint_with_tokenizer_and_normalization(tiny_run):
    ck = tiny_run["ckpt"]
    assert ck["kind"] == "vla" and ck["step"] == 3 and np.isfinite(ck["loss_history"][-1][1])
    tok = WordTokenizer.from_dict(ck["tokenizer"])
    assert tok.unknown_words(" ".join(CORPUS[:3])) == []           # the 3 episodes' instructions
    assert set(ck["normalization"]["state"]) == {"joint_pos", "gripper_width", "ee_pos"}   # no velocities
    assert (tiny_run["base"] / "train" / "checkpoint.pt").is_file()


def test_random_shift_moves_images_by_at_most_the_pad():
    import torch

    from policies.vla.train import random_shift

    img = torch.zeros(4, 16, 16, 3, dtype=torch.uint8)
    img[:, 8, 8] = 255
    out = random_shift(img, 2, torch.Generator().manual_seed(0))
    assert out.shape == img.shape and out.dtype == torch.uint8
    for b in range(4):
        ys, xs = np.nonzero(out[b, :, :, 0].numpy())
        assert len(ys) == 1 and abs(ys[0] - 8) <= 2 and abs(xs[0] - 8) <= 2


def test_export_writes_three_graphs_each_matching_torch(tiny_run):
    res = tiny_run["export"]
    out = res.out_dir
    for name in ("policy.onnx", "text_encoder.onnx", "obs_encoder.onnx"):
        assert (out / name).is_file() and (out / (name + ".data")).is_file()
    assert set(res.parity) == {"text_encoder", "obs_encoder", "action_head", "chunk"}
    assert all(v <= 1e-4 for v in res.parity.values()), res.parity
    c = res.contract
    assert c.policy_kind == "vla" and c.sampler["kind"] == "flow_euler"
    assert c.sampler["default_steps"] == 10 and c.sampler["few_steps"] < 10
    assert c.extra["vla"]["tokenizer"]["vocab"][:4] == ["<pad>", "<unk>", "<bos>", "<eos>"]
    assert set(c.extra["vla"]["graphs"]) == {"text_encoder", "obs_encoder", "action_head"}
    assert c.observation["image_size"] == [IMG, IMG] and c.observation["cameras"] == ["front", "wrist"]


def test_export_writes_nothing_when_parity_fails(tiny_run, tmp_path):
    from policies.vla.export import export_checkpoint

    with pytest.raises(OnboardError, match="parity"):
        export_checkpoint(tiny_run["base"] / "train" / "checkpoint.pt", tmp_path / "art", tolerance=-1.0)
    assert not (tmp_path / "art").exists() or list((tmp_path / "art").iterdir()) == []


def test_policy_runtime_points_vla_artifacts_to_vla_runtime(tiny_run):
    from policies.runtime import PolicyRuntime

    with pytest.raises(OnboardError, match="VLARuntime"):
        PolicyRuntime(tiny_run["export"].entry)


def test_runtime_refuses_a_sibling_graph_from_another_export(tiny_run, tmp_path):
    import shutil

    from onboard.errors import ContractError
    from policies.vla.runtime import VLARuntime

    src = tiny_run["export"].out_dir
    dst = tmp_path / "mixed"
    shutil.copytree(src, dst)
    data = dst / "text_encoder.onnx.data"
    blob = bytearray(data.read_bytes())
    blob[-1] ^= 1
    data.write_bytes(bytes(blob))
    with pytest.raises(ContractError, match="sha256"):
        VLARuntime(dst / "policy.onnx")


def _obs(rng, q=None):
    q = np.array([0.0, -0.785, 0.0, -2.356, 0.0, 1.571, 0.785]) if q is None else q
    return {"joint_pos": q.astype(np.float32), "joint_vel": np.zeros(7, np.float32),
            "gripper_width": np.array([0.04], np.float32), "ee_pos": np.array([0.4, 0.0, 0.3], np.float32),
            "image.front": rng.integers(0, 256, (IMG, IMG, 3), dtype=np.uint8),
            "image.wrist": rng.integers(0, 256, (IMG, IMG, 3), dtype=np.uint8)}


def test_runtime_runs_the_text_graph_once_per_instruction(tiny_run):
    from policies.vla.runtime import VLARuntime

    rt = VLARuntime(tiny_run["export"].entry, num_steps=3)
    calls = []
    text = rt.graphs.text
    rt.graphs.text = lambda feed: calls.append(feed) or text(feed)
    rng = np.random.default_rng(0)
    rt.set_instruction(CORPUS[0])
    for _ in range(20):
        cmd = rt.act(_obs(rng))
        assert cmd.shape == (8,) and np.all(np.isfinite(cmd))
    rt.set_instruction("Push the red cube to the pad.")     # same words: cached
    rt.set_instruction(CORPUS[1])
    rt.set_instruction(CORPUS[0])
    rt.reset()
    rt.set_instruction(CORPUS[1])
    assert len(calls) == 2 and rt.stats["text_encoder_runs"] == 2
    assert rt.stats["chunks"] == 3                             # 20 steps / action_horizon 8


def test_a_new_instruction_takes_effect_at_the_next_chunk(tiny_run):
    from policies.vla.runtime import VLARuntime

    rt = VLARuntime(tiny_run["export"].entry, num_steps=3)
    seen = []
    obs_graph = rt.graphs.obs
    rt.graphs.obs = lambda feed: seen.append(feed["lang_tokens"].copy()) or obs_graph(feed)
    rng = np.random.default_rng(1)
    rt.set_instruction(CORPUS[0])
    first = rt.act(_obs(rng))
    planned = rt.planned()
    rt.set_instruction(CORPUS[1])
    rest = [rt.act(_obs(rng)) for _ in range(len(planned))]
    assert np.allclose(np.stack(rest), np.stack(planned))  # the old chunk runs out unchanged
    assert len(seen) == 1 and first.shape == (8,)
    rt.act(_obs(rng))                                      # next chunk: the new instruction
    assert len(seen) == 2
    assert np.allclose(seen[1], rt._cache["put the green block on the pad"][0])
    assert not np.allclose(seen[0], seen[1])


@pytest.mark.parametrize("text", ["", "   ", "?!", "zorp blang fribble", "quickly shove crimson thing the"])
def test_empty_or_unknown_instructions_raise_and_the_runtime_holds(tiny_run, text):
    from policies.vla.runtime import InstructionError, VLARuntime

    rt = VLARuntime(tiny_run["export"].entry, num_steps=3)
    rng = np.random.default_rng(2)
    rt.set_instruction(CORPUS[0])
    moving = rt.act(_obs(rng))
    with pytest.raises(InstructionError) as err:
        rt.set_instruction(text)
    assert err.value.field == "instruction"
    assert all(w in str(err.value) for w in err.value.unknown_words)
    assert rt.planned() == []
    held = rt.act(_obs(rng))
    assert np.array_equal(held, moving)                    # hold the last command, no new chunk
    assert rt.stats["chunks"] == 1 and rt.stats["no_instruction"] == 1
    rt.set_instruction(CORPUS[2])                          # a valid instruction resumes
    rt.act(_obs(rng))
    assert rt.stats["chunks"] == 2


def test_a_paraphrase_with_a_few_unknown_words_is_accepted(tiny_run):
    from policies.vla.runtime import VLARuntime

    rt = VLARuntime(tiny_run["export"].entry, num_steps=3)
    assert rt.set_instruction("please push the red cube to the pad") == ["please"]


def test_nonfinite_state_holds_through_the_safety_filter(tiny_run):
    from sim2real.safety import SafetyFilter
    from policies.vla.runtime import VLARuntime

    safety = SafetyFilter.for_robot("franka_panda", dt_s=0.1)
    rt = VLARuntime(tiny_run["export"].entry, safety=safety, num_steps=3)
    rng = np.random.default_rng(3)
    o = _obs(rng)
    state = {"q": np.concatenate([o["joint_pos"], o["gripper_width"]]).astype(float), "dq": np.zeros(8)}
    rt.reset(state=state, t=0.0, instruction=CORPUS[0])
    rt.act(o, t=0.0, state=state)
    bad = dict(o, joint_pos=np.full(7, np.nan, np.float32))
    cmd = rt.act(bad, t=0.1, state=state)
    assert np.all(np.isfinite(cmd)) and rt.stats["nonfinite_obs"] == 1 and rt.planned() == []


# ---- the whole path in the language-conditioned env ----------------------------------------------
def test_tiny_train_export_evaluate_in_the_language_env(tmp_path):
    pytest.importorskip("sim.lang_env")
    from onboard.cli import main
    from onboard.spec import load_robot
    from policies.vla.runtime import VLARuntime
    from sim.lang_env import LangArmEnv
    from sim2real.safety import SafetyFilter

    data = tmp_path / "lang"
    assert main(["collect", "--task", "lang", "--episodes", "2", "--out", str(data)]) == 0
    assert main(["train", "--policy", "vla", "--data", str(data), "--out", str(tmp_path / "vla"),
                 "--vla-size", "tiny", "--steps", "3", "--no-progress"]) == 0
    assert main(["export", str(tmp_path / "vla" / "checkpoint.pt"), "--out", str(tmp_path / "vla" / "artifact")]) == 0
    ck = torch.load(tmp_path / "vla" / "checkpoint.pt", weights_only=False)
    assert ck["model_config"]["aux_pos_dim"] == 6          # the localisation loss trained on privileged labels
    assert any(k.startswith("aux_pos.") for k in ck["model_state"])
    assert main(["train", "--policy", "vla", "--data", str(data), "--out", str(tmp_path / "vla_off"),
                 "--vla-size", "tiny", "--steps", "1", "--no-progress", "--localisation-weight", "0"]) == 0
    off = torch.load(tmp_path / "vla_off" / "checkpoint.pt", weights_only=False)
    assert off["model_config"]["aux_pos_dim"] == 0 and off["config"]["aux_pos_weight"] == 0.0
    assert main(["train", "--policy", "vla", "--data", str(data), "--out", str(tmp_path / "vla_bad"),
                 "--vla-size", "tiny", "--steps", "1", "--no-progress", "--grounding-weight", "-1"]) == 2
    assert not (tmp_path / "vla_bad" / "checkpoint.pt").exists()

    profile = load_robot("franka_panda")
    lo, hi = profile.limits.position.T
    env = LangArmEnv(split="seen", seed=5)
    rt = VLARuntime(tmp_path / "vla" / "artifact" / "policy.onnx",
                    safety=SafetyFilter.for_robot("franka_panda", dt_s=1.0 / env.control_hz), num_steps=3)
    obs, info = env.reset(seed=5)
    state = {"q": np.concatenate([obs["joint_pos"], obs["gripper_width"]]).astype(float), "dq": np.zeros(8)}
    rt.reset(state=state, t=0.0, instruction=info["instruction"])
    cmds = []
    for k in range(min(env.max_steps, 40)):
        cmd = rt.act(obs, t=k / env.control_hz, state=state)
        cmds.append(cmd)
        obs, _r, terminated, truncated, info = env.step(cmd)
        state = {"q": np.concatenate([obs["joint_pos"], obs["gripper_width"]]).astype(float), "dq": np.zeros(8)}
        if terminated or truncated:
            break
    env.close()
    cmds = np.stack(cmds)
    assert np.all(np.isfinite(cmds)) and rt.stats["chunks"] >= 1
    assert np.all(cmds[:, :7] >= lo - 1e-6) and np.all(cmds[:, :7] <= hi + 1e-6)


def test_grounding_labels_encode_the_named_cubes_lane_and_task_per_frame():
    from types import SimpleNamespace

    from policies.vla.train import grounding_labels

    eps = [{"episode_index": 0, "slot": "left", "lang_task": "push"},
           {"episode_index": 1, "slot": "right", "lang_task": "pick_place"},
           {"episode_index": 2, "slot": "center", "lang_task": "pick_place"}]
    ds = SimpleNamespace(episodes=eps, episode_index=np.array([0, 0, 1, 2, 2]))
    # lanes sorted by name: center 0, left 1, right 2; label = lane * 2 + task (push 0, pick_place 1)
    assert grounding_labels(ds).tolist() == [2, 2, 5, 1, 1]
    assert grounding_labels(SimpleNamespace(episodes=[{"episode_index": 0}], episode_index=np.zeros(3))) is None


def test_the_grounding_head_is_training_only_and_reads_the_context():
    import torch

    from policies.vla.model import VLAConfig, VLAPolicy

    cfg = VLAConfig(vocab_size=12, max_len=8, state_dim=11, action_dim=8, image_size=(IMG, IMG), d_model=32,
                    n_heads=2, text_layers=1, fusion_layers=1, cnn_channels=(8, 16, 16), n_readout=2,
                    head_down_dims=(16, 32), aux_classes=6)
    m = VLAPolicy(cfg)
    ids = torch.full((2, 8), 4, dtype=torch.long)
    ctx = m.context(ids, ids != 0, [torch.zeros(2, IMG, IMG, 3, dtype=torch.uint8)] * 2, torch.zeros(2, 11))
    assert m.aux(ctx).shape == (2, 6)
    assert not any(name.startswith("aux") for name, _ in m.obs.named_parameters())   # not in any exported graph
