"""RL-objective search: evolution strategies over a drift network (LPO / TA-LPO).

One generation: the ES proposes ``popsize`` drift-parameter vectors; every one of them, and the ES mean as one
extra row, trains PPO-style agents from scratch (``envs.ppo``, all rows x seeds in one jitted call, the same
training seeds for every row); a row's score is its mean final return normalized by PPO's on the same env and
horizon (``envs.rl_envs.normalize_return``: PPO = 1); fitness = -score (the engine minimizes), a row whose
training produced NaN/inf gets fitness +inf and is counted.

Outputs in the run directory: ``baselines.json`` (PPO and DPO on this env and horizon), ``best_drift.npz`` and
``final_drift.npz`` (drift parameters with their config as JSON; no pickle), ``drift.png``, ``results.json``,
TensorBoard events (ES statistics, return curves, pictures of the drift over (r, A) at n/N = 0, 0.5, 1 next to
PPO's and DPO's) and orbax checkpoints of the whole search state (resume is exact).

After the last generation the final ES mean and the best-scoring mean are re-evaluated on fresh seeds (one
more population-sized call); the better of the two becomes ``best_drift.npz`` and its score is reported.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import inspect
import json
import math
import pathlib
import time
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from discover.infra.checkpointing import Checkpointer, GracefulExit
from discover.infra.config import config_to_dict, dump_config, flat_config
from discover.infra.rundir import RunDir, TBLogger
from discover.infra.sharding import DistributedSection, check_devices, population_mesh, sharded
from envs import rl_envs
from envs.ppo import PPOConfig, log_horizon, make_population_train, return_curve, validate
from search_spaces.drift import DriftConfig, DriftFamily, drift_surface, make_drift, switch_drift

# Training seeds of the PPO/DPO normalizer: fixed, so one cache entry serves every run of an env + PPO config.
BASELINE_SEED = 20240601
BASELINE_VERSION = 2  # bump when the trainer changes what a return means
FINAL_EVAL_SALT = 1_000_003  # folds the run seed into fresh seeds for the final re-evaluation


# ----------------------------------------------------------------------------------------------------------
# Config schema
# ----------------------------------------------------------------------------------------------------------
def _es_strategies() -> list[str]:
    from evosax.algorithms import distribution_based_algorithms

    return sorted(distribution_based_algorithms)


@dataclasses.dataclass(frozen=True)
class EnvSection:
    name: str = dataclasses.field(
        default="CartPole-v1", metadata={"choices": list(rl_envs.ENV_NAMES), "help": "meta-training env"}
    )


@dataclasses.dataclass(frozen=True)
class ESSection:
    strategy: str = dataclasses.field(
        default="Open_ES",
        metadata={"choices": _es_strategies(), "help": "evosax distribution-based strategy"},
    )
    popsize: int = dataclasses.field(
        default=64, metadata={"min": 2, "help": "drift candidates per generation"}
    )
    sigma: float = dataclasses.field(default=0.03, metadata={"min": 0.0, "help": "perturbation std"})
    lr: float = dataclasses.field(default=0.03, metadata={"min": 0.0, "help": "Adam lr on the ES mean"})
    antithetic: bool = dataclasses.field(default=True, metadata={"help": "mirrored perturbations"})
    rank_shaping: bool = dataclasses.field(default=True, metadata={"help": "centered-rank fitness shaping"})
    generations: int = dataclasses.field(default=256, metadata={"min": 1, "help": "ES generations"})
    seeds_per_member: int = dataclasses.field(
        default=1, metadata={"min": 1, "help": "training seeds averaged per candidate"}
    )

    def __post_init__(self) -> None:
        if self.antithetic and self.popsize % 2:
            raise ValueError(f"popsize must be even with antithetic sampling, got {self.popsize}")


@dataclasses.dataclass(frozen=True)
class FitnessSection:
    baseline_seeds: int = dataclasses.field(
        default=16, metadata={"min": 1, "help": "PPO (and DPO) seeds for the normalizer"}
    )
    cache_dir: str | None = dataclasses.field(
        default=None, metadata={"help": "where baseline returns are cached; null = <run root>/.rl_baselines"}
    )
    final_eval_rows: int | None = dataclasses.field(
        default=None,
        metadata={
            "min": 2,
            "help": "rows of the final re-evaluation of best/final drift; null = popsize + 1",
        },
    )


@dataclasses.dataclass(frozen=True)
class LogSection:
    plot_every: int = dataclasses.field(
        default=10, metadata={"min": 1, "help": "generations between drift pictures / return curves"}
    )


@dataclasses.dataclass(frozen=True)
class CheckpointSection:
    every: int = dataclasses.field(default=5, metadata={"min": 1, "help": "generations between checkpoints"})
    max_to_keep: int = dataclasses.field(default=3, metadata={"min": 1, "help": "checkpoints kept"})


@dataclasses.dataclass(frozen=True)
class RLSearchConfig:
    kind: str = dataclasses.field(default="rl_objective", metadata={"choices": ["rl_objective"]})
    name: str = dataclasses.field(default="talpo", metadata={"help": "run name (run directory prefix)"})
    seed: int = dataclasses.field(default=0, metadata={"min": 0, "help": "seed of the whole search"})
    env: EnvSection = dataclasses.field(default_factory=EnvSection)
    ppo: rl_envs.PPOSettings = dataclasses.field(
        default_factory=rl_envs.PPOSettings,
        metadata={"help": "inner-loop PPO settings; a null field takes the env's PureJaxRL default"},
    )
    drift: DriftConfig = dataclasses.field(default_factory=DriftConfig)
    es: ESSection = dataclasses.field(default_factory=ESSection)
    fitness: FitnessSection = dataclasses.field(default_factory=FitnessSection)
    log: LogSection = dataclasses.field(default_factory=LogSection)
    checkpoint: CheckpointSection = dataclasses.field(default_factory=CheckpointSection)
    devices: Any = dataclasses.field(
        default="all", metadata={"help": "devices the population is sharded over: all or a number"})
    distributed: DistributedSection = dataclasses.field(default_factory=DistributedSection)

    def __post_init__(self) -> None:
        check_devices(self.devices)
        if self.drift.family not in ("lpo", "talpo"):
            raise ValueError(
                f"drift.family must be a learned family (lpo or talpo) to search, got {self.drift.family!r}"
            )
        validate(self.ppo_config)

    @property
    def ppo_config(self) -> PPOConfig:
        return rl_envs.ppo_config(self.env.name, self.ppo)


# ----------------------------------------------------------------------------------------------------------
# Pieces that compile once per (env, PPO config, drift config) in a process
# ----------------------------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=16)
def population_trainer(env_name: str, ppo: PPOConfig, drift: DriftConfig):
    """Jitted ``train(keys[R, S], drift_params[R, ...])`` for one drift family (cached: tests share compiles)."""
    return make_population_train(env_name, ppo, make_drift(drift).apply)


@functools.lru_cache(maxsize=16)
def baseline_trainer(env_name: str, ppo: PPOConfig, drift: DriftConfig):
    """Jitted trainer over PPO and DPO drifts (row 0: PPO, row 1: DPO) in one call."""
    ppo_fn = make_drift(dataclasses.replace(drift, family="ppo")).apply
    dpo_fn = make_drift(dataclasses.replace(drift, family="dpo")).apply
    return make_population_train(env_name, ppo, switch_drift([ppo_fn, dpo_fn]))


def make_strategy(es: ESSection, template: Any):
    """An evosax distribution-based strategy by name; Open_ES gets antithetic sampling, centered ranks,
    Adam(lr) and a constant std schedule (sigma). Other strategies get those arguments where they take them."""
    from evosax.algorithms import distribution_based_algorithms
    from evosax.core.fitness_shaping import centered_rank_fitness_shaping_fn, identity_fitness_shaping_fn

    cls = distribution_based_algorithms[es.strategy]
    accepted = inspect.signature(cls.__init__).parameters
    offered = {
        "optimizer": optax.adam(es.lr),
        "std_schedule": optax.constant_schedule(es.sigma),
        "use_antithetic_sampling": es.antithetic,
        "fitness_shaping_fn": centered_rank_fitness_shaping_fn
        if es.rank_shaping
        else identity_fitness_shaping_fn,
    }
    kwargs = {k: v for k, v in offered.items() if k in accepted}
    return cls(population_size=es.popsize, solution=template, **kwargs)


# ----------------------------------------------------------------------------------------------------------
# The PPO / DPO normalizer (computed once per env, horizon and PPO config; cached on disk)
# ----------------------------------------------------------------------------------------------------------
def baseline_cache_key(env_name: str, ppo: PPOConfig, drift: DriftConfig, seeds: int) -> str:
    identity = {
        "version": BASELINE_VERSION,
        "env": env_name,
        "ppo": dataclasses.asdict(ppo),
        "ppo_clip": drift.ppo_clip,
        "dpo": [drift.dpo_alpha, drift.dpo_beta],
        "seeds": seeds,
        "seed": BASELINE_SEED,
        "backend": jax.default_backend(),
    }
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:20]


def compute_baselines(env_name: str, ppo: PPOConfig, drift: DriftConfig, seeds: int) -> dict:
    """PPO's and DPO's final returns (per seed) and return curves on this env and horizon."""
    train = baseline_trainer(env_name, ppo, drift)
    keys = jnp.broadcast_to(jax.random.split(jax.random.PRNGKey(BASELINE_SEED), seeds), (2, seeds, 2))
    metrics = jax.device_get(train(keys, (jnp.arange(2), ({}, {}))))
    out = {}
    for row, name in enumerate(("ppo", "dpo")):
        finals = np.asarray(metrics["final_return"][row], np.float64)
        out[name] = {
            "final_returns": finals.tolist(),
            "mean": float(finals.mean()),
            "stderr": float(finals.std(ddof=1) / math.sqrt(seeds)) if seeds > 1 else 0.0,
            "curve": [
                None if not np.isfinite(v) else float(v)
                for v in return_curve({k: metrics[k][row] for k in ("return_sum", "episode_count")})
            ],
        }
    return out


def load_or_compute_baselines(config: RLSearchConfig, run_dir: RunDir) -> dict:
    """The run's baselines: from the run dir (resume), else the shared cache, else computed (and cached)."""
    if run_dir.file("baselines.json").is_file():
        return run_dir.read_json("baselines.json")
    ppo = config.ppo_config
    key = baseline_cache_key(config.env.name, ppo, config.drift, config.fitness.baseline_seeds)
    cache_dir = (
        pathlib.Path(config.fitness.cache_dir)
        if config.fitness.cache_dir
        else run_dir.path.parent / ".rl_baselines"
    )
    cache_file = cache_dir / f"{key}.json"
    baselines = None
    if cache_file.is_file():
        try:
            baselines = json.loads(cache_file.read_text())
        except (OSError, ValueError):
            baselines = None  # a damaged cache entry is recomputed
    if baselines is None:
        baselines = compute_baselines(config.env.name, ppo, config.drift, config.fitness.baseline_seeds)
        baselines.update(env=config.env.name, total_timesteps=ppo.total_timesteps, cache_key=key)
        RunDir(cache_dir).write_json(cache_file.name, baselines)
    run_dir.write_json("baselines.json", baselines)
    return baselines


