"""The experiments' shared code: the research scaffolding that is not part of the `slp` library.

- `lab.cli`: the scripts' options, generated from the config dataclasses, in one help
  layout (no jax, cheap to import).
- `lab.fetch`: package managers' copies of MNIST and Fashion-MNIST, after the official
  sources (no jax).
- `lab.analysis`: batched maps of every registered attribution method, the measures on
  top of them, summaries, tables, figures and atomic JSON output (imports jax).
- `lab.rl`: Atari Pong and DQN for the Pong experiments (the ``rl`` extra installs
  gymnasium, ale-py and opencv).

`lab` is importable because a script's own folder is on `sys.path` when it runs as
``python experiments/<script>.py``; the tests get it through pytest's ``pythonpath``
(``[tool.pytest.ini_options]`` in pyproject.toml). This file imports nothing, so that
``from lab import cli`` stays cheap (no jax).
"""
