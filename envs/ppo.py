"""A PPO-style trainer in the PureJaxRL manner, with the policy objective supplied as a *drift*.

Mirror learning (Kuba et al. 2022) writes a policy update as maximising ``r*A - drift(r, A)``:
PPO's clipped objective is the special case ``drift = relu((r - clip(r, 1-eps, 1+eps)) * A)``, and LPO /
TA-LPO (Lu et al. 2022, Jackson et al. 2024) learn the drift. ``make_train`` returns a pure, jittable
``train(key, drift_params) -> metrics`` that trains one actor-critic from scratch; ``make_population_train``
vmaps it over population members (drift parameters) and seeds in one call.

Read top to bottom: config -> network -> rollout -> GAE -> loss -> minibatch epochs -> metrics.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any, NamedTuple

import flax.linen as nn
import gymnax
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax.linen.initializers import constant

# A drift maps (params, ratio, advantage, progress n/N, log horizon) to a non-negative penalty of the shape
# of ratio. The trainer never looks inside params; the search space defines them.
DriftFn = Callable[[Any, jax.Array, jax.Array, jax.Array, jax.Array], jax.Array]


# ----------------------------------------------------------------------------------------------------------
# Config
# ----------------------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class PPOConfig:
    """PPO hyperparameters; the defaults are PureJaxRL's CartPole-v1 settings."""

    num_envs: int = dataclasses.field(default=4, metadata={"min": 1, "help": "parallel environments"})
    num_steps: int = dataclasses.field(default=128, metadata={"min": 1, "help": "rollout length per env"})
    total_timesteps: int = dataclasses.field(
        default=500_000, metadata={"min": 1, "help": "environment steps of one training run (the horizon)"}
    )
    update_epochs: int = dataclasses.field(default=4, metadata={"min": 1, "help": "epochs per rollout"})
    num_minibatches: int = dataclasses.field(default=4, metadata={"min": 1, "help": "minibatches per epoch"})
    gamma: float = dataclasses.field(default=0.99, metadata={"min": 0.0, "max": 1.0, "help": "discount"})
    gae_lambda: float = dataclasses.field(
        default=0.95, metadata={"min": 0.0, "max": 1.0, "help": "GAE lambda"}
    )
    value_clip_eps: float = dataclasses.field(
        default=0.2, metadata={"min": 0.0, "help": "PPO-style clipping of the value update"}
    )
    ent_coef: float = dataclasses.field(default=0.01, metadata={"min": 0.0, "help": "entropy bonus"})
    vf_coef: float = dataclasses.field(default=0.5, metadata={"min": 0.0, "help": "value-loss weight"})
    max_grad_norm: float = dataclasses.field(default=0.5, metadata={"min": 0.0, "help": "global-norm clip"})
    lr: float = dataclasses.field(default=2.5e-4, metadata={"min": 0.0, "help": "Adam learning rate"})
    anneal_lr: bool = dataclasses.field(default=True, metadata={"help": "linearly anneal lr to 0"})
    hidden_size: int = dataclasses.field(default=64, metadata={"min": 1, "help": "width of actor and critic"})
    activation: str = dataclasses.field(
        default="tanh", metadata={"choices": ["tanh", "relu"], "help": "hidden activation"}
    )
    final_window: float = dataclasses.field(
        default=0.05,
        metadata={
            "min": 0.0,
            "max": 1.0,
            "help": "fraction of the last updates whose episodes give final_return",
        },
    )