# ----------------------------------------------------------------------------------------------------------
# Search state (everything a resume needs; arrays only)
# ----------------------------------------------------------------------------------------------------------
HISTORY_FIELDS = ("mean_drift", "member_best", "member_mean", "member_median", "failures")


class SearchState(NamedTuple):
    es_state: Any
    key: jax.Array
    generation: jax.Array  # generations completed
    best_score: jax.Array  # best normalized return of the ES mean so far
    best_mean: jax.Array  # flat drift parameters of that mean
    best_generation: jax.Array
    history: dict  # field -> [generations] per-generation statistics (NaN until filled)


def _as_arrays(tree: Any) -> Any:
    """Every leaf a strongly typed array, so the state's types never change between generations or across a
    checkpoint restore (weak types would recompile the generation)."""
    return jax.tree.map(lambda x: jnp.array(x, dtype=jnp.asarray(x).dtype), tree)


def init_search_state(config: RLSearchConfig, strategy, family: DriftFamily) -> SearchState:
    key = jax.random.PRNGKey(config.seed)
    key, k_init, k_es = jax.random.split(key, 3)
    mean = family.init(k_init)
    es_state = _as_arrays(strategy.init(k_es, mean, strategy.default_params))
    flat = es_state.mean
    generations = config.es.generations
    return _as_arrays(
        SearchState(
            es_state=es_state,
            key=key,
            generation=jnp.asarray(0, jnp.int32),
            best_score=jnp.asarray(-jnp.inf, jnp.float32),
            best_mean=flat,
            best_generation=jnp.asarray(-1, jnp.int32),
            history={name: jnp.full((generations,), jnp.nan, jnp.float32) for name in HISTORY_FIELDS},
        )
    )


