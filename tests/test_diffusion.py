"""The diffusion policy network and its trainer: shapes, windows, learning, checkpoints, resume."""
import numpy as np
import pytest
import torch

from diffusion_synth import reach_demos, tiny_config
from onboard.cli import main
from onboard.errors import OnboardError
from policies.diffusion import train as T
from policies.diffusion.unet import ConditionalUnet1D, UNetConfig


@pytest.mark.parametrize("dims,tp,batch", [((16, 32), 16, 1), ((16, 32, 64), 16, 3), ((8,), 5, 2)])
def test_unet_predicts_noise_with_the_shape_of_the_action_sequence(dims, tp, batch):
    m = ConditionalUnet1D(UNetConfig(action_dim=8, obs_cond_dim=22, down_dims=dims, n_groups=4,
                                     timestep_embed_dim=16))
    x = torch.randn(batch, tp, 8)
    eps = m(x, torch.randint(0, 100, (batch,)), torch.randn(batch, 22))
    assert eps.shape == x.shape and torch.isfinite(eps).all()


def test_unet_output_depends_on_the_observation_and_the_timestep():
    torch.manual_seed(0)
    m = ConditionalUnet1D(UNetConfig(action_dim=8, obs_cond_dim=4, down_dims=(16, 32), n_groups=4,
                                     timestep_embed_dim=16)).eval()
    x, c = torch.randn(1, 16, 8), torch.randn(1, 4)
    base = m(x, torch.tensor([10]), c)
    assert not torch.allclose(base, m(x, torch.tensor([90]), c))
    assert not torch.allclose(base, m(x, torch.tensor([10]), c + 1.0))


def test_windows_pad_observations_with_the_first_frame_and_actions_with_the_last():
    ep = np.array([0] * 10 + [1] * 5)
    tp, to, ta = 6, 2, 3
    w = T.sequence_windows(ep, tp, to, ta)
    # episode of length n yields n - tp + (to - 1) + (ta - 1) + 1 windows (at least one)
    assert len(w) == (10 - 6 + 1 + 2 + 1) + (5 - 6 + 1 + 2 + 1)
    idx = T.window_frame_indices(w, tp)
    first = idx[0]
    assert first.tolist() == [0, 0, 1, 2, 3, 4]            # starts one step before the episode: repeats frame 0
    last_of_ep0 = idx[np.flatnonzero(w[:, 0] == 0)[-1]]
    assert last_of_ep0.tolist() == [6, 7, 8, 9, 9, 9]      # runs past the end: repeats the last frame
    assert np.all((idx >= w[:, :1]) & (idx < w[:, 1:2]))   # never crosses into another episode


def test_training_loss_decreases_on_a_tiny_synthetic_dataset(tmp_path):
    res = T.train(tiny_config(steps=150, log_every=25), reach_demos(), tmp_path, progress=False)
    losses = [l for _, l in res["loss_history"]]
    assert losses[-1] < 0.8 * losses[0]
    assert (tmp_path / "checkpoint.pt").is_file() and (tmp_path / "training_curve.png").is_file()
    assert (tmp_path / "train_log.csv").read_text().startswith("step,loss")


def test_training_is_deterministic_for_a_seed(tmp_path):
    a = T.train(tiny_config(steps=10), reach_demos(), tmp_path / "a", progress=False)
    b = T.train(tiny_config(steps=10), reach_demos(), tmp_path / "b", progress=False)
    assert a["loss_history"] == b["loss_history"]
    for k, v in a["ema_state"].items():
        assert torch.equal(v, b["ema_state"][k])


def test_checkpoint_stores_what_export_needs(tmp_path):
    T.train(tiny_config(steps=10), reach_demos(), tmp_path, progress=False)
    ck = T.load_checkpoint(tmp_path / "checkpoint.pt")
    assert ck["step"] == 10 and ck["robot"] == "franka_panda" and len(ck["action_names"]) == 8
    assert [k["name"] for k in ck["obs_spec"]] == ["joint_pos", "gripper_width", "goal"]
    assert set(ck["normalization"]["obs"]) == {"joint_pos", "gripper_width", "goal"}
    assert ck["normalization"]["action"]["kind"] == "minmax"
    model = T.model_from_checkpoint(ck)
    assert not model.training


