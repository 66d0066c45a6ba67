"""Language-conditioned arm tasks: env shapes, instruction splits, DR reproducibility, experts, data collection."""
import itertools

import numpy as np
import pyarrow.parquet as pq
import pytest

from onboard.errors import OnboardError
from sim.lang_env import (LANG_TASKS, SPLITS, LangArmEnv, load_instructions, load_lang_dr, parse_instruction,
                          training_corpus)
from sim.lang_experts import make_lang_expert, run_lang_episode

STATE_KEYS = ("joint_pos", "joint_vel", "gripper_width", "ee_pos")


@pytest.fixture(scope="module")
def env():
    e = LangArmEnv("train", dr=True, seed=0, image_size=(96, 96))
    yield e
    e.close()


def test_reset_and_step_give_state_and_uint8_images_of_both_cameras_but_no_object_poses(env):
    obs, info = env.reset(seed=3)
    assert set(obs) == {*STATE_KEYS, "image.front", "image.wrist"}
    for spec in env.obs_spec:
        assert obs[spec["name"]].shape == tuple(spec["shape"]) and obs[spec["name"]].dtype == np.float32
    for cam in ("front", "wrist"):
        img = obs[f"image.{cam}"]
        assert img.shape == (96, 96, 3) and img.dtype == np.uint8 and img.std() > 5
    assert info["instruction"] == env.instruction and info["task"] in LANG_TASKS and info["colour"] in info["instruction"]
    assert info["split"] == "train" and env.observation_space.contains(obs)
    obs2, reward, terminated, truncated, step_info = env.step(np.concatenate([obs["joint_pos"], [0.04]]))
    assert set(obs2) == set(obs) and np.isfinite(reward) and not terminated and not truncated
    assert "success" in step_info


def test_front_camera_shows_the_named_cube_in_its_palette_colour(env):
    obs, info = env.reset(seed=5, options={"task": "push", "colour": "blue"})
    img = obs["image.front"].astype(int)
    blue = (img[..., 2] > 150) & (img[..., 0] < 90) & (img[..., 1] < 130)
    assert blue.sum() >= 12, "a blue cube should cover a dozen pixels at 96 px"


def test_train_and_paraphrase_sentences_are_disjoint_and_every_split_names_the_colour_and_task():
    inst = load_instructions()
    train = set(inst.sentences("train"))
    para = set(inst.sentences("paraphrase"))
    assert not train & para
    assert set(training_corpus()) == train and len(inst.sentences("train")) >= 6 * len(inst.colours)
    assert sum(len(v) for v in inst.train_templates.values()) >= 6
    for split in ("train", "paraphrase"):
        for task in LANG_TASKS:
            for sentence in inst.sentences(split, task):
                assert parse_instruction(sentence, inst) == (task, next(c for c in inst.colours if c in sentence))
    vocab = {w for s in train for w in s.split()}
    for sentence in para:   # paraphrases mostly reuse the training vocabulary
        words = sentence.split()
        assert sum(w not in vocab for w in words) <= 2, sentence


@pytest.mark.parametrize("split", SPLITS)
def test_each_split_draws_only_its_own_sentences_and_combos(split):
    inst = load_instructions()
    e = LangArmEnv(split, dr=False, seed=11, cameras=())
    allowed = set(inst.sentences("paraphrase" if split == "paraphrase" else "train"))
    held = {(c, list(inst.slots).index(s)) for c, s in inst.held_out}
    for _ in range(40):
        _, info = e.reset()
        assert info["instruction"] in allowed and info["split"] == split
        combos = {(c, i) for i, c in enumerate(e.arrangement)}
        named = (info["colour"], list(inst.slots).index(info["slot"]))
        assert e.arrangement[named[1]] == info["colour"]
        if split == "unseen_combo":
            assert named in held
        else:
            assert not combos & held, f"{split} drew a held-out combination {combos & held}"


def test_seen_split_uses_other_episodes_than_train_for_the_same_seed():
    a = LangArmEnv("train", dr=False, seed=0, cameras=())
    b = LangArmEnv("seen", dr=False, seed=0, cameras=())
    assert a.reset()[1]["episode_seed"] != b.reset()[1]["episode_seed"]


def test_domain_randomization_is_reproducible_for_a_seed_and_varies_across_seeds():
    def draw(seed):
        e = LangArmEnv("train", dr=True, seed=seed, cameras=("front",), image_size=(64, 64))
        obs, info = e.reset()
        m = e.model
        out = (obs["image.front"].copy(), m.cam_pos.copy(), m.light_dir.copy(), m.geom_rgba.copy(),
               e.cube_positions(), info["instruction"])
        e.close()
        return out
    a, b, c = draw(7), draw(7), draw(8)
    for x, y in zip(a, b):
        assert np.array_equal(x, y) if isinstance(x, np.ndarray) else x == y
    assert not np.array_equal(a[1], c[1]) and not np.array_equal(a[0], c[0])


