"""Adam for the JAX engines: ``optax.adam``'s algorithm and state, with one square root and one
division per parameter.

``optax.adam`` computes ``(mu / c1) / (sqrt(nu / c2) + eps)`` with ``c1 = 1 - b1^t`` and
``c2 = 1 - b2^t``: three divisions and a square root per element. On a CPU those are throughput-bound
(a vector division or root takes many cycles), and for a small model they are a large part of the
step: 0.49 of the 1.15 ms of Burda et al.'s MLP at batch 20 (BENCHMARKS.md, 2026-12-03). The same
quantity is ``mu * (sqrt(c2) / c1) / (sqrt(nu) + eps * sqrt(c2))``, where every bias correction is a
scalar computed once per step: one root and one division per element, as ``torch.optim.Adam``.
The bias corrections are computed as ``-expm1(t log b)``, which keeps their float32 digits at small
``t`` (optax's ``1 - b^t`` loses 13 bits to cancellation for ``b2 = 0.999``; torch computes them in
double precision). Otherwise the two agree to float32 rounding (``tests/test_optim.py``); the state is optax's
(``(ScaleByAdamState(count, mu, nu), EmptyState())``), so checkpoints written with ``optax.adam``
restore into it and back.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import optax


def adam(learning_rate: float, b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8) -> optax.GradientTransformation:
    """Adam (Kingma and Ba) with a constant learning rate; ``eps`` is added to sqrt(v_hat), outside
    the root, as in ``optax.adam`` and ``torch.optim.Adam``."""
    reference = optax.adam(learning_rate, b1=b1, b2=b2, eps=eps)  # the state layout only

    def update_fn(grads, state, params=None):
        del params
        adam_state, empty = state
        count = optax.safe_increment(adam_state.count)
        dtype = jax.tree.leaves(grads)[0].dtype  # the bias corrections in the parameters' precision
        t = count.astype(dtype)
        # 1 - b^t as -expm1(t log b), log b taken in double precision: 1 - 0.999^t in float32 loses
        # about 13 bits to cancellation at small t (optax.adam's relative error 6.6e-6 at t = 1)
        c1 = -jnp.expm1(t * jnp.asarray(math.log(b1), dtype))
        root_c2 = jnp.sqrt(-jnp.expm1(t * jnp.asarray(math.log(b2), dtype)))

        def leaf(g, m, v):
            m = b1 * m + (1.0 - b1) * g
            v = b2 * v + (1.0 - b2) * (g * g)
            step = (-learning_rate * root_c2 / c1).astype(g.dtype)
            return step * m / (jnp.sqrt(v) + (eps * root_c2).astype(g.dtype)), m, v

        out = jax.tree.map(leaf, grads, adam_state.mu, adam_state.nu)
        tdef = jax.tree.structure(grads)
        updates, mu, nu = (jax.tree.unflatten(tdef, [o[i] for o in tdef.flatten_up_to(out)]) for i in range(3))
        return updates, (optax.ScaleByAdamState(count=count, mu=mu, nu=nu), empty)

    return optax.GradientTransformation(reference.init, update_fn)
