"""LSTM and GRU in JAX with torch's parameters, names, layouts and equations.

``LSTM`` and ``GRU`` mirror ``torch.nn.LSTM`` / ``torch.nn.GRU`` with ``batch_first=True``: the
parameters are ``nnx.Param`` attributes named ``weight_ih_l{k}[_reverse]`` ``[gates*H, in]``,
``weight_hh_l{k}[_reverse]`` ``[gates*H, H]``, ``bias_ih_l{k}[_reverse]``, ``bias_hh_l{k}[_reverse]``
``[gates*H]``, gates stacked in torch's order (LSTM i, f, g, o; GRU r, z, n), initialised like
torch (uniform in +-1/sqrt(H)). So ``jaxvae.params.export_params`` gives the torch names as they are.

Equations (torch's)::

    LSTM: i, f, g, o = x W_ih^T + b_ih + h W_hh^T + b_hh     (sigmoid, sigmoid, tanh, sigmoid)
          c' = f * c + i * g;  h' = o * tanh(c')
    GRU:  r = sigmoid(x W_ir^T + b_ir + h W_hr^T + b_hr);  z likewise
          n = tanh(x W_in^T + b_in + r * (h W_hn^T + b_hn));  h' = (1 - z) * n + z * h

Each layer and direction is one ``jax.lax.scan`` over time; the input projection of all time
steps is one matmul before the scan. With ``lengths`` the result equals torch's on a packed
sequence: a sequence's state stops changing after its last valid step (so the final state is
taken at its own length), outputs past the length are 0, and the reverse direction runs over
each sequence's own valid tokens (from position length-1 down to 0).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx

from jaxvae.layers import flat_matmul

GATES = {"lstm": 4, "gru": 3}


def _reverse_index(lengths: jax.Array, T: int) -> jax.Array:
    """[B, T] time index that reverses each row's first lengths[b] steps and keeps the rest."""
    t = jnp.arange(T)[None, :]
    return jnp.where(t < lengths[:, None], lengths[:, None] - 1 - t, t)


def _time_gather(x: jax.Array, index: jax.Array) -> jax.Array:
    """x: [B, T, F], index: [B, T] -> x[b, index[b, t], :]."""
    return jnp.take_along_axis(x, index[:, :, None], axis=1)


