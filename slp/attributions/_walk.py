"""What the walker-based attribution methods share."""

from __future__ import annotations

import jax

from slp import network as net


class DifferentiableForward(net.ForwardRules):
    """`slp.network.ForwardRules` that can be differentiated through its max-pools.

    The winners are chosen on a value cut off from differentiation (finding them is not
    differentiable, and its integer operand has no tangent), then gathered from the
    pool's input, so the derivative of a pool routes to its winners.
    """

    def max_pool(self, eqn, z):
        w = net.pool_winners(eqn, jax.lax.stop_gradient(z))
        self.winners[eqn.site] = w
        return z.reshape(-1)[w.reshape(-1)].reshape(w.shape)