def test_forced_instruction_sets_the_goal_and_bad_instructions_are_rejected(env):
    _, info = env.reset(seed=1, options={"instruction": "put the yellow block on the white pad"})
    assert (info["task"], info["colour"]) == ("pick_place", "yellow") and "yellow" in env.arrangement
    assert env.task_kind == "pick_place" and env.colour == "yellow"
    with pytest.raises(OnboardError, match="instruction"):
        env.reset(options={"instruction": "   "})
    with pytest.raises(OnboardError, match="instruction"):
        env.reset(options={"instruction": "push the purple cube"})


@pytest.mark.parametrize("task", LANG_TASKS)
def test_expert_succeeds_at_the_named_cube_without_disturbing_the_others(task):
    e = LangArmEnv("train", dr=True, seed=42, cameras=())
    expert = make_lang_expert(e)
    results = [run_lang_episode(e, expert, seed=100 + i, options={"task": task}) for i in range(6)]
    assert sum(r["success"] for r in results) >= 5, results
    assert all(r["others_moved_m"] < 0.01 for r in results), results
    assert all(r["steps"] <= e.max_steps for r in results)


def test_push_expert_passes_side_lane_cubes_on_the_inner_side():
    e = LangArmEnv("train", dr=False, seed=0, cameras=())
    expert = make_lang_expert(e)
    for seed in range(6):
        r = run_lang_episode(e, expert, seed=seed, options={"task": "push"})
        if r["slot"] == "left":
            assert r["route"] == "push:right"
        elif r["slot"] == "right":
            assert r["route"] == "push:left"


@pytest.mark.parametrize("mutate, field", [
    (lambda d: d.pop("colours"), "colours"),
    (lambda d: d["templates"]["push"].update(train=["push the cube"]), "templates.push.train[0]"),
    (lambda d: d["templates"]["pick_place"].update(paraphrase=[]), "templates.pick_place.paraphrase"),
    (lambda d: d["held_out"].append({"colour": "purple", "slot": "left"}), "held_out[3]"),
    (lambda d: d["colours"].update(red=[1.5, 0, 0]), "colours.red"),
    (lambda d: d["templates"]["push"].update(paraphrase=["push the {colour} block back"]), "templates"),
])
def test_malformed_instruction_yaml_raises_an_error_naming_the_field(tmp_path, mutate, field):
    import yaml
    doc = yaml.safe_load(open(load_instructions().path))
    mutate(doc)
    path = tmp_path / "instructions.yaml"
    path.write_text(yaml.safe_dump(doc))
    with pytest.raises(OnboardError) as err:
        load_instructions(path)
    assert err.value.field == field and str(path) in str(err.value)


def test_malformed_yaml_syntax_and_bad_dr_ranges_are_reported_with_the_file(tmp_path):
    bad = tmp_path / "instructions.yaml"
    bad.write_text("colours: [red\n")
    with pytest.raises(OnboardError, match="instructions.yaml"):
        load_instructions(bad)
    dr = tmp_path / "dr.yaml"
    dr.write_text("lighting:\n  diffuse_scale: [1.2, 0.6]\n")
    with pytest.raises(OnboardError) as err:
        load_lang_dr(dr)
    assert err.value.field == "lighting.diffuse_scale"


def test_collect_lang_writes_instructions_to_tasks_parquet_and_mp4_per_camera(tmp_path):
    import argparse

    from onboard.commands import collect
    from policies.dataset import load_dataset
    out = tmp_path / "lang"
    parser = argparse.ArgumentParser()
    collect.add_arguments(parser)
    args = parser.parse_args(["--task", "lang", "--episodes", "2", "--image-size", "64", "--out", str(out)])
    assert collect.run(args) == 0
    tasks = pq.read_table(out / "meta" / "tasks.parquet").column("task").to_pylist()
    assert tasks and all(t in set(load_instructions().sentences("train")) for t in tasks)
    for cam in ("front", "wrist"):
        files = sorted((out / "videos" / f"observation.images.{cam}").rglob("*.mp4"))
        assert len(files) == 2
    ds = load_dataset(out)
    assert ds.num_episodes == 2 and ds.column("observation.images.front").shape[1:] == (64, 64, 3)
    assert not any(k.startswith("observation.object") for k in ds.features)
    # simulator-only labels ride along, outside the observation spec (no policy can take them as input)
    cube, goal = ds.column("privileged.target_cube_pos"), ds.column("privileged.goal_pos")
    assert cube.shape == goal.shape == (ds.num_frames, 3)
    assert not any(k["name"].startswith("privileged") for k in ds.obs_spec)
    for e in np.unique(ds.episode_index):
        rows = ds.episode_index == e
        assert np.ptp(goal[rows], axis=0).max() == 0.0                   # the goal is fixed per episode
        assert np.linalg.norm(cube[rows][-1, :2] - goal[rows][-1, :2]) < 0.05   # kept episodes succeeded
        assert np.linalg.norm(cube[rows][0, :2] - goal[rows][0, :2]) > 0.05     # ... from elsewhere
    ep_tasks = [t for e in ds.episodes for t in e["tasks"]]
    assert [ds.tasks[i] for i in np.unique(ds.columns["task_index"])] == sorted(set(ep_tasks), key=ds.tasks.index)
    assert ds.info["onboard"]["task"] == "lang"