class _RNN(nnx.Module):
    mode = ""

    def __init__(
        self, input_size: int, hidden_size: int, num_layers: int = 1, bidirectional: bool = False, *,
        rngs: nnx.Rngs, param_dtype: jnp.dtype = jnp.float32,
    ):
        self.input_size, self.hidden_size = input_size, hidden_size
        self.num_layers, self.bidirectional = num_layers, bidirectional
        G, H = GATES[self.mode], hidden_size
        bound = 1.0 / math.sqrt(H)

        def uniform(shape):
            return nnx.Param(jax.random.uniform(rngs.params(), shape, param_dtype, -bound, bound))

        for layer in range(num_layers):
            in_size = input_size if layer == 0 else H * self.num_directions
            for suffix in self._suffixes():
                setattr(self, f"weight_ih_l{layer}{suffix}", uniform((G * H, in_size)))
                setattr(self, f"weight_hh_l{layer}{suffix}", uniform((G * H, H)))
                setattr(self, f"bias_ih_l{layer}{suffix}", uniform((G * H,)))
                setattr(self, f"bias_hh_l{layer}{suffix}", uniform((G * H,)))

    @property
    def num_directions(self) -> int:
        return 2 if self.bidirectional else 1

    def _suffixes(self) -> tuple[str, ...]:
        return ("", "_reverse") if self.bidirectional else ("",)

    def _weights(self, layer: int, suffix: str):
        return tuple(getattr(self, f"{kind}_l{layer}{suffix}")[...]
                     for kind in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"))

    def _cell(self, xw: jax.Array, state, w_hh_t: jax.Array, b_hh: jax.Array):
        """One step from the projected input xw = x W_ih^T + b_ih: [B, G*H] -> (h', state')."""
        raise NotImplementedError

    def _zero_state(self, B: int, dtype):
        raise NotImplementedError

    def _scan(self, x: jax.Array, mask: jax.Array | None, state, layer: int, suffix: str):
        """One direction of one layer. x: [B, T, in]; mask: [B, T] bool or None -> ([B, T, H], state)."""
        w_ih, w_hh, b_ih, b_hh = self._weights(layer, suffix)
        xw = jnp.swapaxes(flat_matmul(x, w_ih.T) + b_ih, 0, 1)  # [T, B, G*H], time-major for the scan
        w_hh_t = w_hh.T

        if mask is None:

            def step(carry, xw_t):
                h, new = self._cell(xw_t, carry, w_hh_t, b_hh)
                return new, h

            state, out = jax.lax.scan(step, state, xw)
        else:

            def step(carry, inputs):
                xw_t, m_t = inputs
                h, new = self._cell(xw_t, carry, w_hh_t, b_hh)
                m = m_t[:, None]
                new = jax.tree.map(lambda a, b: jnp.where(m, a, b), new, carry)
                return new, jnp.where(m, h, jnp.zeros_like(h))

            state, out = jax.lax.scan(step, state, (xw, jnp.swapaxes(mask, 0, 1)))
        return jnp.swapaxes(out, 0, 1), state

    def __call__(self, x: jax.Array, lengths: jax.Array | None = None, initial_state=None):
        """x: [B, T, input]; lengths: [B] valid steps per row (None: all T are valid);
        initial_state: torch's ``h0`` [layers*dirs, B, H] (GRU) or ``(h0, c0)`` (LSTM), zeros if None.

        Returns (outputs [B, T, dirs*H], final state in the initial state's format), the final state
        of each row taken at its own length."""
        B, T, _ = x.shape
        D = self.num_directions
        if initial_state is None:
            initial_state = self._zero_state(self.num_layers * D, B, x.dtype)
        mask = rev = None
        if lengths is not None:
            mask = jnp.arange(T)[None, :] < lengths[:, None]
            if self.bidirectional:
                rev = _reverse_index(lengths, T)
        elif self.bidirectional:
            rev = jnp.broadcast_to(jnp.arange(T)[::-1][None, :], (B, T))
        finals = []
        for layer in range(self.num_layers):
            outs = []
            for d, suffix in enumerate(self._suffixes()):
                idx = layer * D + d
                state0 = jax.tree.map(lambda s, i=idx: s[i], initial_state)
                if suffix:
                    out, state = self._scan(_time_gather(x, rev), mask, state0, layer, suffix)
                    out = _time_gather(out, rev)
                else:
                    out, state = self._scan(x, mask, state0, layer, suffix)
                outs.append(out)
                finals.append(state)
            x = jnp.concatenate(outs, axis=-1) if D == 2 else outs[0]
        final = jax.tree.map(lambda *s: jnp.stack(s), *finals)
        return x, final

    def step(self, x_t: jax.Array, state):
        """One time step of a unidirectional stack: x_t [B, input] -> (output [B, H], state)."""
        if self.bidirectional:
            raise ValueError("step() needs a unidirectional RNN")
        finals = []
        for layer in range(self.num_layers):
            w_ih, w_hh, b_ih, b_hh = self._weights(layer, "")
            s = jax.tree.map(lambda a, i=layer: a[i], state)
            x_t, new = self._cell(x_t @ w_ih.T + b_ih, s, w_hh.T, b_hh)
            finals.append(new)
        return x_t, jax.tree.map(lambda *s: jnp.stack(s), *finals)


class LSTM(_RNN):
    """torch.nn.LSTM(input_size, hidden_size, num_layers, batch_first=True, bidirectional) in JAX."""

    mode = "lstm"

    def _cell(self, xw, state, w_hh_t, b_hh):
        h, c = state
        i, f, g, o = jnp.split(xw + (h @ w_hh_t + b_hh), 4, axis=-1)
        c = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
        h = jax.nn.sigmoid(o) * jnp.tanh(c)
        return h, (h, c)

    def _zero_state(self, n, B, dtype):
        z = jnp.zeros((n, B, self.hidden_size), dtype)
        return (z, z)


class GRU(_RNN):
    """torch.nn.GRU(input_size, hidden_size, num_layers, batch_first=True, bidirectional) in JAX."""

    mode = "gru"

    def _cell(self, xw, h, w_hh_t, b_hh):
        x_r, x_z, x_n = jnp.split(xw, 3, axis=-1)
        h_r, h_z, h_n = jnp.split(h @ w_hh_t + b_hh, 3, axis=-1)
        r = jax.nn.sigmoid(x_r + h_r)
        z = jax.nn.sigmoid(x_z + h_z)
        n = jnp.tanh(x_n + r * h_n)
        h = (1.0 - z) * n + z * h
        return h, h

    def _zero_state(self, n, B, dtype):
        return jnp.zeros((n, B, self.hidden_size), dtype)


def make_rnn(mode: str, *args, **kwargs) -> _RNN:
    """``LSTM`` or ``GRU`` by name ("lstm" | "gru")."""
    return {"lstm": LSTM, "gru": GRU}[mode](*args, **kwargs)
