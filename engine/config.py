"""Training configuration: YAML files in ``config/``, validated before anything starts.

An unknown key, a wrong type or an impossible combination is one ``ConfigError`` line naming the
file, the dotted key and its line, e.g.
``config/demo.yaml:12: key 'training.ent_coef': Input should be a valid number``.

Every YAML file goes through :func:`engine.yamlio.read_yaml` (re-exported here), which refuses a
file that is not UTF-8, a key given twice, deep nesting and alias bombs the same way.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_core import InitErrorDetails, PydanticCustomError

from engine.errors import ConfigError
from engine.features.schema import FeatureConfig
from engine.yamlio import (  # noqa: F401  (re-exported: the one YAML reader)
    MAX_YAML_DEPTH,
    MAX_YAML_EXPANDED_NODES,
    StrictLoader,
    YamlRefused,
    parse_yaml,
    read_yaml,
)

_M = TypeVar("_M", bound=BaseModel)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DataConfig(_Strict):
    """Where the bars come from (``ploutos dataset build --config`` reads this section)."""

    source: Literal["alpaca", "yahoo", "csv-import", "synthetic-demo"] = "alpaca"
    tickers: list[str] = Field(min_length=1)
    start: dt.date
    end: dt.date | None = None
    timeframe: Literal["1h"] = "1h"
    feed: Literal["iex", "sip"] = "iex"
    adjustment: Literal["raw", "split", "dividend", "all"] = "all"
    macro: list[str] = Field(default_factory=list)
    macro_interval: Literal["1d"] = "1d"

    @field_validator("tickers", "macro")
    @classmethod
    def _upper(cls, values: list[str]) -> list[str]:
        return [v.strip().upper() for v in values]

    @model_validator(mode="after")
    def _range(self) -> DataConfig:
        if self.end is not None and self.end <= self.start:
            raise ValueError(f"end {self.end} must be after start {self.start}")
        return self


class EnvConfig(_Strict):
    """Trading costs and episode shape, in basis points and bars, and where orders fill.

    ``fill``: ``next_open`` (default: an order decided at bar t's close fills at bar t+1's open,
    what a live order can get), ``next_vwap`` (at bar t+1's vwap; the dataset must have vwap) or
    ``close`` (at the close the agent has just seen: optimistic, and labelled so in results)."""

    fill: Literal["next_open", "next_vwap", "close"] = "next_open"
    commission_bps: float = Field(default=1.0, ge=0)
    slippage_bps: float = Field(default=2.0, ge=0)
    episode_length: int = Field(default=1024, gt=0)
    lookback: int = Field(default=1, ge=1)


# ``training.activation_fn``: the names accepted and the torch.nn class each stands for (looked
# up by name when a model is built, so reading a config needs no torch).
ActivationName = Literal["tanh", "relu", "elu", "leaky_relu", "gelu", "silu"]
TORCH_ACTIVATIONS: dict[str, str] = {
    "tanh": "Tanh",
    "relu": "ReLU",
    "elu": "ELU",
    "leaky_relu": "LeakyReLU",
    "gelu": "GELU",
    "silu": "SiLU",
}

# Keys a user of rl-zoo3 may bring that Ploutos's training section does not take, and why.
_NOT_TRAINING_KEYS: dict[str, str] = {
    "use_sde": "gSDE explores continuous (Box) actions only and Ploutos's actions are "
    "MultiDiscrete (one choice per ticker); remove it",
    "sde_sample_freq": "gSDE explores continuous (Box) actions only and Ploutos's actions are "
    "MultiDiscrete (one choice per ticker); remove it",
    "n_steps": "the hardware plan sets it (config/hardware.yaml; `ploutos plan` shows it); "
    "remove it here",
    "batch_size": "the hardware plan sets it (config/hardware.yaml; `ploutos plan` shows it); "
    "remove it here",
    "n_envs": "the hardware plan sets it (config/hardware.yaml; `ploutos plan` shows it); "
    "remove it here",
    "n_timesteps": "Ploutos calls it total_timesteps",
    "policy": "it follows training.algorithm (MlpPolicy for ppo, MlpLstmPolicy for "
    "recurrent_ppo); remove it",
    "policy_kwargs": "write its keys directly under training: net_arch, activation_fn, "
    "ortho_init, and recurrent: {lstm_hidden_size, n_lstm_layers, shared_lstm, "
    "enable_critic_lstm}",
}


def _key_error(model: str, loc: tuple[str | int, ...], message: str, value: Any) -> ValidationError:
    """A validation error at ``loc`` (relative to ``model``), so :func:`describe_error` names that
    key and its line rather than the section that checked it."""
    return ValidationError.from_exception_data(
        model,
        [
            InitErrorDetails(
                type=PydanticCustomError("invalid_combination", message),
                loc=loc,
                input=value,
            )
        ],
    )


class RecurrentConfig(_Strict):
    """The LSTM of ``algorithm: recurrent_ppo`` (sb3-contrib's ``MlpLstmPolicy`` keywords).

    The observation goes through ``n_lstm_layers`` stacked LSTM layers of ``lstm_hidden_size``
    units before the actor's MLP (``net_arch``). The critic has an LSTM of its own of the same
    shape (``enable_critic_lstm``, the default), or reads the actor's (``shared_lstm``: then only
    the actor's loss trains it), or, with both false, a linear layer of ``lstm_hidden_size``
    outputs. Defaults: sb3-contrib 2.9.2's ``RecurrentActorCriticPolicy``."""

    lstm_hidden_size: int = Field(default=256, ge=1)
    n_lstm_layers: int = Field(default=1, ge=1)
    shared_lstm: bool = False
    enable_critic_lstm: bool = True

    @model_validator(mode="after")
    def _one_critic_input(self) -> RecurrentConfig:
        # sb3-contrib asserts this when the policy is built, far from the file: say it here.
        if self.shared_lstm and self.enable_critic_lstm:
            raise _key_error(
                "RecurrentConfig",
                ("shared_lstm",),
                "shared_lstm and enable_critic_lstm cannot both be true (the critic either "
                "shares the actor's LSTM or has its own); set one of them to false",
                True,
            )
        return self


_RECURRENT_DEFAULTS = RecurrentConfig()


class TrainingConfig(_Strict):
    """Agent and ensemble; the seed's lessons are the defaults (wide-shallow net, low entropy).

    The PPO keys (``n_epochs`` to ``target_kl``) and the policy's (``activation_fn``,
    ``ortho_init``) take their names and defaults from stable-baselines3 2.9.2's ``PPO`` and
    ``ActorCriticPolicy`` (sb3-contrib 2.9.2's ``RecurrentPPO`` has the same ones), except
    ``ent_coef`` (0.01, SB3: 0.0) and ``net_arch`` (512 x 512 x 512 for the actor and the critic
    each, SB3: 64 x 64). ``net_arch`` is one list for both networks, as the hardware plan's
    memory model assumes. The rollout shape (``n_steps``, ``batch_size``, ``n_envs``) comes from
    the hardware plan, not from here. ``recurrent`` applies to ``algorithm: recurrent_ppo`` only:
    with ``ppo`` a recurrent key at anything but its default is refused (a run folder's
    ``config.yaml`` lists every key, defaults included, so those must still load)."""

    algorithm: Literal["ppo", "recurrent_ppo"] = "recurrent_ppo"
    net_arch: list[int] = Field(default_factory=lambda: [512, 512, 512], min_length=1)
    ent_coef: float = Field(default=0.01, ge=0, allow_inf_nan=False)
    learning_rate: float = Field(default=3e-4, gt=0, allow_inf_nan=False)
    gamma: float = Field(default=0.99, gt=0, le=1)
    # PPO's update (Schulman et al. 2017, "Proximal Policy Optimization Algorithms"): passes over
    # each rollout, GAE's lambda, the ratio clip epsilon (lt 1 so 1 - epsilon stays positive),
    # the value clip (None: off; in return units), advantage normalisation per mini-batch, the
    # value loss weight, the gradient norm clip, and the approximate KL that stops an update
    # early (None: never).
    n_epochs: int = Field(default=10, ge=1)
    gae_lambda: float = Field(default=0.95, ge=0, le=1)
    clip_range: float = Field(default=0.2, gt=0, lt=1)
    clip_range_vf: float | None = Field(default=None, gt=0, allow_inf_nan=False)
    normalize_advantage: bool = True
    vf_coef: float = Field(default=0.5, ge=0, allow_inf_nan=False)
    max_grad_norm: float = Field(default=0.5, gt=0, allow_inf_nan=False)
    target_kl: float | None = Field(default=None, gt=0, allow_inf_nan=False)
    # The policy's hidden-layer activation (a torch.nn class, see TORCH_ACTIVATIONS) and
    # orthogonal initialisation of its weights.
    activation_fn: ActivationName = "tanh"
    ortho_init: bool = True
    recurrent: RecurrentConfig = RecurrentConfig()
    total_timesteps: int = Field(default=2_000_000, gt=0)
    ensemble: int = Field(default=5, ge=1)
    seed: int = 0
    # How the members' actions combine out of sample: per-ticker majority of the members'
    # deterministic actions, or the action with the highest mean probability.
    vote: Literal["majority", "mean_prob"] = "majority"
    checkpoint_every_timesteps: int = Field(default=100_000, gt=0)
    progress_interval_s: float = Field(default=5.0, gt=0)
    tensorboard: bool = False

    @model_validator(mode="before")
    @classmethod
    def _not_here(cls, data: Any) -> Any:
        if isinstance(data, dict):
            for key, why in _NOT_TRAINING_KEYS.items():
                if key in data:
                    raise _key_error(
                        "TrainingConfig", (key,), f"not a training key: {why}", data[key]
                    )
        return data

    @model_validator(mode="after")
    def _recurrent_only_with_recurrent_ppo(self) -> TrainingConfig:
        if self.algorithm == "recurrent_ppo":
            return self
        for name in RecurrentConfig.model_fields:
            value = getattr(self.recurrent, name)
            if value != getattr(_RECURRENT_DEFAULTS, name):
                raise _key_error(
                    "TrainingConfig",
                    ("recurrent", name),
                    f"applies only to algorithm recurrent_ppo (algorithm is {self.algorithm}); "
                    "remove it or set training.algorithm: recurrent_ppo",
                    value,
                )
        return self


class WalkForwardConfig(_Strict):
    train_years: float = Field(default=5, gt=0)
    embargo_days: int = Field(default=5, ge=0)
    test_months: int = Field(default=6, gt=0)
    step_months: int = Field(default=6, gt=0)
    expanding: bool = False
    # step_months < test_months makes test windows overlap, so pooled statistics would count
    # the same bars twice: refused unless this is set (then pooled figures use each bar once).
    allow_overlapping_tests: bool = False
    # Keep only the most recent N folds (None: every fold the data allows).
    max_folds: int | None = Field(default=None, ge=1)


class MonteCarloConfig(_Strict):
    simulations: int = Field(default=1000, gt=0)
    mean_block_bars: int = Field(default=48, gt=0)
    # Each simulation's costs are the configured ones times U(1 - jitter, 1 + jitter).
    cost_jitter: float = Field(default=0.5, ge=0, lt=1)
    # Each simulation runs a random length in [min_length_fraction, 1] x the test window.
    min_length_fraction: float = Field(default=0.5, gt=0, le=1)
    histogram_bins: int = Field(default=40, ge=2)
    seed: int = 0


class VerdictConfig(_Strict):
    """How a run is judged (docs/results.md says what each statistic means).

    Skill is shown only when the timing-skill p-value is at most ``alpha``, the deflated Sharpe
    ratio at least ``min_deflated_sharpe``, the probability of backtest overfitting at most
    ``max_pbo`` (where it can be computed), the pooled out-of-sample return after costs is
    positive and the ensemble held stocks at all."""

    # Timing-skill test: the test window's next-bar returns are cut into blocks of
    # permutation_block_bars bars and shuffled against the features, `permutations` times.
    permutations: int = Field(default=199, ge=19)
    permutation_block_bars: int = Field(default=48, ge=1)
    alpha: float = Field(default=0.05, gt=0, lt=1)
    min_deflated_sharpe: float = Field(default=0.95, gt=0, lt=1)
    max_pbo: float = Field(default=0.5, gt=0, le=1)
    # Combinatorially symmetric cross-validation: the trials' common bars cut into this many
    # blocks (even); C(16, 8) = 12,870 splits.
    pbo_splits: int = Field(default=16, ge=2)
    # Cost-sensitivity table: out-of-sample return at these multiples of the configured costs.
    cost_multipliers: list[float] = Field(default_factory=lambda: [0.0, 1.0, 2.0, 4.0])
    seed: int = 0

    @field_validator("pbo_splits")
    @classmethod
    def _even(cls, value: int) -> int:
        if value % 2:
            raise ValueError(f"pbo_splits must be even, got {value}")
        return value

    @field_validator("cost_multipliers")
    @classmethod
    def _multipliers(cls, values: list[float]) -> list[float]:
        if not values or any(not (v >= 0) for v in values):
            raise ValueError("cost_multipliers must be a non-empty list of numbers >= 0")
        return values


class PloutosConfig(_Strict):
    """One training configuration file."""

    dataset_path: Path
    data: DataConfig | None = None
    features: FeatureConfig = FeatureConfig()
    env: EnvConfig = EnvConfig()
    training: TrainingConfig = TrainingConfig()
    walk_forward: WalkForwardConfig = WalkForwardConfig()
    monte_carlo: MonteCarloConfig = MonteCarloConfig()
    verdict: VerdictConfig = VerdictConfig()
    hardware_profile: str = "auto"
    # Where the units of work run: worker processes on this machine, or a Ray cluster
    # (`pip install 'ploutos[ray]'`); no ray_address starts Ray locally.
    executor: Literal["local", "ray"] = "local"
    ray_address: str | None = None


def load_config(path: str | Path) -> PloutosConfig:
    """Read and validate a YAML config; relative ``dataset_path`` is resolved against the cwd."""
    raw, node = read_yaml(path)
    return validate_yaml(PloutosConfig, raw, node, path)


def validate_yaml(model: type[_M], raw: dict[str, Any], node: Any, shown: str | Path) -> _M:
    """``model`` validated from ``raw``; a failure is one line naming the file, line and key."""
    try:
        return model.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(describe_error(Path(shown), node, err)) from None


def describe_error(path: Path, node: yaml.Node | None, err: ValidationError) -> str:
    first = err.errors()[0]
    loc = [p for p in first["loc"] if not (isinstance(p, str) and p.startswith("function-"))]
    key = ".".join(str(p) for p in loc) or "(top level)"
    line = line_of(node, loc)
    where = f"{path}:{line}" if line else str(path)
    if first["type"] == "extra_forbidden":
        return f"{where}: unknown key {key!r}; remove it or check its spelling"
    if first["type"] == "missing":
        return f"{where}: missing required key {key!r}"
    got = first.get("input")
    shown = f" (got {got!r})" if isinstance(got, str | int | float | bool) else ""
    return f"{where}: key {key!r}: {first['msg']}{shown}"


def line_of(node: yaml.Node | None, loc: list[Any]) -> int | None:
    """1-based line of the deepest YAML node on ``loc`` that exists."""
    line = None
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            match = next((kv for kv in node.value if kv[0].value == str(part)), None)
            if match is None:
                break
            line, node = match[0].start_mark.line + 1, match[1]
        elif (
            isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value)
        ):
            node = node.value[part]
            line = node.start_mark.line + 1
        else:
            break
    return line
