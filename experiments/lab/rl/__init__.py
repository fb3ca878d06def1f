"""Reinforcement learning for the paper's RLNET experiment: Atari Pong and DQN.

Needs the optional `rl` extra (gymnasium, ale-py, opencv); importing this package works
without it, making an environment raises an error that names what is missing.
"""

from lab.rl.dqn import (
    Checkpoint,
    DQNConfig,
    EvalResult,
    ReplayBuffer,
    TrainState,
    TrainSummary,
    default_checkpoint_dir,
    epsilon_at,
    evaluate,
    init_train_state,
    load_checkpoint,
    make_optimizer,
    make_update,
    next_observation,
    q_values,
    save_checkpoint,
    td_loss,
    train,
)
from lab.rl.env import make_env, make_vector_env, rl_dependencies_missing, to_network_input

__all__ = [
    "Checkpoint",
    "DQNConfig",
    "EvalResult",
    "ReplayBuffer",
    "TrainState",
    "TrainSummary",
    "default_checkpoint_dir",
    "epsilon_at",
    "evaluate",
    "init_train_state",
    "load_checkpoint",
    "make_env",
    "make_optimizer",
    "make_update",
    "make_vector_env",
    "next_observation",
    "q_values",
    "rl_dependencies_missing",
    "save_checkpoint",
    "td_loss",
    "to_network_input",
    "train",
]
