"""Atari environments with the standard DQN preprocessing (gymnasium + ale-py).

The preprocessing is the usual one of Mnih et al. (2015), built from gymnasium's own
wrappers: the emulator runs with no frame skip and no sticky actions; `AtariPreprocessing`
repeats each action for `frame_skip` emulator frames, takes the pixel-wise maximum of
the last two, converts to grayscale, resizes to 84x84 (area interpolation) and starts
each episode with a random number (1..`noop_max`) of no-ops; `ClipReward` clips rewards
to [-1, 1]; `FrameStackObservation` stacks the last 4 frames (padding with the first
frame at reset). Observations are returned as `(84, 84, 4)` uint8 arrays (height,
width, frames; oldest frame first), the layout `slp.models.QNetwork` takes after
scaling with `to_network_input`.

ale-py (GPL-2.0) and opencv are optional dependencies: install them with the `rl` extra.
"""

from __future__ import annotations

import importlib.util
from typing import Any

import numpy as np

__all__ = [
    "rl_dependencies_missing",
    "make_env",
    "make_vector_env",
    "to_network_input",
]

_REQUIRED = {"gymnasium": "gymnasium", "ale_py": "ale-py", "cv2": "opencv-python-headless"}


# The frames of the Nature DQN (Mnih et al. 2015): grey uint8 pixels, and an episode is a
# whole game (losing a life does not end it).
_NATURE_FRAMES = {"grayscale_obs": True, "scale_obs": False, "terminal_on_life_loss": False}


def _importable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # e.g. a module blocked with sys.modules[name] = None
        return False


def rl_dependencies_missing() -> str | None:
    """Returns a message naming the missing `rl` extra packages, or None if all are present."""
    missing = [pip for mod, pip in _REQUIRED.items() if not _importable(mod)]
    if not missing:
        return None
    return (
        f"the Atari environments need {', '.join(missing)}; "
        "install them with `pip install -e .[rl]`"
    )


def _import_gym():
    msg = rl_dependencies_missing()
    if msg is not None:
        raise ImportError(msg)
    import ale_py
    import gymnasium as gym

    gym.register_envs(ale_py)
    return gym


def make_env(
    game: str = "Pong",
    *,
    frame_skip: int = 4,
    noop_max: int = 30,
    screen_size: int = 84,
    stack_size: int = 4,
    clip_rewards: bool = True,
    max_episode_frames: int = 108_000,
    render_mode: str | None = None,
) -> Any:
    """Makes one preprocessed Atari environment (a `gymnasium.Env`).

    Seed it through `env.reset(seed=...)`: the seed fixes the emulator and the no-op starts.

    Args:
      game: ALE game name, e.g. "Pong".
      frame_skip: emulator frames per agent step (the action is repeated; the observation is
        the maximum of the last two frames).
      noop_max: at reset, a random number of no-ops in [1, noop_max]; 0 disables them.
      screen_size: side of the square grayscale frame.
      stack_size: number of stacked frames.
      clip_rewards: clip each step's reward to [-1, 1] (Pong's rewards are already +-1).
      max_episode_frames: emulator frames after which an episode is truncated.
      render_mode: passed to the ALE environment ("rgb_array" for pictures).

    Returns:
      A gymnasium environment whose observations are uint8 arrays
      `(screen_size, screen_size, stack_size)` and whose actions are the game's minimal
      action set.
    """
    if frame_skip < 1:
        raise ValueError(f"frame_skip must be >= 1, got {frame_skip}")
    if stack_size < 1:
        raise ValueError(f"stack_size must be >= 1, got {stack_size}")
    if noop_max < 0:
        raise ValueError(f"noop_max must be >= 0, got {noop_max}")
    gym = _import_gym()
    from gymnasium.spaces import Box

    env = gym.make(
        f"ALE/{game}-v5",
        frameskip=1,
        repeat_action_probability=0.0,
        full_action_space=False,
        max_num_frames_per_episode=max_episode_frames,
        render_mode=render_mode,
    )
    env = gym.wrappers.AtariPreprocessing(
        env, noop_max=noop_max, frame_skip=frame_skip, screen_size=screen_size, **_NATURE_FRAMES
    )
    if clip_rewards:
        env = gym.wrappers.ClipReward(env, -1.0, 1.0)
    env = gym.wrappers.FrameStackObservation(env, stack_size)
    space = Box(0, 255, (screen_size, screen_size, stack_size), np.uint8)
    return gym.wrappers.TransformObservation(
        env, lambda obs: np.ascontiguousarray(np.moveaxis(obs, 0, -1)), space
    )


def make_vector_env(
    num_envs: int,
    game: str = "Pong",
    *,
    asynchronous: bool = False,
    **env_options: Any,
) -> Any:
    """Makes `num_envs` copies of `make_env` as a gymnasium vector environment.

    Finished episodes are reset within the same `step` (gymnasium's SAME_STEP autoreset):
    the observation returned with `terminated | truncated` is already the next episode's
    first one.

    Args:
      num_envs: number of environments.
      game: ALE game name.
      asynchronous: step the environments in worker processes (`AsyncVectorEnv`) instead
        of one after another in this process.
      **env_options: keyword options of `make_env`.

    Returns:
      A `gymnasium.vector.VectorEnv`; observations `(num_envs, 84, 84, 4)` uint8. Seed it
      with `reset(seed=s)` (environment i gets seed s + i).
    """
    if num_envs < 1:
        raise ValueError(f"num_envs must be >= 1, got {num_envs}")
    gym = _import_gym()
    from gymnasium.vector import AsyncVectorEnv, AutoresetMode, SyncVectorEnv

    def thunk():
        return make_env(game, **env_options)

    del gym
    if asynchronous:
        # Spawned, not forked, workers: forking a process that runs JAX can deadlock.
        return AsyncVectorEnv(
            [thunk] * num_envs, autoreset_mode=AutoresetMode.SAME_STEP, context="spawn"
        )
    return SyncVectorEnv([thunk] * num_envs, autoreset_mode=AutoresetMode.SAME_STEP)


def to_network_input(obs_HWC: np.ndarray) -> np.ndarray:
    """Scales uint8 frames to the float32 [0, 1] input of `slp.models.QNetwork`.

    Args:
      obs_HWC: uint8 array `(..., 84, 84, 4)`.

    Returns:
      float32 array of the same shape, `obs / 255`.
    """
    obs_HWC = np.asarray(obs_HWC)
    if obs_HWC.dtype != np.uint8:
        raise TypeError(f"expected uint8 frames, got dtype {obs_HWC.dtype}")
    return obs_HWC.astype(np.float32) / np.float32(255.0)