def _stack_rows(population: Any, extra: Any) -> Any:
    return jax.tree.map(lambda p, e: jnp.concatenate([p, e[None]], axis=0), population, extra)


def propose(state: SearchState, ctx: SearchContext):
    """Ask the ES for a population; rows = population + the ES mean; training keys shared by all rows."""
    key, k_ask, k_train, k_tell = jax.random.split(state.key, 4)
    population, es_state = ctx.strategy.ask(k_ask, state.es_state, ctx.strategy.default_params)
    rows = _stack_rows(population, ctx.strategy.get_mean(es_state))
    seeds = jax.random.split(k_train, ctx.config.es.seeds_per_member)
    keys = jnp.broadcast_to(seeds, (ctx.rows,) + seeds.shape)  # common random numbers across rows
    return population, es_state, rows, keys, (key, k_tell)


def conclude(
    state: SearchState, ctx: SearchContext, population, es_state, metrics, keys
) -> tuple[SearchState, dict]:
    """Score the rows, tell the ES (fitness = -normalized return), update best/history."""
    key, k_tell = keys
    final = jnp.mean(metrics["final_return"], axis=1)
    ok = jnp.all(metrics["finite"], axis=1) & jnp.isfinite(final)
    score = jnp.where(ok, ctx.normalize(final), -jnp.inf)
    fitness = -score[:-1]  # the engine minimizes; failures get +inf
    evaluated_mean = es_state.mean  # flat; the mean this population was drawn around
    es_state, _ = ctx.strategy.tell(k_tell, population, fitness, es_state, ctx.strategy.default_params)

    g = state.generation
    member = score[:-1]
    finite_member = jnp.where(jnp.isfinite(member), member, jnp.nan)
    stats = {
        "mean_drift": score[-1],
        "member_best": jnp.max(member),
        "member_mean": jnp.nanmean(finite_member),
        "member_median": jnp.nanmedian(finite_member),
        "failures": jnp.sum(~ok[:-1]).astype(jnp.float32),
    }
    improved = score[-1] > state.best_score
    new_state = _as_arrays(
        SearchState(
            es_state=es_state,
            key=key,
            generation=g + 1,
            best_score=jnp.where(improved, score[-1], state.best_score).astype(jnp.float32),
            best_mean=jnp.where(improved, evaluated_mean, state.best_mean),
            best_generation=jnp.where(improved, g, state.best_generation),
            history={k: v.at[g].set(stats[k]) for k, v in state.history.items()},
        )
    )
    curve_of_mean = {k: metrics[k][-1] for k in ("return_sum", "episode_count")}
    return new_state, {**stats, "scores": member, "mean_row": curve_of_mean}


