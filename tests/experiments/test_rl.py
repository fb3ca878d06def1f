"""Tests of lab.rl, experiments/lab/rl (Atari preprocessing, DQN, checkpoints, evaluation),
and the RLNET scripts.

Tests that step an Atari emulator are skipped, with the reason, when the `rl` extra
(gymnasium, ale-py, opencv) is not installed; the rest need only JAX.
"""

from __future__ import annotations

import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import tol
from experiment_helpers import load_script

import slp
from lab.rl.config import PRESETS, DQNConfig
from lab.rl.dqn import (
    ReplayBuffer,
    epsilon_at,
    evaluate,
    init_train_state,
    load_checkpoint,
    next_observation,
    save_checkpoint,
    td_loss,
    train,
)
from lab.rl.env import make_env, rl_dependencies_missing, to_network_input
from slp.models import QNetwork, as_single_example

MISSING = rl_dependencies_missing()
needs_ale = pytest.mark.skipif(MISSING is not None, reason=f"rl extra missing: {MISSING}")

TINY = PRESETS["tiny"]  # two environments, updates after 100 steps


# ----------------------------------------------------------------------------- preprocessing


def area_resize_matrix(src: int, dst: int) -> np.ndarray:
    """`(dst, src)` weights of area averaging: overlap of source pixel j with output pixel i."""
    scale = src / dst
    m = np.zeros((dst, src))
    for i in range(dst):
        lo, hi = i * scale, (i + 1) * scale
        for j in range(int(np.floor(lo)), int(np.ceil(hi))):
            m[i, j] = (min(hi, j + 1) - max(lo, j)) / scale
    return m


@needs_ale
def test_preprocessing_matches_hand_computed_frames():
    """Frame skip 4, max of the last two frames, 84x84 area resize, 4-frame stack, oldest first.

    The reference steps a raw emulator (no frame skip, same seed) and resizes with explicit
    area-overlap matrices.
    """
    import gymnasium as gym

    actions = [0, 2, 2, 3, 1, 0, 3, 3, 2, 0] * 4
    env = make_env("Pong", noop_max=0)
    obs, _ = env.reset(seed=3)
    assert obs.shape == (84, 84, 4) and obs.dtype == np.uint8
    assert env.observation_space.contains(obs)
    np.testing.assert_array_equal(obs, np.repeat(obs[..., :1], 4, axis=-1))  # reset padding
    for a in actions:
        obs, reward, *_ = env.step(a)
        assert reward in (-1.0, 0.0, 1.0)
    env.close()

    raw = gym.make("ALE/Pong-v5", frameskip=1, repeat_action_probability=0.0)
    raw.reset(seed=3)
    ale = raw.unwrapped.ale
    rows, cols = area_resize_matrix(210, 84), area_resize_matrix(160, 84)
    frames = []
    for a in actions:
        screens = []
        for _ in range(4):
            raw.step(a)
            screens.append(ale.getScreenGrayscale().astype(np.float64))
        frames.append(rows @ np.maximum(screens[-1], screens[-2]) @ cols.T)
    raw.close()
    expected = np.stack(frames[-4:], axis=-1)
    assert np.max(np.abs(obs - expected)) <= 1.0  # rounding of the fixed-point resize
    assert len(np.unique(obs)) > 2  # the frames are not blank


def test_to_network_input_range_and_dtype():
    obs = np.array([[0, 51, 255]], np.uint8)
    x = to_network_input(obs)
    assert x.dtype == np.float32
    np.testing.assert_allclose(x, [[0.0, 0.2, 1.0]])
    with pytest.raises(TypeError, match="uint8"):
        to_network_input(obs.astype(np.float32))


def test_epsilon_schedule_hand_values():
    kw = {"start": 1.0, "end": 0.1, "decay_steps": 100}
    assert epsilon_at(0, **kw) == 1.0
    assert epsilon_at(50, **kw) == pytest.approx(0.55)
    assert epsilon_at(100, **kw) == pytest.approx(0.1)
    assert epsilon_at(10_000, **kw) == pytest.approx(0.1)


def test_config_rejects_bad_values():
    with pytest.raises(ValueError, match="divide"):
        DQNConfig(num_envs=3, train_every=4)
    with pytest.raises(ValueError, match="batch_size"):
        DQNConfig(batch_size=0)
    with pytest.raises(ValueError, match="gamma"):
        DQNConfig(gamma=1.5)


