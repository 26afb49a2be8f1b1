"""A drift distilled by `discover distill` (generated; the program is in the .json beside this file).

drift = min(relu(f), 10000.0 * (r - 1)^2), exactly 0 at r = 1, where

    f = abs(tanh(tanh(tanh(tanh(square(relu((r - 1.0 - clip(r - 1.0, 0.1647)) * A)))))))

Distilled from search_spaces/discovered/talpo_schedule_cartpole_drift.npz (CartPole-v1, 100000 steps). Fit error 0.05569, held-out 0.05724. RL check: 1.073 x PPO (network 1.011).
"""

import jax
import jax.numpy as jnp

TINY = 1e-30
EXP_MAX = 80.0
CAP = 10000.0


def absolute(x):
    return jnp.abs(x)


def clip(x, c):
    c = jnp.abs(c)
    return jnp.clip(x, -c, c)


def mul(x, y):
    return x * y


def relu(x):
    return jnp.maximum(x, 0.0)


def square(x):
    return x * x


def sub(x, y):
    return x - y


def tanh(x):
    return jnp.tanh(x)


def constrain(raw, r, cap):
    """The drift of raw term ``raw(r)``: min(relu(f), cap (r - 1)^2), NaN -> 0, exactly 0 at r = 1, where
    ``raw`` is evaluated at another ratio (2.0) and discarded, so its gradient there is exactly 0 too."""
    at_one = r == 1.0
    r_safe = jnp.where(at_one, 2.0, r)
    f = jnp.broadcast_to(raw(r_safe), jnp.shape(r_safe))
    f = jnp.where(jnp.isnan(f), 0.0, f)
    f = jnp.where(f > 0.0, f, 0.0)
    bound = cap * jnp.square(r_safe - 1.0)
    return jnp.where(at_one, 0.0, jnp.where(f < bound, f, bound))


def raw(r, A, progress, log_n):
    v_d = sub(r, jnp.float32(1.0))
    v__1 = clip(v_d, jnp.float32(0.1647))
    v__2 = sub(v_d, v__1)
    v__3 = mul(v__2, A)
    v_f = relu(v__3)
    v_f = square(v_f)
    v_f = tanh(v_f)
    v_f = tanh(v_f)
    v_f = tanh(v_f)
    v_f = tanh(v_f)
    v_f = absolute(v_f)
    return v_f


def drift(ratio, advantage, progress, log_horizon):
    """The distilled drift (float32, broadcasting): ratio r, advantage A, progress n/N, log10 horizon."""
    r, A, n, h = (jnp.asarray(x, jnp.float32) for x in (ratio, advantage, progress, log_horizon))
    r, A, n, h = jnp.broadcast_arrays(r, A, n, h)
    return constrain(lambda rs: raw(rs, A, n, h), r, jnp.float32(CAP))