def run_generation(state: SearchState, ctx: SearchContext) -> tuple[SearchState, dict]:
    """One ES generation, a pure function of ``state``: propose, train every row x seed in one call, conclude.
    The trainer is its own compiled function (shared with the final evaluation)."""
    population, es_state, rows, train_keys, keys = ctx.propose_fn(state)
    metrics = ctx.train(train_keys, rows)
    return ctx.conclude_fn(state, population, es_state, metrics, keys)


@dataclasses.dataclass
class SearchContext:
    config: RLSearchConfig
    family: DriftFamily
    strategy: Any
    train: Any
    rows: int
    ppo_return: float
    return_floor: float

    def normalize(self, returns):
        return rl_envs.normalize_return(returns, self.ppo_return, self.return_floor)

    @functools.cached_property
    def propose_fn(self):
        return jax.jit(lambda state: propose(state, self))

    @functools.cached_property
    def conclude_fn(self):
        return jax.jit(lambda *args: conclude(args[0], self, *args[1:]))


# ----------------------------------------------------------------------------------------------------------
# Saving / loading drifts (npz with JSON metadata; never pickle)
# ----------------------------------------------------------------------------------------------------------
def _path_name(path) -> str:
    return "/".join(str(getattr(p, "key", getattr(p, "idx", p))) for p in path)