# ----------------------------------------------------------------------------- replay & loss


def test_replay_buffer_transitions_and_wraparound():
    """Observations are rolling stacks of numbered frames, so every pairing is checkable."""
    n_env, slots = 2, 5
    buf = ReplayBuffer(n_env * slots, n_env, obs_shape=(1, 1, 4))
    rng = np.random.default_rng(0)

    def stack(t, n):  # frames 100 n + t - 3 ... 100 n + t, oldest first
        return np.array([100 * n + t - 3 + k for k in range(4)], np.uint8).reshape(1, 1, 4)

    assert len(buf) == 0
    for t in range(3, 3 + 8):  # 8 steps into 5 slots: wraps around
        obs = np.stack([stack(t, n) for n in range(n_env)])
        buf.add(obs, np.array([t, -t]), np.array([0.5 * t, 0.0]), np.array([t == 7, False]))
    assert len(buf) == (slots - 1) * n_env
    b = buf.sample(rng, 3, 64)
    assert b["obs"].shape == (3, 64, 1, 1, 4) and b["next_frame"].shape == (3, 64, 1, 1)
    newest = b["obs"][..., 0, 0, 3]  # 100 n + t
    t = newest.astype(int) % 100
    n = newest.astype(int) // 100
    assert set(np.unique(t)) == {6, 7, 8, 9}  # the 4 oldest kept steps; 10 has no successor
    np.testing.assert_array_equal(b["action"], np.where(n == 0, t, -t))
    np.testing.assert_allclose(b["reward"], np.where(n == 0, 0.5 * t, 0.0))
    np.testing.assert_array_equal(b["done"], (t == 7) & (n == 0))
    np.testing.assert_array_equal(b["next_frame"][..., 0, 0], newest + 1)
    nxt = np.asarray(next_observation(jnp.asarray(b["obs"]), jnp.asarray(b["next_frame"])))
    np.testing.assert_array_equal(nxt[..., 0, 0, :], b["obs"][..., 0, 0, :] + 1)


class _LinearQ:
    """Stand-in model: Q = (first 3 input values) @ params, batch-first like flax."""

    def apply(self, params, x):
        return x.reshape(x.shape[0], -1)[:, :3] @ params


@pytest.mark.parametrize("done", [False, True])
def test_td_loss_hand_computed(done):
    params = jnp.eye(3)
    target = 2.0 * jnp.eye(3)
    obs = np.zeros((84, 84, 4), np.uint8)
    obs[0, 0, :3] = [51, 102, 255]  # Q(s) = (0.2, 0.4, 1.0)
    nxt = np.zeros((84, 84, 4), np.uint8)
    nxt[0, 0, :3] = [255, 0, 51]  # Q_target(s') = (2.0, 0.0, 0.4), max 2.0
    loss = td_loss(
        _LinearQ(),
        params,
        target,
        jnp.asarray(obs),
        jnp.asarray(1),
        jnp.asarray(0.5),
        jnp.asarray(done),
        jnp.asarray(nxt),
        gamma=0.9,
        huber_delta=1.0,
    )
    # not done: target 0.5 + 0.9 * 2 = 2.3, error 1.9 -> linear part 1.9 - 0.5
    # done: target 0.5, error 0.1 -> quadratic part 0.5 * 0.01
    expected = 0.005 if done else 1.4
    assert float(loss) == pytest.approx(expected, rel=1e-5)


# ----------------------------------------------------------------------------- checkpoints


