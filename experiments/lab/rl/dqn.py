"""Deep Q-learning (Mnih et al., Nature 2015) for `slp.models.QNetwork` in JAX/flax/optax.

The pieces: a replay buffer in numpy, a target network copied every
`target_update_every` agent steps, a linear epsilon schedule, the Huber loss on the
one-step TD error, Adam with gradient-norm clipping, and a pure, jit-compiled update that
runs several gradient steps in one call (`jax.lax.scan`). Training steps a gymnasium
vector environment (optionally in worker processes, overlapped with the update on the
accelerator), writes atomic, resumable checkpoints and shows a tqdm progress bar.

Counting: an *agent step* is one action in one environment; with frame skip 4 it is 4
emulator *frames*. Every schedule below is in agent steps summed over the environments.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import flax
import flax.serialization
import jax
import jax.numpy as jnp
import numpy as np
import optax

from lab.rl.config import DQNConfig
from slp import checkpoints
from slp.data import data_dir
from slp.data._files import atomic_writer
from slp.models import QNetwork

__all__ = [
    "DQNConfig",
    "TrainState",
    "ReplayBuffer",
    "Checkpoint",
    "TrainSummary",
    "EvalResult",
    "default_checkpoint_dir",
    "epsilon_at",
    "q_values",
    "td_loss",
    "make_optimizer",
    "make_update",
    "next_observation",
    "init_train_state",
    "save_checkpoint",
    "load_checkpoint",
    "train",
    "evaluate",
]

# Checkpoints are the project's one format (`slp.checkpoints`); this kind, in the sidecar,
# tells a DQN state from a classifier's.
CHECKPOINT_KIND = "dqn"
LATEST = "latest.msgpack"
BEST = "best.msgpack"
REPLAY = "replay.npz"


@flax.struct.dataclass
class TrainState:
    """Online network, target network and optimiser state.

    Attributes:
      params: online Q-network parameters (pytree).
      target_params: target Q-network parameters (same pytree structure and shapes).
      opt_state: optax state of `make_optimizer(config)`.
    """

    params: Any
    target_params: Any
    opt_state: Any


class Checkpoint(NamedTuple):
    """A loaded checkpoint.

    Attributes:
      params: online Q-network parameters.
      target_params: target parameters, or None in a parameters-only file.
      opt_state: optimiser state restored against `make_optimizer(config)`, or None.
      config: the `DQNConfig` it was trained with.
      num_actions: width of the Q-network's output.
      step: agent steps trained (summed over environments).
      updates: gradient steps taken.
      episodes: training episodes finished.
      episode_end_steps: int64 `(episodes,)`, agent step at which each episode ended.
      episode_returns: float32 `(episodes,)`, each training episode's return.
      best_mean_return: best mean of 10 consecutive training returns after the epsilon decay.
      wall_seconds: training time so far.
      np_rng_state: the numpy generator's state (dict), or None.
      device: JAX backend and device kind of the process that wrote it.
    """

    params: Any
    target_params: Any
    opt_state: Any
    config: DQNConfig
    num_actions: int
    step: int
    updates: int
    episodes: int
    episode_end_steps: np.ndarray
    episode_returns: np.ndarray
    best_mean_return: float
    wall_seconds: float
    np_rng_state: dict | None
    device: str


class TrainSummary(NamedTuple):
    """What one call of `train` did.

    Attributes:
      step: agent steps trained in all (including earlier runs resumed from).
      frames: emulator frames, `step * frame_skip`.
      updates: gradient steps in all.
      episodes: training episodes finished in all.
      episode_end_steps: int64 `(episodes,)`, agent step at which each episode ended.
      episode_returns: float32 `(episodes,)`, return of each training episode.
      wall_seconds: training time in all.
      frames_per_second: frames per second of this call.
      checkpoint_dir: where the checkpoints are.
    """

    step: int
    frames: int
    updates: int
    episodes: int
    episode_end_steps: np.ndarray
    episode_returns: np.ndarray
    wall_seconds: float
    frames_per_second: float
    checkpoint_dir: Path


class EvalResult(NamedTuple):
    """Returns of evaluation episodes.

    Attributes:
      returns: float64 `(num_episodes,)`, unclipped game score of each episode.
      lengths: int64 `(num_episodes,)`, agent steps of each episode.
      mean_return: mean of `returns`.
      std_return: standard deviation of `returns`.
    """

    returns: np.ndarray
    lengths: np.ndarray
    mean_return: float
    std_return: float


def default_checkpoint_dir(game: str = "Pong") -> Path:
    """`<data dir>/checkpoints/<game>` (`slp.data.data_dir`: `$SLP_DATA_DIR` or `~/.cache/slp`)."""
    return data_dir() / "checkpoints" / game.lower()


def epsilon_at(step: int, *, start: float, end: float, decay_steps: int) -> float:
    """Linear epsilon schedule: `start` at step 0, `end` from `decay_steps` on."""
    if decay_steps <= 0:
        return end
    frac = min(1.0, max(0.0, step / decay_steps))
    return start + frac * (end - start)


# ----------------------------------------------------------------------------- learning


def q_values(model: QNetwork, params: Any, obs_HWC: jax.Array) -> jax.Array:
    """Q-values `(num_actions,)` of one uint8 observation `(84, 84, 4)` (scaled to [0, 1])."""
    x = obs_HWC.astype(jnp.float32) / 255.0
    return model.apply(params, x[None])[0]


def td_loss(
    model: QNetwork,
    params: Any,
    target_params: Any,
    obs_HWC: jax.Array,
    action: jax.Array,
    reward: jax.Array,
    done: jax.Array,
    next_obs_HWC: jax.Array,
    *,
    gamma: float,
    huber_delta: float,
) -> jax.Array:
    """Huber loss of one transition's TD error (scalar).

    target = r + gamma (1 - done) max_a' Q_target(s', a'); loss = huber(Q(s, a) - target).

    Args:
      model: the Q-network module.
      params: online parameters.
      target_params: target parameters.
      obs_HWC: uint8 `(84, 84, 4)`, state s.
      action: int scalar, action a.
      reward: float scalar, reward r (clipped).
      done: bool scalar, whether the episode ended with this transition.
      next_obs_HWC: uint8 `(84, 84, 4)`, state s' (ignored when `done`).
      gamma: discount.
      huber_delta: Huber threshold.

    Returns:
      float32 scalar loss.
    """
    q_sa = q_values(model, params, obs_HWC)[action]
    q_next = jnp.max(q_values(model, target_params, next_obs_HWC))
    target = reward + gamma * (1.0 - done.astype(jnp.float32)) * q_next
    return optax.huber_loss(q_sa, jax.lax.stop_gradient(target), delta=huber_delta)


def next_observation(obs_HWC: jax.Array, next_frame_HW: jax.Array) -> jax.Array:
    """The stack after `obs_HWC`: drop its oldest frame, append `next_frame_HW`."""
    return jnp.concatenate([obs_HWC[..., 1:], next_frame_HW[..., None]], axis=-1)


def make_optimizer(config: DQNConfig) -> optax.GradientTransformation:
    """Adam after global gradient-norm clipping."""
    return optax.chain(
        optax.clip_by_global_norm(config.max_grad_norm),
        optax.adam(config.learning_rate, eps=config.adam_eps),
    )


def make_update(
    model: QNetwork, config: DQNConfig
) -> Callable[[TrainState, dict], tuple[TrainState, jax.Array]]:
    """The jit-compiled update: gradient steps on a stack of K batches.

    Returns:
      `update(state, batches) -> (state, losses)`, where each leaf of `batches` is
      `(K, batch_size, ...)` as `ReplayBuffer.sample` returns them,
      and `losses` is `(K,)`. The incoming state is donated.
    """
    optimizer = make_optimizer(config)
    per_example = jax.vmap(
        lambda p, tp, o, a, r, d, no: td_loss(
            model, p, tp, o, a, r, d, no, gamma=config.gamma, huber_delta=config.huber_delta
        ),
        in_axes=(None, None, 0, 0, 0, 0, 0),
    )

    def loss_fn(params, target_params, batch):
        losses = per_example(
            params,
            target_params,
            batch["obs"],
            batch["action"],
            batch["reward"],
            batch["done"],
            next_observation(batch["obs"], batch["next_frame"]),
        )
        return jnp.mean(losses)

    def one_step(state: TrainState, batch: dict):
        loss, grads = jax.value_and_grad(loss_fn)(state.params, state.target_params, batch)
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        return state.replace(params=params, opt_state=opt_state), loss

    def update(state: TrainState, batches: dict):
        return jax.lax.scan(one_step, state, batches)

    return jax.jit(update, donate_argnums=0)


def init_train_state(
    model: QNetwork, config: DQNConfig, *, key: jax.Array, obs_shape=(84, 84, 4)
) -> TrainState:
    """Fresh parameters (flax default init), a target copy and the optimiser state."""

    # One compiled program instead of many small eager ones (seconds faster on CPU).
    @jax.jit
    def init(key):
        params = model.init(key, jnp.zeros((1, *obs_shape), jnp.float32))
        return TrainState(
            params=params,
            target_params=jax.tree.map(jnp.copy, params),
            opt_state=make_optimizer(config).init(params),
        )

    return init(key)


# ----------------------------------------------------------------------------- replay


class ReplayBuffer:
    """Circular replay memory in numpy, laid out as (time, environment).

    Slot (t, n) holds environment n's observation at time t, the action taken, the reward
    and whether that step ended the episode; the next observation is slot (t + 1, n),
    written by the next `add`. After an episode ends the next slot holds the new
    episode's first observation, which the `done` flag masks out of the TD target.

    Args:
      capacity: transitions held (rounded down to a multiple of `num_envs`).
      num_envs: environments per `add`.
      obs_shape: shape of one observation.
    """

    def __init__(self, capacity: int, num_envs: int, obs_shape=(84, 84, 4)):
        self.slots = capacity // num_envs
        if self.slots < 2:
            raise ValueError(f"capacity {capacity} too small for {num_envs} environments")
        self.num_envs = num_envs
        self.obs = np.zeros((self.slots, num_envs, *obs_shape), np.uint8)
        self.action = np.zeros((self.slots, num_envs), np.int32)
        self.reward = np.zeros((self.slots, num_envs), np.float32)
        self.done = np.zeros((self.slots, num_envs), bool)
        self.pos = 0
        self.filled = 0

    def __len__(self) -> int:
        """Transitions that can be sampled (their next observation is stored)."""
        return max(0, self.filled - 1) * self.num_envs

    def add(self, obs, action, reward, done) -> None:
        """Stores one step of every environment: obs `(N, *obs_shape)`, others `(N,)`."""
        self.obs[self.pos] = obs
        self.action[self.pos] = action
        self.reward[self.pos] = reward
        self.done[self.pos] = done
        self.pos = (self.pos + 1) % self.slots
        self.filled = min(self.filled + 1, self.slots)

    def sample(self, rng: np.random.Generator, num_batches: int, batch_size: int) -> dict:
        """Uniformly samples `num_batches` batches of transitions.

        Returns:
          dict with leaves `(num_batches, batch_size, ...)`: obs (uint8, + obs_shape),
          action, reward, done, and next_frame (uint8, obs_shape without the last axis),
          the newest frame of the next observation: the next stack is
          `obs[..., 1:]` followed by `next_frame` (see `next_observation`), exact whenever
          `done` is False (when it is True the next observation is not used).
        """
        if self.filled < 2:
            raise ValueError("the replay buffer holds no complete transition yet")
        shape = (num_batches, batch_size)
        # The oldest slot is pos - filled; the newest (pos - 1) has no successor yet.
        age = rng.integers(0, self.filled - 1, size=shape)
        t = (self.pos - self.filled + age) % self.slots
        n = rng.integers(0, self.num_envs, size=shape)
        return {
            "obs": self.obs[t, n],
            "action": self.action[t, n],
            "reward": self.reward[t, n],
            "done": self.done[t, n],
            # The next stack shares 3 frames with this one; only its newest frame is new.
            "next_frame": self.obs[(t + 1) % self.slots, n, ..., -1],
        }

    def state_dict(self) -> dict:
        """Arrays and counters for saving."""
        return {
            "obs": self.obs,
            "action": self.action,
            "reward": self.reward,
            "done": self.done,
            "pos": np.int64(self.pos),
            "filled": np.int64(self.filled),
        }

    def load_state_dict(self, state: dict) -> None:
        """Restores `state_dict()`; the newest step is marked done (its successor is lost)."""
        if state["obs"].shape != self.obs.shape:
            raise ValueError(
                f"saved replay buffer has shape {state['obs'].shape}, expected {self.obs.shape}"
            )
        self.obs[...] = state["obs"]
        self.action[...] = state["action"]
        self.reward[...] = state["reward"]
        self.done[...] = state["done"]
        self.pos = int(state["pos"])
        self.filled = int(state["filled"])
        if self.filled:
            self.done[(self.pos - 1) % self.slots] = True


# ----------------------------------------------------------------------------- checkpoints


def save_checkpoint(
    path: str | os.PathLike,
    *,
    params: Any,
    config: DQNConfig,
    num_actions: int,
    target_params: Any = None,
    opt_state: Any = None,
    step: int = 0,
    updates: int = 0,
    episode_end_steps: np.ndarray | None = None,
    episode_returns: np.ndarray | None = None,
    best_mean_return: float = -math.inf,
    wall_seconds: float = 0.0,
    np_rng_state: dict | None = None,
    device: str | None = None,
    obs_shape: tuple[int, ...] = (84, 84, 4),
) -> Path:
    """Writes a checkpoint atomically (`slp.checkpoints`: arrays in `path`, metadata in its
    ``.json`` sidecar).

    With only `params` given it is a parameters-only file (for evaluation and figures);
    with `target_params`, `opt_state` and `np_rng_state` training resumes from it.
    `device` (default: this process's JAX backend and device) records where it trained;
    `obs_shape` is the network's observation shape (the parameters' template on loading).

    Returns:
      The path written.
    """
    ends = np.asarray([] if episode_end_steps is None else episode_end_steps, np.int64)
    rets = np.asarray([] if episode_returns is None else episode_returns, np.float32)
    if ends.shape != rets.shape:
        raise ValueError(f"episode steps {ends.shape} and returns {rets.shape} differ in shape")
    tree = {"params": params, "episode_end_steps": ends, "episode_returns": rets}
    if target_params is not None:
        tree["target_params"] = target_params
    if opt_state is not None:
        tree["opt_state"] = opt_state
    meta = {
        "kind": CHECKPOINT_KIND,
        "parts": sorted(tree),
        "config": dataclasses.asdict(config),
        "num_actions": int(num_actions),
        "obs_shape": [int(d) for d in obs_shape],
        "episodes": int(ends.shape[0]),
        "step": int(step),
        "updates": int(updates),
        "best_mean_return": float(best_mean_return),
        "wall_seconds": float(wall_seconds),
        "np_rng_state": np_rng_state,
        "device": device or f"{jax.default_backend()}: {jax.devices()[0].device_kind}",
    }
    return checkpoints.save(path, tree, meta)


def _template(meta: dict[str, Any]) -> dict[str, Any]:
    """The shapes a checkpoint holds, from its metadata (observation shape, actions, parts)."""
    if meta.get("kind") != CHECKPOINT_KIND:
        raise ValueError(f"not a DQN checkpoint (kind {meta.get('kind')!r})")
    model = QNetwork(num_actions=meta["num_actions"])
    obs = jax.ShapeDtypeStruct((1, *meta["obs_shape"]), jnp.float32)
    params = jax.eval_shape(model.init, jax.random.key(0), obs)
    n = meta["episodes"]
    tree = {
        "params": params,
        "episode_end_steps": jax.ShapeDtypeStruct((n,), np.int64),
        "episode_returns": jax.ShapeDtypeStruct((n,), np.float32),
    }
    if "target_params" in meta["parts"]:
        tree["target_params"] = params
    if "opt_state" in meta["parts"]:
        config = DQNConfig(**meta["config"])
        tree["opt_state"] = jax.eval_shape(make_optimizer(config).init, params)
    return tree


def load_checkpoint(path: str | os.PathLike) -> Checkpoint:
    """Reads a checkpoint written by `save_checkpoint` (full or parameters-only)."""
    tree, meta = checkpoints.load(path, _template)
    as_jax = functools.partial(jax.tree.map, jnp.asarray)
    return Checkpoint(
        params=as_jax(tree["params"]),
        target_params=as_jax(tree["target_params"]) if "target_params" in tree else None,
        opt_state=as_jax(tree["opt_state"]) if "opt_state" in tree else None,
        config=DQNConfig(**meta["config"]),
        num_actions=meta["num_actions"],
        step=meta["step"],
        updates=meta["updates"],
        episodes=meta["episodes"],
        episode_end_steps=tree["episode_end_steps"],
        episode_returns=tree["episode_returns"],
        best_mean_return=meta["best_mean_return"],
        wall_seconds=meta["wall_seconds"],
        np_rng_state=meta["np_rng_state"],
        device=meta["device"],
    )


def _save_replay(path: Path, replay: ReplayBuffer) -> None:
    with atomic_writer(path) as fh:
        np.savez(fh, **replay.state_dict())


# ----------------------------------------------------------------------------- training


def _greedy_fn(model: QNetwork):
    @jax.jit
    def greedy(params, obs_NHWC):
        q = jax.vmap(lambda o: q_values(model, params, o))(obs_NHWC)
        return jnp.argmax(q, axis=-1)

    return greedy


def _egreedy(greedy, params, obs, epsilon: float, rng: np.random.Generator, num_actions: int):
    n = obs.shape[0]
    actions = np.asarray(greedy(params, obs)) if params is not None else np.zeros(n, np.int64)
    explore = rng.random(n) < epsilon
    actions = np.where(explore, rng.integers(0, num_actions, size=n), actions)
    return actions.astype(np.int64)


def train(  # noqa: C901 - one loop in the order of the Nature DQN (see the docstring)
    config: DQNConfig,
    *,
    total_steps: int,
    seed: int = 0,
    checkpoint_dir: str | os.PathLike | None = None,
    resume: bool = True,
    max_seconds: float | None = None,
    checkpoint_every: int = 50_000,
    save_replay: bool = False,
    progress: bool = True,
) -> TrainSummary:
    """Trains (or resumes training of) a Q-network with DQN.

    Checkpoints go to `checkpoint_dir` (default `default_checkpoint_dir(config.game)`):
    `latest.msgpack` (full, every `checkpoint_every` agent steps and at the end),
    `best.msgpack` (parameters whenever the mean of the last 10 training returns after the
    epsilon decay is a new best) and, with `save_replay`, `replay.npz`. With `resume`, an
    existing `latest.msgpack` is continued: parameters, target, optimiser, counters, the
    random generator and the return history are restored; the environments restart with
    seeds derived from `seed` and the step count (emulator states are not saved); without
    a saved replay buffer it refills for `learning_starts` steps before updates resume.

    Args:
      config: hyperparameters.
      total_steps: stop when this many agent steps (summed over environments) are done.
      seed: seed of the network initialisation, exploration, sampling and environments.
      checkpoint_dir: where checkpoints are read and written.
      resume: continue from `checkpoint_dir/latest.msgpack` if it exists.
      max_seconds: also stop after this much wall time in this call.
      checkpoint_every: agent steps between checkpoints.
      save_replay: also save the replay buffer (large) with each checkpoint.
      progress: show a tqdm progress bar (episodes, mean return, frames/s).

    Returns:
      A `TrainSummary`.

    Why one long function: the loop acts, steps the environments, stores the transition,
    updates, copies the target network and checkpoints, in the order of the Nature DQN,
    and every step reads and changes the same counters (agent step, updates, best return,
    the episode history, the next target copy and checkpoint). Split into functions, those
    counters would travel through each of them as one mutable record and the order of
    the algorithm would no longer be read in one place.
    """
    from tqdm.auto import tqdm

    from lab.rl.env import make_vector_env

    if total_steps < 0:
        raise ValueError(f"total_steps must be >= 0, got {total_steps}")
    ckpt_dir = Path(checkpoint_dir) if checkpoint_dir else default_checkpoint_dir(config.game)
    n_env = config.num_envs
    envs = make_vector_env(
        n_env,
        config.game,
        asynchronous=config.asynchronous,
        noop_max=config.noop_max,
        frame_skip=config.frame_skip,
        clip_rewards=True,
    )
    try:
        num_actions = int(envs.single_action_space.n)
        obs_shape = envs.single_observation_space.shape
        model = QNetwork(num_actions=num_actions)
        rng = np.random.default_rng(seed)
        replay = ReplayBuffer(config.replay_capacity, n_env, obs_shape)

        step = updates = 0
        best = -math.inf
        wall_before = 0.0
        end_steps: list[int] = []
        returns: list[float] = []
        learning_from = config.learning_starts
        latest = ckpt_dir / LATEST
        if resume and latest.is_file():
            ck = load_checkpoint(latest)
            if ck.num_actions != num_actions or ck.opt_state is None:
                raise ValueError(f"{latest} does not match this game or is parameters-only")
            state = TrainState(ck.params, ck.target_params, ck.opt_state)
            state = jax.device_put(state)
            step, updates, best = ck.step, ck.updates, ck.best_mean_return
            wall_before = ck.wall_seconds
            end_steps, returns = list(ck.episode_end_steps), list(ck.episode_returns)
            if ck.np_rng_state is not None:
                rng.bit_generator.state = ck.np_rng_state
            learning_from = step + config.learning_starts
            replay_file = ckpt_dir / REPLAY
            if replay_file.is_file():
                try:
                    with np.load(replay_file) as z:
                        replay.load_state_dict(dict(z))
                    learning_from = step
                except ValueError as err:
                    print(f"replay buffer not restored: {err}", file=sys.stderr)
            print(f"resumed from {latest} at agent step {step}", file=sys.stderr)
        else:
            state = init_train_state(model, config, key=jax.random.key(seed), obs_shape=obs_shape)

        update = make_update(model, config)
        greedy = _greedy_fn(model)
        obs, _ = envs.reset(seed=int(seed + step * 7919))
        ep_return = np.zeros(n_env, np.float64)
        next_target = (step // config.target_update_every + 1) * config.target_update_every
        next_ckpt = (step // checkpoint_every + 1) * checkpoint_every
        eps_done = config.eps_decay_steps
        losses = None
        last_loss = float("nan")
        vec_steps = 0
        start_step, t0 = step, time.perf_counter()

        def checkpoint(path: Path, **resumable) -> None:
            """The network's parameters and the run's counters to ``path``; ``resumable``:
            the rest of a state training can resume from."""
            save_checkpoint(
                path,
                params=state.params,
                config=config,
                num_actions=num_actions,
                step=step,
                updates=updates,
                best_mean_return=best,
                obs_shape=obs_shape,
                **resumable,
            )

        def save():
            nonlocal wall_before, t0
            now = time.perf_counter()
            wall = wall_before + (now - t0)
            checkpoint(
                latest,
                target_params=state.target_params,
                opt_state=state.opt_state,
                episode_end_steps=np.asarray(end_steps),
                episode_returns=np.asarray(returns),
                wall_seconds=wall,
                np_rng_state=rng.bit_generator.state,
            )
            if save_replay:
                _save_replay(ckpt_dir / REPLAY, replay)
            wall_before, t0 = wall, now

        bar = tqdm(
            total=total_steps,
            initial=min(step, total_steps),
            unit="step",
            disable=not progress,
            mininterval=2.0,
            dynamic_ncols=True,
        )
        call_start = time.perf_counter()
        while step < total_steps:
            if max_seconds is not None and time.perf_counter() - call_start > max_seconds:
                break
            eps = epsilon_at(step, start=config.eps_start, end=config.eps_end, decay_steps=eps_done)
            actions = _egreedy(greedy, state.params, obs, eps, rng, num_actions)
            if config.asynchronous:
                envs.step_async(actions)
            if step >= learning_from and vec_steps % config.vector_steps_per_call == 0:
                batches = replay.sample(rng, config.updates_per_call, config.batch_size)
                state, losses = update(state, batches)
                updates += config.updates_per_call
            if config.asynchronous:
                next_obs, reward, term, trunc, _ = envs.step_wait()
            else:
                next_obs, reward, term, trunc, _ = envs.step(actions)
            done = np.logical_or(term, trunc)
            replay.add(obs, actions, reward, done)
            obs = next_obs
            vec_steps += 1
            step += n_env
            ep_return += reward
            for i in np.flatnonzero(done):
                end_steps.append(step)
                returns.append(float(ep_return[i]))
                ep_return[i] = 0.0
                if step >= eps_done and len(returns) >= 10:
                    recent = float(np.mean(returns[-10:]))
                    if recent > best:
                        best = recent
                        checkpoint(ckpt_dir / BEST)
            if step >= next_target:
                state = state.replace(target_params=jax.tree.map(jnp.copy, state.params))
                next_target += config.target_update_every
            if step >= next_ckpt:
                save()
                next_ckpt += checkpoint_every
                elapsed = time.perf_counter() - call_start
                bar.write(
                    f"step {step} frames {step * config.frame_skip} updates {updates} "
                    f"episodes {len(returns)} "
                    f"ret10 {np.mean(returns[-10:]) if returns else float('nan'):.2f} "
                    f"best10 {best:.2f} eps {eps:.3f} "
                    f"fps {(step - start_step) * config.frame_skip / max(elapsed, 1e-9):.0f}",
                    file=sys.stderr,
                )
            bar.update(n_env)
            if bar.n % 1000 < n_env:
                elapsed = time.perf_counter() - call_start
                if losses is not None:
                    last_loss = float(losses[-1])
                bar.set_postfix(
                    episodes=len(returns),
                    ret10=f"{np.mean(returns[-10:]):.1f}" if returns else "-",
                    fps=f"{(step - start_step) * config.frame_skip / max(elapsed, 1e-9):.0f}",
                    eps=f"{eps:.3f}",
                    loss=f"{last_loss:.4f}",
                    refresh=False,
                )
        bar.close()
        save()
        elapsed = time.perf_counter() - call_start
        return TrainSummary(
            step=step,
            frames=step * config.frame_skip,
            updates=updates,
            episodes=len(returns),
            episode_end_steps=np.asarray(end_steps, np.int64),
            episode_returns=np.asarray(returns, np.float32),
            wall_seconds=wall_before,
            frames_per_second=(step - start_step) * config.frame_skip / max(elapsed, 1e-9),
            checkpoint_dir=ckpt_dir,
        )
    finally:
        envs.close()


# ----------------------------------------------------------------------------- evaluation


def evaluate(
    params: Any,
    *,
    num_episodes: int = 10,
    epsilon: float = 0.01,
    seed: int = 12345,
    game: str = "Pong",
    num_actions: int | None = None,
    noop_max: int = 30,
    frame_skip: int = 4,
    max_episode_frames: int = 108_000,
    asynchronous: bool = False,
) -> EvalResult:
    """Mean unclipped return of an epsilon-greedy policy over `num_episodes` episodes.

    Each episode runs in its own environment (seeds `seed + i`, random no-op starts); all
    step together and each contributes exactly its first episode, so short episodes are
    not over-counted. `params=None` evaluates the uniformly random policy the same way.

    Args:
      params: Q-network parameters, or None for the random policy.
      num_episodes: episodes to average.
      epsilon: probability of a random action at each step.
      seed: environment and exploration seed.
      game: ALE game name.
      num_actions: Q-network output width (default: the game's action count).
      noop_max: random no-ops at reset.
      frame_skip: emulator frames per agent step.
      max_episode_frames: emulator frames after which an episode is cut.
      asynchronous: step the environments in worker processes.

    Returns:
      An `EvalResult`.
    """
    from lab.rl.env import make_vector_env

    if num_episodes < 1:
        raise ValueError(f"num_episodes must be >= 1, got {num_episodes}")
    if not 0.0 <= epsilon <= 1.0:
        raise ValueError(f"epsilon must be in [0, 1], got {epsilon}")
    envs = make_vector_env(
        num_episodes,
        game,
        asynchronous=asynchronous,
        noop_max=noop_max,
        frame_skip=frame_skip,
        clip_rewards=False,
        max_episode_frames=max_episode_frames,
    )
    try:
        n_act = int(envs.single_action_space.n)
        if num_actions is not None and num_actions != n_act:
            raise ValueError(f"the network has {num_actions} actions, {game} has {n_act}")
        greedy = _greedy_fn(QNetwork(num_actions=n_act)) if params is not None else None
        rng = np.random.default_rng(seed)
        eps = 1.0 if params is None else epsilon
        obs, _ = envs.reset(seed=seed)
        returns = np.zeros(num_episodes)
        lengths = np.zeros(num_episodes, np.int64)
        running = np.ones(num_episodes, bool)
        while running.any():
            actions = _egreedy(greedy, params, obs, eps, rng, n_act)
            obs, reward, term, trunc, _ = envs.step(actions)
            returns += np.where(running, reward, 0.0)
            lengths += running
            running &= ~np.logical_or(term, trunc)
    finally:
        envs.close()
    return EvalResult(
        returns=returns,
        lengths=lengths,
        mean_return=float(returns.mean()),
        std_return=float(returns.std()),
    )