def save_drift(path: str | pathlib.Path, params: Any, meta: dict) -> pathlib.Path:
    """Writes drift parameters as ``param:<tree path>`` arrays plus ``meta`` (JSON text) into one npz."""
    import io

    from discover.infra.rundir import atomic_write_bytes

    arrays = {
        f"param:{_path_name(p)}": np.asarray(v) for p, v in jax.tree_util.tree_flatten_with_path(params)[0]
    }
    buffer = io.BytesIO()
    np.savez(buffer, __meta__=np.array(json.dumps(meta)), **arrays)
    atomic_write_bytes(path, buffer.getvalue())
    return pathlib.Path(path)


def load_drift(path: str | pathlib.Path) -> tuple[DriftFamily, Any, dict]:
    """``(family, params, meta)`` of a drift saved by :func:`save_drift`; ValueError (one line) if unreadable."""
    try:
        with np.load(path, allow_pickle=False) as data:
            meta = json.loads(str(data["__meta__"]))
            arrays = {k[len("param:") :]: data[k] for k in data.files if k.startswith("param:")}
    except (OSError, KeyError, ValueError) as exc:
        raise ValueError(f"{path}: not a saved drift ({type(exc).__name__}: {exc})") from None
    family = make_drift(DriftConfig(**meta["drift"]))
    template = family.init(jax.random.PRNGKey(0))
    leaves = []
    for p, leaf in jax.tree_util.tree_flatten_with_path(template)[0]:
        name = _path_name(p)
        if name not in arrays or arrays[name].shape != leaf.shape:
            raise ValueError(
                f"{path}: parameter {name} missing or of the wrong shape for drift {meta['drift']}"
            )
        leaves.append(jnp.asarray(arrays[name]))
    params = jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(template), leaves)
    return family, params, meta


# ----------------------------------------------------------------------------------------------------------
# Pictures
# ----------------------------------------------------------------------------------------------------------
RATIO_RANGE = (0.5, 1.5)
ADVANTAGE_RANGE = (-2.0, 2.0)


@functools.lru_cache(maxsize=32)
def _surface_fn(drift: DriftConfig):
    """Jitted ``(params, progress, log_horizon) -> drift on the picture grid`` (compiled once per family)."""
    family = make_drift(drift)
    ratios = jnp.linspace(*RATIO_RANGE, 101)
    advantages = jnp.linspace(*ADVANTAGE_RANGE, 81)
    return jax.jit(
        lambda params, progress, horizon: drift_surface(family, params, ratios, advantages, progress, horizon)
    )


