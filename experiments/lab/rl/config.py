"""`DQNConfig`, the hyperparameters of DQN training, and the named `PRESETS` of
``experiments/pong_train.py --preset`` (imports no jax, so that a command line can build its
options and answer ``--help`` at once)."""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class DQNConfig:
    """Hyperparameters of DQN training (schedules in agent steps summed over environments).

    Attributes:
      game: ALE game name.
      num_envs: environments stepped together.
      asynchronous: step the environments in worker processes.
      learning_rate: Adam step size.
      adam_eps: Adam epsilon.
      gamma: discount factor.
      batch_size: transitions per gradient step.
      replay_capacity: transitions held by the replay buffer.
      learning_starts: agent steps collected before the first gradient step.
      train_every: agent steps per gradient step (4 in the Nature DQN).
      target_update_every: agent steps between copies of the online to the target network.
      eps_start: exploration epsilon at step 0.
      eps_end: exploration epsilon after `eps_decay_steps`.
      eps_decay_steps: length of the linear epsilon decay.
      huber_delta: the Huber loss' switch from quadratic to linear.
      max_grad_norm: global gradient-norm clip.
      noop_max: random no-ops at the start of each episode.
      frame_skip: emulator frames per agent step.
    """

    game: str = "Pong"
    num_envs: int = 1
    asynchronous: bool = False
    learning_rate: float = 1e-4
    adam_eps: float = 1.5e-4
    gamma: float = 0.99
    batch_size: int = 32
    replay_capacity: int = 100_000
    learning_starts: int = 10_000
    train_every: int = 4
    target_update_every: int = 1_000
    eps_start: float = 1.0
    eps_end: float = 0.01
    eps_decay_steps: int = 100_000
    huber_delta: float = 1.0
    max_grad_norm: float = 10.0
    noop_max: int = 30
    frame_skip: int = 4

    def __post_init__(self):
        positive = (
            "num_envs",
            "batch_size",
            "replay_capacity",
            "train_every",
            "target_update_every",
            "frame_skip",
        )
        for name in positive:
            if getattr(self, name) < 1:
                raise ValueError(f"DQNConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.replay_capacity // self.num_envs < 2:
            raise ValueError(
                f"replay_capacity ({self.replay_capacity}) must hold at least 2 steps of each "
                f"of the {self.num_envs} environments"
            )
        n, k = self.num_envs, self.train_every
        if n % k and k % n:
            raise ValueError(
                f"num_envs ({n}) and train_every ({k}) must divide one another, so that every "
                "call of the update runs the same number of gradient steps"
            )
        if not 0.0 <= self.gamma <= 1.0:
            raise ValueError(f"gamma must be in [0, 1], got {self.gamma}")
        for name in ("eps_start", "eps_end"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        if self.learning_starts < 0 or self.eps_decay_steps < 0:
            raise ValueError("learning_starts and eps_decay_steps must be >= 0")

    @property
    def updates_per_call(self) -> int:
        """Gradient steps in one call of the update."""
        return max(1, self.num_envs // self.train_every)

    @property
    def vector_steps_per_call(self) -> int:
        """Vector-environment steps between two calls of the update."""
        return max(1, self.train_every // self.num_envs)


PRESETS = {
    # A few hundred steps: the smoke test.
    "tiny": DQNConfig(
        num_envs=2,
        replay_capacity=1_000,
        learning_starts=100,
        train_every=2,
        target_update_every=100,
        eps_decay_steps=200,
        batch_size=8,
    ),
    # The defaults: the Nature DQN schedule shortened for a small budget, one environment,
    # one update per 4 agent steps.
    "cpu": DQNConfig(),
    # Many cores and an accelerator: 8 environment processes stepping while the
    # accelerator updates, one gradient step per agent step (replay ratio 1, which learns
    # Pong in fewer agent steps than the Nature DQN's 1/4); the schedule of "cpu" otherwise.
    "gpu": DQNConfig(num_envs=8, asynchronous=True, train_every=1),
}