def test_resume_continues_from_the_saved_step_and_reproduces_the_uninterrupted_run(tmp_path, monkeypatch):
    cfg = tiny_config(steps=30, checkpoint_every=10)
    straight = T.train(cfg, reach_demos(), tmp_path / "straight", progress=False)

    calls = {"n": 0}
    real_update = T.ema_update

    def crash_at_step_25(*a, **kw):
        calls["n"] += 1
        if calls["n"] == 25:
            raise KeyboardInterrupt
        return real_update(*a, **kw)

    monkeypatch.setattr(T, "ema_update", crash_at_step_25)
    with pytest.raises(KeyboardInterrupt):
        T.train(cfg, reach_demos(), tmp_path / "resumed", progress=False)
    monkeypatch.setattr(T, "ema_update", real_update)
    assert T.load_checkpoint(tmp_path / "resumed" / "checkpoint.pt")["step"] == 20   # last atomic save
    resumed = T.train(cfg, reach_demos(), tmp_path / "resumed", resume=True, progress=False)
    assert resumed["step"] == 30
    assert [s for s, _ in resumed["loss_history"]] == [s for s, _ in straight["loss_history"]]
    assert [l for _, l in resumed["loss_history"]] == pytest.approx([l for _, l in straight["loss_history"]], rel=1e-5)
    for k, v in straight["ema_state"].items():
        torch.testing.assert_close(resumed["ema_state"][k], v, rtol=1e-5, atol=1e-6)


def test_resume_without_a_checkpoint_is_a_clear_error(tmp_path):
    with pytest.raises(OnboardError, match="resume"):
        T.train(tiny_config(steps=5), reach_demos(), tmp_path, resume=True, progress=False)


def test_non_finite_demonstrations_are_refused_naming_the_key(tmp_path):
    d = reach_demos()
    d.obs["goal"][3, 1] = np.nan
    with pytest.raises(OnboardError, match="observation.goal"):
        T.train(tiny_config(steps=5), d, tmp_path, progress=False)


class _Columns:
    """A minimal dataset with the policies.dataset reader's interface, built from arrays."""

    def __init__(self, d):
        self.obs_spec = d.obs_spec + [{"name": "joint_vel", "shape": [7], "units": "rad/s"},
                                      {"name": "image.front", "shape": [96, 96, 3], "units": "rgb"}]
        self._cols = {f"observation.{k}": v for k, v in d.obs.items()}
        self._cols["observation.joint_vel"] = np.zeros((len(d.actions), 7), np.float32)
        self._cols["action"] = d.actions
        self.episode_index = d.episode_index
        self.info = {"robot_type": "franka_panda", "fps": 10, "total_episodes": 12}

    def column(self, name):
        return self._cols[name]


def test_default_observation_keys_are_the_low_dim_positions_without_velocities():
    data = T.data_from_dataset(_Columns(reach_demos()), None)
    assert [k["name"] for k in data.obs_spec] == ["joint_pos", "gripper_width", "goal"]
    assert data.action_names == list(__import__("onboard.spec", fromlist=["x"]).load_robot("franka_panda").action_names)


def test_an_unknown_observation_key_is_an_error_listing_the_known_ones():
    with pytest.raises(OnboardError, match="--obs-keys.*joint_pos"):
        T.data_from_dataset(_Columns(reach_demos()), ["joint_pos", "object_pose"])


def test_train_cli_rejects_an_unknown_policy_and_a_missing_dataset(tmp_path, capsys):
    assert main(["train", "--policy", "transformer", "--dataset", str(tmp_path)]) == 2
    assert "diffusion" in capsys.readouterr().err
    assert main(["train", "--dataset", str(tmp_path / "nope")]) == 2
    assert "meta/info.json" in capsys.readouterr().err