def drift_figure(family: DriftFamily, params: Any, horizon: float, title: str = "learned drift"):
    """Heatmaps of the drift over (r, A): the learned one at n/N = 0, 0.5, 1, then PPO's and DPO's."""
    from matplotlib.figure import Figure

    panels = [(f"{title}, n/N={p:g}", family.config, params, p) for p in (0.0, 0.5, 1.0)]
    for name in ("ppo", "dpo"):
        panels.append(
            (
                f"{name.upper()} drift",
                dataclasses.replace(family.config, family=name, ppo_init=False),
                {},
                0.0,
            )
        )
    fig = Figure(figsize=(4.0 * len(panels), 3.4))
    fig.subplots_adjust(left=0.04, right=0.98, bottom=0.16, top=0.88, wspace=0.35)
    for i, (label, drift_config, prm, progress) in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), i + 1)
        surface = np.asarray(_surface_fn(drift_config)(prm, jnp.float32(progress), jnp.float32(horizon)))
        image = ax.imshow(
            surface,
            origin="lower",
            aspect="auto",
            cmap="viridis",
            extent=(*RATIO_RANGE, *ADVANTAGE_RANGE),
        )
        ax.set_title(label, fontsize=9)
        ax.set_xlabel("ratio r")
        ax.set_ylabel("advantage A")
        fig.colorbar(image, ax=ax)
    return fig


