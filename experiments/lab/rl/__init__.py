"""Reinforcement learning for the paper's RLNET experiment: Atari Pong and DQN.

- `lab.rl.config`: `DQNConfig` (imports no jax).
- `lab.rl.dqn`: the DQN agent: replay buffer, update, training loop, checkpoints, evaluation.
- `lab.rl.env`: the Atari environment with the Nature DQN preprocessing.

Needs the optional `rl` extra (gymnasium, ale-py, opencv); importing these modules works
without it, making an environment raises an error that names what is missing. This file
imports nothing, so that ``lab.rl.config`` stays cheap.
"""