def test_checkpoint_round_trip_is_exact_and_atomic(tmp_path):
    model = QNetwork(num_actions=6)
    state = init_train_state(model, TINY, key=jax.random.key(1))
    # make target and optimiser state differ from a fresh init
    state = state.replace(target_params=jax.tree.map(lambda p: p + 1.0, state.params))
    rng = np.random.default_rng(7)
    rng.random(5)
    path = save_checkpoint(
        tmp_path / "ck" / "latest.msgpack",
        params=state.params,
        target_params=state.target_params,
        opt_state=state.opt_state,
        config=TINY,
        num_actions=6,
        step=1234,
        updates=56,
        episode_end_steps=np.array([10, 20]),
        episode_returns=np.array([-21.0, -19.0]),
        best_mean_return=-20.0,
        wall_seconds=3.5,
        np_rng_state=rng.bit_generator.state,
    )
    assert sorted(p.name for p in path.parent.iterdir()) == ["latest.json", "latest.msgpack"]
    ck = load_checkpoint(path)
    assert (ck.step, ck.updates, ck.episodes, ck.num_actions) == (1234, 56, 2, 6)
    assert ck.config == TINY
    assert ck.best_mean_return == -20.0 and ck.wall_seconds == 3.5
    np.testing.assert_array_equal(ck.episode_returns, [-21.0, -19.0])
    for a, b in [(ck.params, state.params), (ck.target_params, state.target_params)]:
        jax.tree.map(np.testing.assert_array_equal, a, jax.device_get(b))
    jax.tree.map(np.testing.assert_array_equal, ck.opt_state, jax.device_get(state.opt_state))
    restored = np.random.default_rng(0)
    restored.bit_generator.state = ck.np_rng_state
    np.testing.assert_array_equal(restored.random(3), rng.random(3))

    with pytest.raises(FileNotFoundError, match="array file not found"):
        load_checkpoint(tmp_path / "missing.msgpack")
    # a classifier's checkpoint (same format, other kind) is refused by name
    classifier = tmp_path / "classifier.msgpack"
    slp.checkpoints.save(classifier, {"w": np.zeros(2)}, {"config": {}})
    with pytest.raises(ValueError, match="not a DQN checkpoint"):
        load_checkpoint(classifier)


# ----------------------------------------------------------------------------- training


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """300 agent steps of the tiny config (2 environments), replay buffer saved."""
    if MISSING is not None:
        pytest.skip(f"rl extra missing: {MISSING}")
    ckpt_dir = tmp_path_factory.mktemp("pong")
    summary = train(
        TINY,
        total_steps=300,
        seed=0,
        checkpoint_dir=ckpt_dir,
        checkpoint_every=200,
        save_replay=True,
        progress=False,
    )
    return summary, ckpt_dir


@needs_ale
@pytest.mark.slow
def test_training_steps_counters_and_checkpoint(trained):
    summary, ckpt_dir = trained
    # 2 environments, one update per vector step from agent step 100 on: steps 100..298
    assert (summary.step, summary.frames, summary.updates) == (300, 1200, 100)
    ck = load_checkpoint(ckpt_dir / "latest.msgpack")
    assert (ck.step, ck.updates) == (300, 100)
    fresh = init_train_state(QNetwork(num_actions=6), TINY, key=jax.random.key(0))
    changed = jax.tree.map(lambda a, b: bool(np.any(a != b)), ck.params, fresh.params)
    assert all(jax.tree.leaves(changed))  # every parameter was updated
    # the target was last copied at step 300 (every 100 agent steps)
    jax.tree.map(np.testing.assert_array_equal, ck.target_params, ck.params)
    assert (ckpt_dir / "replay.npz").is_file()


@needs_ale
@pytest.mark.slow
def test_training_resumes(trained, tmp_path):
    _, ckpt_dir = trained
    resume_dir = tmp_path / "resume"
    resume_dir.mkdir()
    for name in ("latest.msgpack", "latest.json", "replay.npz"):
        (resume_dir / name).write_bytes((ckpt_dir / name).read_bytes())
    before = load_checkpoint(resume_dir / "latest.msgpack")
    summary = train(TINY, total_steps=340, seed=0, checkpoint_dir=resume_dir, progress=False)
    # the replay buffer came back, so updates continue at once: 20 more vector steps
    assert (summary.step, summary.updates) == (340, 120)
    after = load_checkpoint(resume_dir / "latest.msgpack")
    assert after.step == 340 and after.episodes >= before.episodes
    np.testing.assert_array_equal(after.episode_returns[: before.episodes], before.episode_returns)
    assert after.wall_seconds > before.wall_seconds
    changed = jax.tree.map(lambda a, b: bool(np.any(a != b)), after.params, before.params)
    assert any(jax.tree.leaves(changed))


@needs_ale
def test_evaluate_returns_are_pong_scores():
    """Pong ends when a side reaches 21: a return is an integer in [-21, -1] or [1, 21]."""
    res = evaluate(None, num_episodes=2, seed=5)
    assert res.returns.shape == (2,) and res.lengths.shape == (2,)
    assert np.all(res.returns == np.round(res.returns))
    assert np.all((np.abs(res.returns) >= 1) & (np.abs(res.returns) <= 21))
    assert res.mean_return < -15  # a random policy rarely scores in Pong
    assert np.all(res.lengths > 100)
    assert res.mean_return == pytest.approx(res.returns.mean())