def curves_figure(curves: dict[str, np.ndarray], steps_per_update: int, title: str):
    """Mean episodic return against environment steps, one line per label."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 4))
    fig.subplots_adjust(left=0.13, right=0.97, bottom=0.13, top=0.9)
    ax = fig.add_subplot(1, 1, 1)
    for label, curve in curves.items():
        curve = np.asarray(curve, np.float64)
        x = (np.arange(len(curve)) + 1) * steps_per_update
        ax.plot(x[np.isfinite(curve)], curve[np.isfinite(curve)], label=label)
    ax.set_xlabel("environment steps")
    ax.set_ylabel("episodic return")
    ax.set_title(title, fontsize=10)
    ax.legend()
    return fig


# ----------------------------------------------------------------------------------------------------------
# Entry point
# ----------------------------------------------------------------------------------------------------------
def _state_template(config: RLSearchConfig, strategy, family: DriftFamily) -> SearchState:
    return jax.eval_shape(lambda: init_search_state(config, strategy, family))


def _drift_meta(config: RLSearchConfig, **extra) -> dict:
    return {
        "kind": "rl_drift",
        "drift": dataclasses.asdict(config.drift),
        "env": config.env.name,
        "ppo": dataclasses.asdict(config.ppo_config),
        **extra,
    }


def _final_evaluation(state: SearchState, ctx: SearchContext) -> dict:
    """Re-evaluates the final ES mean and the best-scoring mean on fresh seeds, reusing the compiled trainer:
    the first half of the rows trains the final mean, the rest the best one, each row on its own seeds."""
    strategy = ctx.strategy
    final_params = strategy.get_mean(state.es_state)
    best_params = strategy._unravel_solution(state.best_mean)
    half = (ctx.rows + 1) // 2
    pick = jnp.arange(ctx.rows) >= half
    rows = jax.tree.map(
        lambda f, b: jnp.where(pick.reshape((-1,) + (1,) * f.ndim), b[None], f[None]),
        final_params,
        best_params,
    )
    eval_key = jax.random.fold_in(jax.random.PRNGKey(ctx.config.seed), FINAL_EVAL_SALT)
    keys = jax.random.split(eval_key, ctx.rows * ctx.config.es.seeds_per_member)
    keys = keys.reshape((ctx.rows, ctx.config.es.seeds_per_member) + keys.shape[1:])
    metrics = jax.device_get(ctx.train(keys, rows))
    finals = np.asarray(metrics["final_return"], np.float64)
    finite = np.asarray(metrics["finite"]).all(axis=1)
    per_row = np.where(finite, np.asarray(ctx.normalize(finals.mean(axis=1))), -np.inf)
    out = {}
    for name, sel in (("final", ~np.asarray(pick)), ("best", np.asarray(pick))):
        vals = per_row[sel]
        out[name] = {
            "normalized_return": float(vals.mean()),
            "stderr": float(vals.std(ddof=1) / math.sqrt(len(vals)))
            if len(vals) > 1 and np.isfinite(vals).all()
            else 0.0,
            "runs": int(sel.sum() * ctx.config.es.seeds_per_member),
            "curve": return_curve({k: metrics[k][sel] for k in ("return_sum", "episode_count")}),
        }
    out["params"] = {"final": final_params, "best": best_params}
    return out


def run_rl_search(config: RLSearchConfig, run_dir: RunDir, resume: bool = False, progress=None) -> dict:
    """Runs (or resumes) the ES search; writes drifts, results.json, TensorBoard and checkpoints into run_dir.

    Returns a summary dict. Stops early (after checkpointing) on SIGINT/SIGTERM; ``summary["interrupted"]``.
    """
    started = time.time()
    ppo = config.ppo_config
    env_spec = rl_envs.spec(config.env.name)
    family = make_drift(config.drift)
    strategy = make_strategy(config.es, family.init(jax.random.PRNGKey(0)))
    baseline_task = progress.add_task("PPO/DPO normalizer", total=None) if progress is not None else None
    baselines = load_or_compute_baselines(config, run_dir)
    if progress is not None:
        progress.update(baseline_task, total=1, completed=1)
    rows = config.es.popsize + 1
    ctx = SearchContext(
        config=config,
        family=family,
        strategy=strategy,
        train=sharded(population_trainer(config.env.name, ppo, config.drift), population_mesh(config.devices)),
        rows=rows,
        ppo_return=baselines["ppo"]["mean"],
        return_floor=env_spec.return_floor,
    )
    horizon = log_horizon(ppo)
    steps_per_update = ppo.num_envs * ppo.num_steps
    generations = config.es.generations

    checkpointer = Checkpointer(run_dir.checkpoint_dir, max_to_keep=config.checkpoint.max_to_keep)
    state = None
    if resume and checkpointer.latest_step() is not None:
        _, state, _ = checkpointer.restore(_state_template(config, strategy, family))
    resumed_from = int(state.generation) if state is not None else None
    if state is None:
        state = init_search_state(config, strategy, family)

    tb = TBLogger(run_dir)
    dpo_score = float(ctx.normalize(baselines["dpo"]["mean"]))
    if resumed_from is None:
        tb.text("config", "```yaml\n" + dump_config(config) + "```", 0)
        tb.scalars(
            0, {"baseline/ppo_return": baselines["ppo"]["mean"], "baseline/dpo_normalized_return": dpo_score}
        )
        for name in ("ppo", "dpo"):
            for u, value in enumerate(baselines[name]["curve"]):
                if value is not None:
                    tb.scalars((u + 1) * steps_per_update, {f"baseline_curve/{name}_return": value})
        tb.figure(
            "drift/initial",
            drift_figure(family, strategy.get_mean(state.es_state), horizon, "initial"),
            0,
            close=False,
        )

    task = None
    if progress is not None:
        task = progress.add_task(
            f"RL search {config.env.name}", total=generations, completed=int(state.generation)
        )

    interrupted = False
    with GracefulExit(notice=False) as stop:
        while int(state.generation) < generations:
            t0 = time.time()
            state, info = run_generation(state, ctx)
            info = jax.device_get(info)
            g = int(state.generation)
            seconds = time.time() - t0
            es_state = state.es_state
            std = np.asarray(getattr(es_state, "std", np.nan))
            tb.scalars(
                g,
                {
                    "es/normalized_return_mean_drift": info["mean_drift"],
                    "es/normalized_return_best_member": info["member_best"],
                    "es/normalized_return_member_mean": info["member_mean"],
                    "es/best_mean_drift_so_far": state.best_score,
                    "es/failures": info["failures"],
                    "es/sigma": float(np.mean(std)),
                    "es/mean_norm": float(jnp.linalg.norm(es_state.mean)),
                    "time/generation_s": seconds,
                    "time/env_steps_per_s": rows
                    * config.es.seeds_per_member
                    * ppo.total_timesteps
                    / max(seconds, 1e-9),
                },
            )
            tb.histogram("es/member_normalized_return", info["scores"], g)
            if g % config.log.plot_every == 0 or g == generations:
                mean_params = strategy.get_mean(es_state)
                tb.figure(
                    "drift/learned_vs_ppo_dpo",
                    drift_figure(family, mean_params, horizon, f"gen {g}"),
                    g,
                    close=False,
                )
                curves = {
                    "ES mean drift": return_curve(info["mean_row"]),
                    "PPO": np.array(baselines["ppo"]["curve"], np.float64),
                    "DPO": np.array(baselines["dpo"]["curve"], np.float64),
                }
                tb.figure(
                    "returns/curves",
                    curves_figure(curves, steps_per_update, f"{config.env.name}, gen {g}"),
                    g,
                    close=False,
                )
            if progress is not None:
                progress.update(
                    task,
                    advance=1,
                    description=f"RL search {config.env.name}: mean drift {float(info['mean_drift']):.3f} x PPO",
                )
            if g % config.checkpoint.every == 0 or g == generations or stop.requested:
                checkpointer.save(g, state, {"generation": g})
            if stop.requested and g < generations:
                interrupted = True
                break
    checkpointer.wait()
    checkpointer.close()

    summary = {
        "env": config.env.name,
        "total_timesteps": ppo.total_timesteps,
        "generations_done": int(state.generation),
        "generations": generations,
        "ppo_return": baselines["ppo"]["mean"],
        "dpo_normalized_return": dpo_score,
        "best_mean_drift_during_search": float(state.best_score),
        "best_generation": int(state.best_generation) + 1,
        "history": {
            k: [None if not np.isfinite(x) else float(x) for x in np.asarray(v)]
            for k, v in state.history.items()
        },
    }
    if not interrupted:
        final = _final_evaluation(state, ctx)
        winner = (
            "best" if final["best"]["normalized_return"] > final["final"]["normalized_return"] else "final"
        )
        summary.update(
            {
                "final_drift_normalized_return": final["final"]["normalized_return"],
                "final_drift_stderr": final["final"]["stderr"],
                "best_drift_normalized_return": final[winner]["normalized_return"],
                "best_drift_stderr": final[winner]["stderr"],
                "best_drift_is": "best-during-search mean" if winner == "best" else "final mean",
                "final_eval_runs": final[winner]["runs"],
            }
        )
        log_h = float(horizon)
        save_drift(
            run_dir.file("final_drift.npz"),
            final["params"]["final"],
            _drift_meta(config, log_horizon=log_h, normalized_return=final["final"]["normalized_return"]),
        )
        save_drift(
            run_dir.file("best_drift.npz"),
            final["params"][winner],
            _drift_meta(config, log_horizon=log_h, normalized_return=final[winner]["normalized_return"]),
        )
        fig = drift_figure(family, final["params"][winner], horizon, "learned")
        fig.savefig(run_dir.file("drift.png"), dpi=90)
        tb.figure("drift/best", fig, generations, close=False)
        curves = {
            "learned (best drift)": final[winner]["curve"],
            "PPO": np.array(baselines["ppo"]["curve"], np.float64),
            "DPO": np.array(baselines["dpo"]["curve"], np.float64),
        }
        tb.figure(
            "returns/best_vs_baselines",
            curves_figure(curves, steps_per_update, config.env.name),
            generations,
            close=False,
        )
        tb.hparams(
            flat_config(config),
            {
                "best_drift_normalized_return": summary["best_drift_normalized_return"],
                "dpo_normalized_return": dpo_score,
            },
        )
        run_dir.write_json("results.json", {"config": config_to_dict(config), **summary})
    tb.close()
    summary.update(
        interrupted=interrupted,
        resumed_from=resumed_from,
        wall_time_s=time.time() - started,
        run_dir=str(run_dir.path),
    )
    return summary
