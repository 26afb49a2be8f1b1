"""A drift distilled by `discover distill` (generated; the program is in the .json beside this file).

drift = min(relu(f), 10000.0 * (r - 1)^2), exactly 0 at r = 1, where

    f = abs((relu((max(0.8781, r) - 1.0) * (-0.275 + -0.1671 * A + 0.6612 * progress + 0.2461 * A * progress) - 0.0001) + (r - 1.0 - clip(r - 1.0, 0.2009)) * A) * exp(0.2461 * A * progress))

Distilled from search_spaces/discovered/talpo_cartpole_drift.npz (CartPole-v1, 100000 steps). Fit error 0.1199, held-out 0.1078. RL check: 1.095 x PPO (network 1.009).
"""

import jax
import jax.numpy as jnp

TINY = 1e-30
EXP_MAX = 80.0
CAP = 10000.0


def absolute(x):
    return jnp.abs(x)


def add(x, y):
    return x + y


def clip(x, c):
    c = jnp.abs(c)
    return jnp.clip(x, -c, c)


def exp(x):
    return jnp.exp(jnp.minimum(x, EXP_MAX))


def maximum(x, y):
    return jnp.maximum(x, y)


def mul(x, y):
    return x * y


def relu(x):
    return jnp.maximum(x, 0.0)


def sub(x, y):
    return x - y


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
    v__1 = mul(jnp.float32(-0.1671), A)
    v__2 = add(jnp.float32(-0.275), v__1)
    v__1 = maximum(jnp.float32(0.8781), r)
    v__3 = mul(jnp.float32(0.6612), progress)
    v__4 = add(v__2, v__3)
    v__5 = mul(jnp.float32(0.2461), A)
    v__6 = mul(v__5, progress)
    v_L = add(v__4, v__6)
    v__7 = sub(v__1, jnp.float32(1.0))
    v__8 = mul(v__7, v_L)
    v_x0 = exp(v__6)
    v__9 = sub(v__8, jnp.float32(0.0001))
    v_t = relu(v__9)
    v_d = sub(r, jnp.float32(1.0))
    v__10 = clip(v_d, jnp.float32(0.2009))
    v__11 = sub(v_d, v__10)
    v__12 = mul(v__11, A)
    v_f = add(v_t, v__12)
    v_f = mul(v_f, v_x0)
    v_f = absolute(v_f)
    return v_f


def drift(ratio, advantage, progress, log_horizon):
    """The distilled drift (float32, broadcasting): ratio r, advantage A, progress n/N, log10 horizon."""
    r, A, n, h = (jnp.asarray(x, jnp.float32) for x in (ratio, advantage, progress, log_horizon))
    r, A, n, h = jnp.broadcast_arrays(r, A, n, h)
    return constrain(lambda rs: raw(rs, A, n, h), r, jnp.float32(CAP))