@needs_ale
@pytest.mark.slow
def test_scripts_smoke(trained, tmp_path):
    _, ckpt_dir = trained
    train_script = load_script("pong_train.py")
    out = tmp_path / "results"
    res = train_script.main(
        ["--eval-only", "--checkpoint-dir", str(ckpt_dir), "--eval-episodes", "1"]
        + ["--eval-epsilon", "1.0", "--out", str(out)]
    )
    saved = json.loads((out / "pong_training.json").read_text())
    assert saved["frames_trained"] == 1200 == res["frames_trained"]
    assert set(saved["evaluation"]) >= {"latest", "random"}
    assert (out / "pong_training.png").stat().st_size > 0

    fig_script = load_script("pong.py")
    res = fig_script.main(
        ["--checkpoint", str(ckpt_dir / "latest.msgpack"), "--out", str(out)]
        + ["--methods", "gradient", "--search-steps", "40"]
    )
    saved = json.loads((out / "pong.json").read_text())
    assert list(saved["methods"]) == ["gradient"]
    shares = saved["methods"]["gradient"]["frame_mass_share"]
    assert len(shares) == 4 and math.isclose(sum(shares), 1.0, rel_tol=1e-9)
    assert 30 <= saved["state"]["step"] < 40
    assert (out / "pong.png").stat().st_size > 0


def test_object_pixels_hand_example():
    fig_script = load_script("pong.py")
    obs = np.full((3, 5, 1), 7, np.uint8)
    obs[1, 2, 0] = 200
    obs[2, :, 0] = 255  # a uniform wall row is background
    mask = fig_script.object_pixels(obs)
    expected = np.zeros((3, 5, 1), bool)
    expected[1, 2, 0] = True
    np.testing.assert_array_equal(mask, expected)


# ----------------------------------------------------------------------------- Theorem 1


@pytest.mark.slow
def test_qnetwork_theorem1(x64):
    """Every neuron of the Q-network: v == sum(w_hat * x) + b_hat (paper's Theorem 1).

    A 36x36x4 input keeps the check small (conv 8x8/4 -> 8x8, 4x4/2 -> 3x3, 3x3 -> 1x1,
    dense 512, 6 Q-values); the layers are those of the 84x84 network.
    """
    model = QNetwork(num_actions=6)
    x = jax.random.uniform(jax.random.key(0), (36, 36, 4), jnp.float64)
    params = model.init(jax.random.key(1), x[None].astype(jnp.float32))
    params = jax.tree.map(lambda p: p.astype(jnp.float64), params)
    f = as_single_example(model, params)
    projections = slp.switched_projections(f)(x)
    # hidden layers keep the model's batch axis of 1 (`as_single_example` adds it)
    assert [p.activity.shape for p in projections] == [
        (1, 8, 8, 32),
        (1, 3, 3, 64),
        (1, 1, 1, 64),
        (1, 512),
        (6,),
    ]
    atol = tol(jnp.float64)
    for p in projections:
        assert p.weights.shape == p.activity.shape + x.shape
        recon = jnp.tensordot(p.weights, x, axes=x.ndim) + p.bias
        np.testing.assert_allclose(recon, p.activity, atol=atol, rtol=0)
    np.testing.assert_allclose(projections[-1].activity, f(x), atol=atol, rtol=0)
    # a realistic state: between 0 and all neurons active in each hidden layer
    for p in projections[:-1]:
        assert 0 < float(jnp.mean(p.activity > 0)) < 1


def test_checkpoint_of_another_observation_shape_round_trips(tmp_path):
    """The restore template comes from the file's own observation shape, not Atari's."""
    model = QNetwork(num_actions=3)
    params = model.init(jax.random.key(2), jnp.zeros((1, 42, 42, 2)))
    path = save_checkpoint(
        tmp_path / "small.msgpack", params=params, config=TINY, num_actions=3, obs_shape=(42, 42, 2)
    )
    ck = load_checkpoint(path)
    jax.tree.map(np.testing.assert_array_equal, ck.params, jax.device_get(params))