def num_updates(config: PPOConfig) -> int:
    return max(1, config.total_timesteps // (config.num_steps * config.num_envs))


def validate(config: PPOConfig) -> None:
    """Raise ValueError (one line) for settings the trainer cannot run."""
    batch = config.num_envs * config.num_steps
    if batch % config.num_minibatches:
        raise ValueError(
            f"num_envs*num_steps ({batch}) must be divisible by num_minibatches ({config.num_minibatches})"
        )


def log_horizon(config: PPOConfig) -> float:
    """The horizon input TA-LPO may see: log10 of the number of updates of a run."""
    return math.log10(num_updates(config))


# ----------------------------------------------------------------------------------------------------------
# Environment
# ----------------------------------------------------------------------------------------------------------
def make_env(env_name: str):
    """gymnax env and params; observations are flattened to float32 vectors by the trainer."""
    env, env_params = gymnax.make(env_name)
    return env, env_params


# ----------------------------------------------------------------------------------------------------------
# Network
# ----------------------------------------------------------------------------------------------------------
def orthogonal(scale: float = 1.0):
    """Orthogonal initializer (as PureJaxRL's) computed without LAPACK.

    jaxlib 0.10's CPU LAPACK kernels split a batched call over XLA's intra-op thread pool and block until the
    pieces finish; two such calls running at once (the vmapped actor and critic inits) can take every pool
    thread and deadlock: it hung CPU searches here, the main thread waiting and every worker in
    ``jax::ParallelBatchMap`` under ``lapack_sorgqr_ffi``. Gram-Schmidt (twice, for float32 accuracy) on a
    Gaussian matrix gives the Q of its QR with a positive diagonal: the same Haar-random orthogonal matrix.
    """

    def init(key: jax.Array, shape: tuple[int, ...], dtype=jnp.float32) -> jax.Array:
        rows, cols = math.prod(shape[:-1]), shape[-1]
        tall, narrow = max(rows, cols), min(rows, cols)
        gaussian = jax.random.normal(key, (tall, narrow), jnp.float32)

        def add_column(q, j):
            v = gaussian[:, j]
            for _ in range(2):
                v = v - q @ (q.T @ v)  # columns not yet filled are 0 and remove nothing
            return q.at[:, j].set(v / jnp.sqrt(jnp.sum(v * v))), None

        q, _ = jax.lax.scan(add_column, jnp.zeros((tall, narrow), jnp.float32), jnp.arange(narrow))
        q = q if rows >= cols else q.T
        return (scale * q).reshape(shape).astype(dtype)

    return init


class ActorCritic(nn.Module):
    """PureJaxRL's separate actor and critic MLPs (two hidden layers, orthogonal init)."""

    num_actions: int
    hidden_size: int = 64
    activation: str = "tanh"
    obs_ndim: int = 1  # trailing axes of one observation (3 for MinAtar's 10x10xC grids)

    @nn.compact
    def __call__(self, obs: jax.Array) -> tuple[jax.Array, jax.Array]:
        act = nn.relu if self.activation == "relu" else nn.tanh
        x = obs.reshape(obs.shape[: obs.ndim - self.obs_ndim] + (-1,)).astype(jnp.float32)

        def dense(features: int, scale: float) -> nn.Dense:
            return nn.Dense(features, kernel_init=orthogonal(scale), bias_init=constant(0.0))

        logits = act(dense(self.hidden_size, np.sqrt(2))(x))
        logits = act(dense(self.hidden_size, np.sqrt(2))(logits))
        logits = dense(self.num_actions, 0.01)(logits)
        value = act(dense(self.hidden_size, np.sqrt(2))(x))
        value = act(dense(self.hidden_size, np.sqrt(2))(value))
        value = dense(1, 1.0)(value)
        return logits, jnp.squeeze(value, axis=-1)


# ----------------------------------------------------------------------------------------------------------
# Policy objectives
# ----------------------------------------------------------------------------------------------------------
def mirror_policy_loss(ratio: jax.Array, advantage: jax.Array, drift: jax.Array) -> jax.Array:
    """Mirror-learning policy loss ``-(r*A - drift)``, averaged."""
    return -(ratio * advantage - drift).mean()


def clipped_policy_loss(ratio: jax.Array, advantage: jax.Array, clip_eps: float) -> jax.Array:
    """PPO's clipped surrogate, written as PureJaxRL writes it (the plain-PPO reference)."""
    clipped = jnp.clip(ratio, 1.0 - clip_eps, 1.0 + clip_eps) * advantage
    return -jnp.minimum(ratio * advantage, clipped).mean()


# ----------------------------------------------------------------------------------------------------------
# Trainer
# ----------------------------------------------------------------------------------------------------------
class Transition(NamedTuple):
    obs: jax.Array
    action: jax.Array
    log_prob: jax.Array
    value: jax.Array
    reward: jax.Array
    terminated: jax.Array
    done: jax.Array  # terminated or truncated: the episode ends here
    final_obs: jax.Array  # observation after the action, before any auto-reset


def compute_gae(
    traj: Transition, final_values: jax.Array, gamma: float, gae_lambda: float
) -> tuple[jax.Array, jax.Array]:
    """GAE over a rollout (time-major) -> (advantages, value targets).

    ``final_values[t]`` = V(final_obs[t]) bootstraps every step: inside an episode it is V(s_{t+1}); at a time
    limit (truncated) it is the value of the state the episode was cut at. True terminations are cut by
    ``1 - terminated``; the GAE trace stops at any episode end (``done``).
    """

    def backward(carry, xs):
        reward, value, terminated, done, v_next = xs
        delta = reward + gamma * v_next * (1.0 - terminated) - value
        carry = delta + gamma * gae_lambda * (1.0 - done) * carry
        return carry, carry

    xs = (traj.reward, traj.value, traj.terminated, traj.done, final_values)  # not the observations
    _, advantages = jax.lax.scan(backward, jnp.zeros_like(final_values[0]), xs, reverse=True, unroll=16)
    return advantages, advantages + traj.value


class RunnerState(NamedTuple):
    params: Any
    opt_state: Any
    env_state: Any
    obs: jax.Array
    episode_return: jax.Array  # running undiscounted return per env
    key: jax.Array


def final_window_updates(final_window: float, n_updates):
    """How many of the last updates give ``final_return``: ``max(1, round(final_window * n))``, computed in
    float32 so a Python int and a traced ``n`` give the same count."""
    if isinstance(n_updates, int):
        return max(1, int(np.round(np.float32(final_window) * np.float32(n_updates))))
    return jnp.maximum(1, jnp.round(jnp.float32(final_window) * n_updates.astype(jnp.float32)).astype(jnp.int32))


def _final_return(return_sum, episode_count, n_updates, window, running_return):
    """Mean return of the episodes completed in updates [n - window, n); with none, the running returns."""
    index = jnp.arange(return_sum.shape[0])
    inside = (index >= n_updates - window) & (index < n_updates)
    window_sum = jnp.sum(jnp.where(inside, return_sum, 0.0))
    window_count = jnp.sum(jnp.where(inside, episode_count, 0.0))
    return jnp.where(window_count > 0, window_sum / jnp.maximum(window_count, 1.0), running_return.mean())


def make_lifetime_train(
    env_name: str,
    config: PPOConfig,
    drift_fn: DriftFn | None,
    max_updates: int,
    plain_ppo_clip_eps: float = 0.2,
) -> Callable[[jax.Array, Any, Any], dict[str, jax.Array]]:
    """Build ``train(key, drift_params, n_updates) -> metrics`` for one agent whose lifetime is ``n_updates``
    updates (a Python int, or a traced int32 scalar <= ``max_updates``; ``config.total_timesteps`` is not
    read). Array shapes depend on ``max_updates`` only, so one compiled trainer serves every horizon up to it,
    and a call costs what its own ``n_updates`` costs (a while loop under jit; vmapped over members and seeds
    that share ``n_updates``, nothing is padded). Everything that depends on the horizon follows ``n_updates``:
    the lr annealing, the progress input n/N, the log-horizon input log10(N) and the final window.

    ``drift_fn=None`` trains plain PPO with PureJaxRL's clipped surrogate (clip ``plain_ppo_clip_eps``;
    ``drift_params`` is ignored): the reference that the PPO drift must reproduce and the benchmark's baseline.

    metrics: ``return_sum`` and ``episode_count`` per update ``[max_updates]`` (episodes completed in that
    update's rollout; 0 after ``n_updates``), ``final_return`` (mean return of the episodes completed in the
    last ``final_window`` of updates), ``finite`` (whether the final network parameters are all finite) and
    ``param_norm`` (their global L2 norm: a cheap fingerprint of where training ended).
    """
    validate(config)
    env, env_params = make_env(env_name)
    n_actions = env.action_space(env_params).n
    batch_size = config.num_envs * config.num_steps
    minibatch_size = batch_size // config.num_minibatches
    obs_shape = env.observation_space(env_params).shape
    network = ActorCritic(n_actions, config.hidden_size, config.activation, obs_ndim=len(obs_shape))
    step_envs = jax.vmap(env.step, in_axes=(0, 0, 0, None))
    reset_envs = jax.vmap(env.reset, in_axes=(0, None))

    def make_tx(n_updates):
        def lr_schedule(count):
            frac = 1.0 - (count // (config.num_minibatches * config.update_epochs)) / n_updates
            return config.lr * frac

        return optax.chain(
            optax.clip_by_global_norm(config.max_grad_norm),
            optax.adam(lr_schedule if config.anneal_lr else config.lr, eps=1e-5),
        )

    def env_step(runner: RunnerState, _):
        key, k_act, k_step = jax.random.split(runner.key, 3)
        logits, value = network.apply(runner.params, runner.obs)
        action = jax.random.categorical(k_act, logits)
        log_prob = jnp.take_along_axis(jax.nn.log_softmax(logits), action[:, None], axis=-1)[:, 0]
        obs, env_state, reward, terminated, truncated, info = step_envs(
            jax.random.split(k_step, config.num_envs), runner.env_state, action, env_params
        )
        done = jnp.logical_or(terminated, truncated)
        episode_return = runner.episode_return + reward
        transition = Transition(
            runner.obs, action, log_prob, value, reward, terminated, done, info["final_observation"]
        )
        completed = jnp.where(done, episode_return, 0.0)
        runner = runner._replace(
            env_state=env_state, obs=obs, episode_return=jnp.where(done, 0.0, episode_return), key=key
        )
        return runner, (transition, completed)

    def loss_fn(params, drift_params, batch, progress, horizon_input):
        traj, advantage, target = batch
        logits, value = network.apply(params, traj.obs)
        log_probs = jax.nn.log_softmax(logits)
        log_prob = jnp.take_along_axis(log_probs, traj.action[:, None], axis=-1)[:, 0]
        entropy = -(jnp.exp(log_probs) * log_probs).sum(-1).mean()

        value_clipped = traj.value + (value - traj.value).clip(-config.value_clip_eps, config.value_clip_eps)
        value_loss = 0.5 * jnp.maximum(jnp.square(value - target), jnp.square(value_clipped - target)).mean()

        ratio = jnp.exp(log_prob - traj.log_prob)
        advantage = (advantage - advantage.mean()) / (advantage.std() + 1e-8)
        if drift_fn is None:
            policy_loss = clipped_policy_loss(ratio, advantage, plain_ppo_clip_eps)
        else:
            drift = drift_fn(drift_params, ratio, advantage, progress, horizon_input)
            policy_loss = mirror_policy_loss(ratio, advantage, drift)
        return policy_loss + config.vf_coef * value_loss - config.ent_coef * entropy

    grad_fn = jax.grad(loss_fn)

    def train(key: jax.Array, drift_params: Any, n_updates) -> dict[str, jax.Array]:
        tx = make_tx(n_updates)
        if isinstance(n_updates, int):
            horizon_input = jnp.float32(math.log10(n_updates))
        else:
            horizon_input = jnp.log10(n_updates.astype(jnp.float32))
        window = final_window_updates(config.final_window, n_updates)

        def update_minibatch(carry, minibatch):
            params, opt_state, progress = carry
            grads = grad_fn(params, drift_params, minibatch, progress, horizon_input)
            updates, opt_state = tx.update(grads, opt_state, params)
            return (optax.apply_updates(params, updates), opt_state, progress), None

        def update_epoch(carry, key):
            params, opt_state, progress, batch = carry
            permutation = jax.random.permutation(key, batch_size)
            minibatches = jax.tree.map(
                lambda x: jnp.take(x, permutation, axis=0).reshape(
                    (config.num_minibatches, minibatch_size) + x.shape[1:]
                ),
                batch,
            )
            (params, opt_state, _), _ = jax.lax.scan(update_minibatch, (params, opt_state, progress), minibatches)
            return (params, opt_state, progress, batch), None

        def update_step(update_index, carry):
            runner, return_sum, episode_count = carry
            runner, (traj, completed) = jax.lax.scan(env_step, runner, None, config.num_steps)

            # One batched critic pass over all post-step observations (cheaper than one per env step).
            _, final_values = network.apply(runner.params, traj.final_obs)
            advantages, targets = compute_gae(traj, final_values, config.gamma, config.gae_lambda)

            progress = update_index / jnp.maximum(n_updates - 1, 1)  # n/N in [0, 1]
            traj = traj._replace(final_obs=None)  # not needed by the loss: keep it out of the minibatch shuffles
            batch = jax.tree.map(lambda x: x.reshape((batch_size,) + x.shape[2:]), (traj, advantages, targets))
            key, k_epochs = jax.random.split(runner.key)
            (params, opt_state, _, _), _ = jax.lax.scan(
                update_epoch,
                (runner.params, runner.opt_state, progress, batch),
                jax.random.split(k_epochs, config.update_epochs),
            )
            runner = runner._replace(params=params, opt_state=opt_state, key=key)
            return_sum = return_sum.at[update_index].set(completed.sum())
            episode_count = episode_count.at[update_index].set(traj.done.sum().astype(jnp.float32))
            return runner, return_sum, episode_count

        k_net, k_env, k_run = jax.random.split(key, 3)
        init_obs = jnp.zeros((1,) + obs_shape, jnp.float32)
        params = network.init(k_net, init_obs)
        obs, env_state = reset_envs(jax.random.split(k_env, config.num_envs), env_params)
        runner = RunnerState(
            params, tx.init(params), env_state, obs, jnp.zeros(config.num_envs, jnp.float32), k_run
        )
        zeros = jnp.zeros((max_updates,), jnp.float32)
        runner, return_sum, episode_count = jax.lax.fori_loop(0, n_updates, update_step, (runner, zeros, zeros))
        # No episode finished in the window (very long episodes): fall back to the running returns.
        final_return = _final_return(return_sum, episode_count, n_updates, window, runner.episode_return)
        leaves = jax.tree.leaves(runner.params)
        finite = jnp.all(jnp.array([jnp.all(jnp.isfinite(p)) for p in leaves]))
        param_norm = jnp.sqrt(sum(jnp.sum(jnp.square(p)) for p in leaves))
        return {
            "param_norm": param_norm,
            "return_sum": return_sum,
            "episode_count": episode_count,
            "final_return": final_return,
            "finite": finite,
        }

    return train


def make_train(
    env_name: str,
    config: PPOConfig,
    drift_fn: DriftFn | None,
    plain_ppo_clip_eps: float = 0.2,
) -> Callable[[jax.Array, Any], dict[str, jax.Array]]:
    """Build ``train(key, drift_params) -> metrics`` for one agent trained for ``config.total_timesteps``
    (:func:`make_lifetime_train` at the config's own horizon; see it for the metrics)."""
    n_updates = num_updates(config)
    train = make_lifetime_train(env_name, config, drift_fn, n_updates, plain_ppo_clip_eps)
    return lambda key, drift_params: train(key, drift_params, n_updates)


def make_random_policy(env_name: str, config: PPOConfig, max_updates: int) -> Callable[[jax.Array, Any], jax.Array]:
    """Jitted ``run(keys[S], n_updates) -> final_return[S]``: a uniformly random policy stepped exactly as the
    trainer steps its agents (``num_envs`` envs, ``num_steps`` per update, ``n_updates`` updates) and scored the
    same way (the episodes completed in the last ``final_window`` of updates). The floor of the normalization
    ``(R - R_random) / (R_ppo - R_random)``."""
    validate(config)
    env, env_params = make_env(env_name)
    n_actions = env.action_space(env_params).n
    step_envs = jax.vmap(env.step, in_axes=(0, 0, 0, None))
    reset_envs = jax.vmap(env.reset, in_axes=(0, None))

    def env_step(carry, _):
        env_state, episode_return, key = carry
        key, k_act, k_step = jax.random.split(key, 3)
        action = jax.random.randint(k_act, (config.num_envs,), 0, n_actions)
        _, env_state, reward, terminated, truncated, _ = step_envs(
            jax.random.split(k_step, config.num_envs), env_state, action, env_params
        )
        done = jnp.logical_or(terminated, truncated)
        episode_return = episode_return + reward
        completed = jnp.where(done, episode_return, 0.0)
        return (env_state, jnp.where(done, 0.0, episode_return), key), (completed, done)

    def run_one(key, n_updates):
        window = final_window_updates(config.final_window, n_updates)
        k_env, k_run = jax.random.split(key)
        _, env_state = reset_envs(jax.random.split(k_env, config.num_envs), env_params)

        def update(i, carry):
            state, return_sum, episode_count = carry
            state, (completed, done) = jax.lax.scan(env_step, state, None, config.num_steps)
            return_sum = return_sum.at[i].set(completed.sum())
            episode_count = episode_count.at[i].set(done.sum().astype(jnp.float32))
            return state, return_sum, episode_count

        zeros = jnp.zeros((max_updates,), jnp.float32)
        state = (env_state, jnp.zeros(config.num_envs, jnp.float32), k_run)
        state, return_sum, episode_count = jax.lax.fori_loop(0, n_updates, update, (state, zeros, zeros))
        return _final_return(return_sum, episode_count, n_updates, window, state[1])

    return jax.jit(jax.vmap(run_one, in_axes=(0, None)))


def make_population_train(
    env_name: str, config: PPOConfig, drift_fn: DriftFn | None
) -> Callable[[jax.Array, Any], dict[str, jax.Array]]:
    """Jitted ``train(keys[P, S], drift_params[P, ...]) -> metrics[P, S, ...]``: P members x S seeds, one call."""
    train = make_train(env_name, config, drift_fn)
    over_seeds = jax.vmap(train, in_axes=(0, None))
    return jax.jit(jax.vmap(over_seeds, in_axes=(0, 0)))


def make_population_lifetime_train(
    env_name: str, config: PPOConfig, drift_fn: DriftFn | None, max_updates: int
) -> Callable[[jax.Array, Any, jax.Array], dict[str, jax.Array]]:
    """Jitted ``train(keys[P, S], drift_params[P, ...], n_updates) -> metrics[P, S, ...]``: P members x S seeds
    trained for ``n_updates`` updates (<= ``max_updates``) in one call, compiled once for every horizon up to
    ``max_updates`` (:func:`make_lifetime_train`). ``n_updates`` is an int32 scalar, or an int32 ``[P]`` array
    holding the same value for every member (so that it shards with the population); member 0's is used."""
    train = make_lifetime_train(env_name, config, drift_fn, max_updates)
    over_population = jax.vmap(jax.vmap(train, in_axes=(0, None, None)), in_axes=(0, 0, None))

    def population(keys, drift_params, n_updates):
        n_updates = jnp.asarray(n_updates, jnp.int32)
        return over_population(keys, drift_params, n_updates if n_updates.ndim == 0 else n_updates[0])

    return jax.jit(population)


def return_curve(metrics: dict[str, jax.Array]) -> np.ndarray:
    """Mean episodic return per update (averaged over any leading axes), NaN where no episode ended."""
    total = np.asarray(metrics["return_sum"], np.float64)
    count = np.asarray(metrics["episode_count"], np.float64)
    axes = tuple(range(total.ndim - 1))
    total, count = total.sum(axis=axes), count.sum(axis=axes)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / np.maximum(count, 1.0), np.nan)
