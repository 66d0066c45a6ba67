"""The numpy DDIM sampler and the schedule: the deploy path equals a torch reference."""
import math

import numpy as np
import pytest
import torch

from policies.diffusion.schedule import alphas_cumprod_for, betas_for
from policies.diffusion.unet import ConditionalUnet1D, UNetConfig
from policies.export import export_onnx
from policies.artifact import open_session
from policies.sampler import ddim_sample, ddim_timesteps


def test_squaredcos_schedule_matches_the_closed_form_cosine_alpha_bar():
    T = 100
    ac = alphas_cumprod_for(T)
    ab = lambda u: math.cos((u + 0.008) / 1.008 * math.pi / 2) ** 2
    # until the 0.999 cap kicks in at the very end, alpha_bar_t telescopes to ab((t+1)/T) / ab(0)
    for t in (0, 1, 10, 50, 90, 97):
        assert ac[t] == pytest.approx(ab((t + 1) / T) / ab(0), rel=1e-9)
    assert betas_for(T)[-1] == pytest.approx(0.999)
    assert np.all(np.diff(ac) < 0) and 0 < ac[-1] < 1e-5 and ac[0] == pytest.approx(0.99936872, abs=1e-8)


@pytest.mark.parametrize("k", [1, 2, 3, 4, 7, 10, 33, 100])
def test_trailing_timesteps_start_at_the_last_train_step_and_strictly_decrease(k):
    ts = ddim_timesteps(100, k, "trailing")
    assert len(ts) == k and ts[0] == 99 and ts[-1] >= 0
    assert np.all(np.diff(ts) < 0)


def test_leading_timesteps_are_the_original_ddim_grid():
    assert ddim_timesteps(100, 4, "leading").tolist() == [75, 50, 25, 0]
    assert ddim_timesteps(100, 10, "leading").tolist() == list(range(90, -1, -10))


@pytest.mark.parametrize("bad", [0, 101, -3])
def test_step_counts_outside_the_schedule_are_refused(bad):
    with pytest.raises(ValueError):
        ddim_timesteps(100, bad)


def torch_reference_ddim(model, noise, obs_cond, alphas_cumprod, timesteps):
    """DDIM eta=0 written independently in torch (diffusers' formulas, clipped x0, eps recomputed)."""
    ac = torch.as_tensor(alphas_cumprod, dtype=torch.float64)
    x = torch.as_tensor(noise)
    cond = torch.as_tensor(obs_cond)
    with torch.no_grad():
        for i, t in enumerate(timesteps):
            a_t = ac[int(t)]
            a_prev = ac[int(timesteps[i + 1])] if i + 1 < len(timesteps) else torch.tensor(1.0, dtype=torch.float64)
            eps = model(x, torch.full((x.shape[0],), int(t), dtype=torch.int64), cond)
            x0 = ((x - (1 - a_t).sqrt() * eps) / a_t.sqrt()).clamp(-1, 1)
            eps = (x - a_t.sqrt() * x0) / (1 - a_t).sqrt()
            x = (a_prev.sqrt() * x0 + (1 - a_prev).sqrt() * eps).float()
    return x.numpy()


@pytest.fixture(scope="module")
def denoiser_pair(tmp_path_factory):
    torch.manual_seed(0)
    model = ConditionalUnet1D(UNetConfig(action_dim=8, obs_cond_dim=2 * 11, down_dims=(16, 32), n_groups=4,
                                         timestep_embed_dim=16)).eval()
    path = tmp_path_factory.mktemp("sampler") / "denoiser.onnx"
    export_onnx(model, path, "{}", tp=16, da=8, cond=22)
    sess = open_session(path)

    def onnx_denoiser(x, t, c):
        return sess.run(["eps"], {"sample": x, "timestep": t, "obs_cond": c})[0]

    return model, onnx_denoiser


@pytest.mark.parametrize("k,spacing,batch", [(1, "trailing", 1), (4, "trailing", 1), (10, "trailing", 2),
                                             (10, "leading", 1), (100, "trailing", 1)])
def test_numpy_sampler_with_onnx_denoiser_equals_torch_reference_ddim(denoiser_pair, k, spacing, batch):
    model, onnx_denoiser = denoiser_pair
    rng = np.random.default_rng(k)
    noise = rng.standard_normal((batch, 16, 8)).astype(np.float32)
    cond = rng.uniform(-1, 1, (batch, 22)).astype(np.float32)
    ac = alphas_cumprod_for(100)
    got = ddim_sample(onnx_denoiser, noise, cond, ac, k, spacing=spacing)
    ref = torch_reference_ddim(model, noise, cond, ac, ddim_timesteps(100, k, spacing))
    assert got.dtype == np.float32 and got.shape == noise.shape
    assert np.max(np.abs(got - ref)) <= 1e-4


def test_sampler_output_stays_in_the_normalized_range_and_is_reproducible_from_the_noise(denoiser_pair):
    _, onnx_denoiser = denoiser_pair
    noise = np.random.default_rng(3).standard_normal((1, 16, 8)).astype(np.float32)
    cond = np.zeros((1, 22), np.float32)
    a = ddim_sample(onnx_denoiser, noise, cond, alphas_cumprod_for(100), 4)
    b = ddim_sample(onnx_denoiser, noise.copy(), cond, alphas_cumprod_for(100), 4)
    assert np.array_equal(a, b)
    assert np.all(np.abs(a) <= 1.0 + 1e-6)
