"""Out-of-sample evaluation: an ensemble of trained members acting as one policy, and the metrics of
one deterministic pass over a test window (with a buy-and-hold benchmark on the same bars).

Ensemble (:class:`EnsemblePolicy`). Every member sees the same observation batch and makes one
batched forward call per step (``torch.no_grad``); PPO and RecurrentPPO members may be mixed (the
LSTM states of recurrent members are kept per portfolio and cleared on ``episode_start``). Votes,
per ticker:

- ``majority``: the action most members choose deterministically (their distribution's mode,
  what ``model.predict(obs, deterministic=True)`` returns);
- ``mean_prob``: the action with the highest probability averaged over members.

A member's probabilities are computed from its action logits for all tickers at once
(:func:`action_logits`, :func:`logits_to_probs`), with the same float32 operations SB3's
``MultiCategoricalDistribution`` applies ticker by ticker, in 2 tensor ops per member and step
instead of ~30; the majority vote's modes come from the raw logits, SB3's way only for near
ties (:func:`logits_to_mode`). The tests check both agree exactly with ``get_distribution`` and
``predict``.

Ties (two actions with the same number of votes, or the same mean probability) go to HOLD when
HOLD is among the tied actions, otherwise to the lowest action (SELL before BUY): an undecided
ensemble stays put.

Metrics (:class:`FoldMetrics`) come from the equity curve ``V_0 .. V_T`` of the pass: ``V_0`` the
initial equity at the close of the first bar (before any trade), ``V_k`` the equity at the close of
bar ``start + k`` after the costs of the trades made at the close of bar ``start + k - 1``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any, Literal, Protocol

import numpy as np
import torch
from sb3_contrib.common.recurrent.policies import RecurrentActorCriticPolicy
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.distributions import MultiCategoricalDistribution
from stable_baselines3.common.policies import ActorCriticPolicy, BasePolicy

from engine.env.portfolio import BUY, HOLD, N_ACTIONS, PortfolioBatch, PortfolioEnvConfig
from engine.errors import ConfigError, DataError

__all__ = [
    "NULL_POLICIES",
    "ConstantPolicy",
    "EnsemblePolicy",
    "FoldMetrics",
    "MembersPolicy",
    "PassResult",
    "Policy",
    "RandomPolicy",
    "null_policy",
    "run_pass",
    "bars_per_year",
    "buy_and_hold",
    "combine_votes",
    "distribution_probs",
    "equity_metrics",
    "action_logits",
    "is_recurrent",
    "logits_to_mode",
    "logits_to_probs",
    "evaluate_policy",
    "majority_vote",
    "mean_prob_vote",
]

Vote = Literal["majority", "mean_prob"]
_US_PER_YEAR = 365.25 * 24 * 3600 * 1e6


class Policy(Protocol):
    """What the evaluation and the Monte Carlo need from a policy (``EnsemblePolicy`` is one)."""

    def reset(self, n: int) -> None: ...

    def act(self, obs: np.ndarray, episode_start: np.ndarray) -> np.ndarray: ...


# --------------------------------------------------------------------------------------------
# Votes
# --------------------------------------------------------------------------------------------


def combine_votes(scores: np.ndarray) -> np.ndarray:
    """Per ``[..., action]`` score vector, the action with the highest score; ties go to HOLD if
    HOLD is tied for the top, otherwise to the lowest tied action. Returns int64[...]."""
    top = scores == scores.max(axis=-1, keepdims=True)
    return np.where(top[..., HOLD], HOLD, np.argmax(top, axis=-1)).astype(np.int64)


def majority_vote(member_actions: Sequence[np.ndarray]) -> np.ndarray:
    """``member_actions``: one int[n, ticker] per member -> int64[n, ticker] by majority."""
    if len(member_actions) == 1:
        return np.asarray(member_actions[0], dtype=np.int64)
    stacked = np.stack([np.asarray(a) for a in member_actions])  # [member, n, ticker]
    counts = np.stack([(stacked == k).sum(axis=0) for k in range(N_ACTIONS)], axis=-1)
    return combine_votes(counts)


def mean_prob_vote(member_probs: Sequence[np.ndarray]) -> np.ndarray:
    """``member_probs``: one float[n, ticker, action] per member -> int64[n, ticker], the action
    with the highest mean probability. Members are added in order, in float64, so the result
    does not depend on ``n``."""
    total = np.array(member_probs[0], dtype=np.float64)
    for probs in member_probs[1:]:
        total += probs
    return combine_votes(total / len(member_probs))


def is_recurrent(model: BaseAlgorithm) -> bool:
    """True for sb3-contrib recurrent policies (RecurrentPPO), which carry LSTM states."""
    return isinstance(model.policy, RecurrentActorCriticPolicy)


def distribution_probs(distribution: Any) -> torch.Tensor:
    """Action probabilities ``[n, ticker, action]`` of an SB3 MultiDiscrete distribution."""
    return torch.stack([d.probs for d in distribution.distribution], dim=1)


def action_logits(
    policy: ActorCriticPolicy,
    obs: torch.Tensor,
    lstm_states: tuple[torch.Tensor, torch.Tensor] | None = None,
    episode_starts: torch.Tensor | None = None,
) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor] | None]:
    """The raw action logits ``[n, ticker * 3]`` that ``policy.get_distribution`` turns into a
    distribution, and the new LSTM states (recurrent policies; pass ``lstm_states`` and
    ``episode_starts`` for them). The same forward pass (features, LSTM, actor MLP, action
    head), without building one torch ``Categorical`` per ticker: that costs two small
    reductions per ticker, which dominate the step when there are many tickers."""
    features = BasePolicy.extract_features(policy, obs, policy.pi_features_extractor)
    if lstm_states is not None:
        assert isinstance(policy, RecurrentActorCriticPolicy) and episode_starts is not None
        features, lstm_states = policy._process_sequence(
            features, lstm_states, episode_starts, policy.lstm_actor
        )
    return policy.action_net(policy.mlp_extractor.forward_actor(features)), lstm_states


def logits_to_probs(logits: torch.Tensor, n_tickers: int) -> torch.Tensor:
    """``[n, ticker * 3]`` logits -> ``[n, ticker, 3]`` probabilities, computed as SB3's
    MultiCategorical does per ticker (``softmax(l - logsumexp(l))``) in one batched op; the
    argmax over the last axis is then its mode, the deterministic action."""
    per_ticker = logits.reshape(logits.shape[0], n_tickers, N_ACTIONS)
    return (per_ticker - per_ticker.logsumexp(dim=-1, keepdim=True)).softmax(dim=-1)


# Top-two logit gap (relative to the logits' magnitude) above which the raw argmax is SB3's
# mode for sure: float32 rounding in SB3's normalisation and softmax moves a value by a few
# ulps (~1e-7 relative), so only closer pairs can end up tied (where SB3 takes the first).
_TIE_GAP = 1e-5


def logits_to_mode(logits: torch.Tensor, n_tickers: int) -> np.ndarray:
    """The deterministic actions ``int64[n, ticker]`` of ``[n, ticker * 3]`` logits, exactly as
    SB3 picks them (``argmax`` of :func:`logits_to_probs`, the first action on ties).

    Fast path: the argmax of the raw logits, in NumPy. Tickers whose two best logits are within
    ``_TIE_GAP`` (relative) of each other, where rounding could make SB3's probabilities tie,
    are recomputed SB3's way; with untrained or trained members such rows are rare.
    """
    raw = logits.detach().cpu().numpy().reshape(logits.shape[0], n_tickers, N_ACTIONS)
    actions = raw.argmax(axis=-1).astype(np.int64)
    a, b, c = raw[..., 0], raw[..., 1], raw[..., 2]
    top = np.maximum(np.maximum(a, b), c)
    low = np.minimum(np.minimum(a, b), c)
    second = np.maximum(np.minimum(a, b), np.minimum(np.maximum(a, b), c))  # median of 3
    scale = np.maximum(np.maximum(np.abs(top), np.abs(low)), 1.0)
    close = ~(top - second > _TIE_GAP * scale)  # NaN logits take the exact path too
    if close.any():
        rows = np.flatnonzero(close.any(axis=1))
        index = torch.as_tensor(rows, device=logits.device)
        exact = logits_to_probs(logits[index], n_tickers).argmax(dim=-1).cpu().numpy()
        actions[rows] = exact
    return actions


class EnsemblePolicy:
    """Trained members (SB3 ``PPO`` and/or sb3-contrib ``RecurrentPPO``) voting as one policy.

    Args:
        models: the members; they must share the observation size and the action space
            ``MultiDiscrete([3] * n_tickers)``.
        vote: ``"majority"`` or ``"mean_prob"`` (see the module docstring, ties included).

    ``reset(n)`` before a run of ``n`` parallel portfolios (clears LSTM states), then
    ``act(obs, episode_start)`` once per step.
    """

    def __init__(self, models: Sequence[BaseAlgorithm], vote: Vote = "majority") -> None:
        if not models:
            raise ConfigError("an ensemble needs at least one model")
        if vote not in ("majority", "mean_prob"):
            raise ConfigError(f"vote must be 'majority' or 'mean_prob', got {vote!r}")
        self.models = tuple(models)
        self.vote: Vote = vote
        nvec = np.asarray(getattr(self.models[0].action_space, "nvec", []))
        obs_shape = self.models[0].observation_space.shape
        for model in self.models:
            if not np.array_equal(getattr(model.action_space, "nvec", []), nvec):
                raise ConfigError("ensemble members must share the action space")
            if model.observation_space.shape != obs_shape:
                raise ConfigError("ensemble members must share the observation shape")
        if nvec.size == 0 or not (nvec == N_ACTIONS).all():
            raise ConfigError(f"expected MultiDiscrete([3] * n_tickers), got nvec {nvec}")
        for model in self.models:
            policy = model.policy
            if not isinstance(policy, ActorCriticPolicy) or not isinstance(
                policy.action_dist, MultiCategoricalDistribution
            ):
                raise ConfigError("ensemble members must be PPO / RecurrentPPO actor-critics")
        self.n_tickers = len(nvec)
        self.obs_size = int(np.prod(obs_shape))
        self.recurrent = tuple(is_recurrent(m) for m in self.models)
        self._states: list[tuple[torch.Tensor, torch.Tensor] | None] = [None] * len(self.models)
        self.n = 0
        for model in self.models:
            model.policy.set_training_mode(False)

    def reset(self, n: int) -> None:
        """Prepare for ``n`` parallel portfolios: LSTM states of recurrent members to zeros."""
        if n < 1:
            raise ConfigError(f"n must be >= 1, got {n}")
        self.n = n
        for i, model in enumerate(self.models):
            if self.recurrent[i]:
                layers, _, hidden = model.policy.lstm_hidden_state_shape
                zeros = torch.zeros((layers, n, hidden), device=model.policy.device)
                self._states[i] = (zeros, zeros.clone())

    @torch.no_grad()
    def act(self, obs: np.ndarray, episode_start: np.ndarray) -> np.ndarray:
        """Actions ``int64[n, ticker]`` for observations ``float32[n, obs_size]``.

        ``episode_start: bool[n]`` is True on the first observation of a portfolio's episode
        (recurrent members then start from zero states). One forward call per member.
        """
        obs = np.asarray(obs, dtype=np.float32)
        if obs.ndim != 2 or obs.shape[1] != self.obs_size:
            raise ValueError(
                f"obs must be [n, {self.obs_size}] (the members' observation size), got shape "
                f"{obs.shape}: evaluate with the env settings (lookback, tickers, features) "
                "the members were trained with"
            )
        n = obs.shape[0]
        if any(self.recurrent) and n != self.n:
            raise RuntimeError(f"EnsemblePolicy: call reset({n}) before acting on {n} portfolios")
        tensors: dict[torch.device, torch.Tensor] = {}
        starts: dict[torch.device, torch.Tensor] = {}
        outputs = []
        for i, model in enumerate(self.models):
            policy = model.policy
            device = policy.device
            if device not in tensors:
                tensors[device] = torch.as_tensor(obs, device=device)
            if self.recurrent[i]:
                if device not in starts:
                    starts[device] = torch.as_tensor(
                        np.asarray(episode_start, dtype=np.float32).reshape(n), device=device
                    )
                logits, self._states[i] = action_logits(
                    policy, tensors[device], self._states[i], starts[device]
                )
            else:
                logits, _ = action_logits(policy, tensors[device])
            if self.vote == "majority":
                outputs.append(logits_to_mode(logits, self.n_tickers))
            else:
                outputs.append(logits_to_probs(logits, self.n_tickers).cpu().numpy())
        if self.vote == "majority":
            return majority_vote(outputs)
        return mean_prob_vote(outputs)


class MembersPolicy:
    """Each member alone on its own portfolio: portfolio ``i`` follows member ``i`` (the trials
    of the trial registry), one forward call per member and step."""

    def __init__(self, models: Sequence[BaseAlgorithm], vote: Vote = "majority") -> None:
        self.members = [EnsemblePolicy([m], vote=vote) for m in models]

    def reset(self, n: int) -> None:
        if n != len(self.members):
            raise ConfigError(f"MembersPolicy runs one portfolio per member ({len(self.members)})")
        for member in self.members:
            member.reset(1)

    def act(self, obs: np.ndarray, episode_start: np.ndarray) -> np.ndarray:
        return np.concatenate(
            [m.act(obs[i : i + 1], episode_start[i : i + 1]) for i, m in enumerate(self.members)]
        )


class ConstantPolicy:
    """The same action for every ticker of every portfolio at every bar: ``HOLD`` is the cash
    null (never trades), ``BUY`` the always-long null (buys every ticker every bar until each
    holds ``max_units_per_ticker`` units or cash runs out: about fully invested, equal weight)."""

    def __init__(self, action: int, n_tickers: int) -> None:
        self.action, self.n_tickers = int(action), int(n_tickers)

    def reset(self, n: int) -> None:
        pass

    def act(self, obs: np.ndarray, episode_start: np.ndarray) -> np.ndarray:
        return np.full((len(obs), self.n_tickers), self.action, dtype=np.int64)


class RandomPolicy:
    """The random null: every ticker's action uniform over sell / hold / buy at every bar, from
    ``numpy.random.default_rng(seed)`` (restarted by ``reset``, so a run is reproducible)."""

    def __init__(self, n_tickers: int, seed: int) -> None:
        self.n_tickers, self.seed = int(n_tickers), int(seed)
        self.rng = np.random.default_rng(self.seed)

    def reset(self, n: int) -> None:
        self.rng = np.random.default_rng(self.seed)

    def act(self, obs: np.ndarray, episode_start: np.ndarray) -> np.ndarray:
        return self.rng.integers(0, N_ACTIONS, size=(len(obs), self.n_tickers), dtype=np.int64)


NULL_POLICIES = ("cash", "always_long", "random")


def null_policy(name: str, n_tickers: int, seed: int) -> Policy:
    """One of :data:`NULL_POLICIES`: what an ensemble must beat to show it learnt anything."""
    if name == "cash":
        return ConstantPolicy(HOLD, n_tickers)
    if name == "always_long":
        return ConstantPolicy(BUY, n_tickers)
    if name == "random":
        return RandomPolicy(n_tickers, seed)
    raise ConfigError(f"unknown null policy {name!r}; expected one of {', '.join(NULL_POLICIES)}")


# --------------------------------------------------------------------------------------------
# Metrics
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FoldMetrics:
    """Out-of-sample metrics of one equity curve ``V_0 .. V_T``.

    Attributes:
        total_return: ``V_T / V_0 - 1``.
        sharpe: mean / standard deviation (ddof 1) of the per-bar log returns, times
            ``sqrt(bars_per_year)``; 0.0 with fewer than two returns or no variation.
        max_drawdown: largest ``1 - V_t / max(V_0 .. V_t)``, a positive fraction.
        turnover: total traded notional (buys and sells) / mean of ``V_0 .. V_T``.
        n_bars: bar-to-bar steps ``T`` (the window's bars minus one).
        final_equity: ``V_T``, in money units (net of exit costs for the passes here).
        mean_exposure: mean fraction of equity held in stocks over the pass (None: not
            measured, e.g. for buy-and-hold).
    """

    total_return: float
    sharpe: float
    max_drawdown: float
    turnover: float
    n_bars: int
    final_equity: float
    mean_exposure: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def equity_metrics(equity: np.ndarray, traded_notional: float, bars_per_year: float) -> FoldMetrics:
    """:class:`FoldMetrics` of an equity curve ``float[T + 1]`` and the notional traded on it."""
    equity = np.asarray(equity, dtype=np.float64)
    if equity.ndim != 1 or len(equity) < 2 or not (equity > 0).all():
        raise ValueError("equity must be a curve of at least 2 positive values")
    log_returns = np.diff(np.log(equity))
    sharpe = 0.0
    if len(log_returns) >= 2:
        std = float(np.std(log_returns, ddof=1))
        if std > 0:
            sharpe = float(np.mean(log_returns)) / std * math.sqrt(bars_per_year)
    peaks = np.maximum.accumulate(equity)
    return FoldMetrics(
        total_return=float(equity[-1] / equity[0] - 1.0),
        sharpe=sharpe,
        max_drawdown=float(np.max(1.0 - equity / peaks)),
        turnover=float(traded_notional / np.mean(equity)),
        n_bars=len(equity) - 1,
        final_equity=float(equity[-1]),
    )


def bars_per_year(timestamps_us: np.ndarray) -> float:
    """Bars per calendar year (365.25 days) over the span of ``timestamps_us`` (int64 UTC
    microseconds, increasing): ``(T - 1) / span``, intervals between bars per year."""
    ts = np.asarray(timestamps_us, dtype=np.int64)
    if ts.ndim != 1 or len(ts) < 2 or ts[-1] <= ts[0]:
        raise DataError("bars_per_year needs at least 2 increasing timestamps")
    return float((len(ts) - 1) / ((ts[-1] - ts[0]) / _US_PER_YEAR))


def _check_rows(rows: tuple[int, int], n_time: int) -> tuple[int, int]:
    start, stop = int(rows[0]), int(rows[1])
    if not 0 <= start < stop - 1 or stop > n_time:
        raise ConfigError(
            f"rows [{start}, {stop}) must hold at least 2 bars inside the data ({n_time} bars)"
        )
    return start, stop


@dataclass(frozen=True, eq=False)
class PassResult:
    """``n`` portfolios run deterministically over the same bars (:func:`run_pass`).

    Attributes:
        equity: float64[n, T + 1], ``V_0 .. V_T`` at the closes; ``V_T`` is net of the exit
            costs (every holding sold at the last close at the portfolio's cost rate).
        traded: float64[n], notional of every fill, the final sale included.
        exposure: float64[n, T], the fraction of equity held in stocks at each close after a
            step (``V_1 .. V_T``, before the final sale).
        exit_costs: float64[n], what the final sale cost.
    """

    equity: np.ndarray
    traded: np.ndarray
    exposure: np.ndarray
    exit_costs: np.ndarray

    @property
    def mean_exposure(self) -> np.ndarray:
        return self.exposure.mean(axis=1)

    def simple_returns(self) -> np.ndarray:
        """float64[n, T]: ``V_{k+1} / V_k - 1``, the per-bar returns (trials, deflated Sharpe)."""
        return self.equity[:, 1:] / self.equity[:, :-1] - 1.0

    def metrics(self, i: int, bars_per_year: float) -> FoldMetrics:
        m = equity_metrics(self.equity[i], float(self.traded[i]), bars_per_year)
        return replace(m, mean_exposure=float(self.exposure[i].mean()))


def run_pass(
    policy: Policy,
    features: np.ndarray,
    prices: np.ndarray,
    tradable: np.ndarray | None,
    rows: tuple[int, int],
    env_config: PortfolioEnvConfig,
    *,
    n: int = 1,
    fill_prices: np.ndarray | None = None,
    cost_rates: np.ndarray | None = None,
    price_paths: np.ndarray | None = None,
) -> PassResult:
    """``n`` portfolios of ``policy`` over the bars ``rows = (start, stop)``, all from the same
    start: each starts with ``env_config.initial_equity`` at the close of ``start``, acts at the
    closes of ``start .. stop - 2`` and is valued at the close of ``stop - 1`` (ruin disabled).

    ``cost_rates: float64[n]`` charges portfolio ``i`` its own rate (cost sensitivity);
    ``price_paths: int[n, stop - start]`` makes portfolio ``i`` earn at step ``k`` the next-bar
    move of bar ``price_paths[i, k]`` while it observes bar ``start + k`` (the timing-skill
    test's permutations; its last column is only read, never earned). ``start`` must be
    ``>= lookback - 1``. Every portfolio is asked for its actions in one ``policy.act`` per step.
    """
    start, stop = _check_rows(rows, features.shape[0])
    config = replace(
        env_config,
        window_start=start,
        window_end=stop,
        episode_length=stop - 1 - start,
        ruin_fraction=0.0,
    )
    if start < config.lookback - 1:
        raise ConfigError(f"start bar {start} has no full lookback of {config.lookback} bars")
    path = np.broadcast_to(np.arange(start, stop, dtype=np.int64), (n, stop - start))
    batch = PortfolioBatch(
        features,
        prices,
        config,
        n=n,
        index_paths=path,
        tradable=tradable,
        fill_prices=fill_prices,
        price_paths=price_paths,
    )
    rates = np.full(n, config.cost_rate)
    if cost_rates is not None:
        batch.set_cost_rates(cost_rates)
        rates = np.asarray(cost_rates, dtype=np.float64)
    steps = stop - 1 - start
    policy.reset(n)
    batch.reset_rows(np.arange(n, dtype=np.int64), None)
    equity = np.empty((n, steps + 1))
    exposure = np.empty((n, steps))
    equity[:, 0] = batch.equity
    traded = np.zeros(n)
    episode_start = np.ones(n, dtype=bool)
    for k in range(steps):
        actions = np.asarray(policy.act(batch.observe(), episode_start), dtype=np.int64)
        actions = actions.reshape(n, batch.n_tickers)
        if actions.min() < 0 or actions.max() >= N_ACTIONS:
            raise ValueError(f"policy returned actions outside {{0, 1, 2}}: {actions}")
        batch.step(actions)
        traded += batch.traded
        equity[:, k + 1] = batch.equity
        exposure[:, k] = 1.0 - batch.cash / batch.equity
        episode_start[:] = False
    held = batch.equity - batch.cash
    exit_costs = held * rates
    equity[:, -1] -= exit_costs
    return PassResult(equity=equity, traded=traded + held, exposure=exposure, exit_costs=exit_costs)


def evaluate_policy(
    policy: Policy,
    features: np.ndarray,
    prices: np.ndarray,
    tradable: np.ndarray | None,
    rows: tuple[int, int],
    env_config: PortfolioEnvConfig,
    bars_per_year: float,
    *,
    fill_prices: np.ndarray | None = None,
) -> FoldMetrics:
    """One deterministic pass of ``policy`` over the bars ``rows`` (:func:`run_pass` with one
    portfolio): its metrics, net of the exit costs, with its mean exposure."""
    result = run_pass(policy, features, prices, tradable, rows, env_config, fill_prices=fill_prices)
    return result.metrics(0, bars_per_year)


def buy_and_hold(
    prices: np.ndarray,
    rows: tuple[int, int],
    env_config: PortfolioEnvConfig,
    bars_per_year: float,
    *,
    tradable: np.ndarray | None = None,
    fill_prices: np.ndarray | None = None,
    weight: float = 1.0,
) -> FoldMetrics:
    """Equal weights in every ticker with ``weight`` of the initial equity (the rest stays in
    cash), each ticker bought at its first fill the market allows, held to the close of
    ``stop - 1`` and sold there; the same costs, fills and equity convention as
    :func:`evaluate_policy`.

    Ticker ``k`` is bought with ``weight * V_0 / (n_tickers * (1 + rate))`` of notional at the
    first bar it can be filled on: with ``env_config.fill == "close"`` the first tradable bar
    in ``start .. stop - 2`` at its close, otherwise the first bar in ``start + 1 .. stop - 1``
    that is tradable and has a fill price, at that price (the order was sent at the previous
    close). A ticker never fillable in the window stays in cash. The exit costs ``rate`` on the
    holdings' value at the last close. ``weight`` < 1 is the exposure-matched benchmark.
    """
    start, stop = _check_rows(rows, prices.shape[0])
    if not 0 <= weight <= 1:
        raise ConfigError(f"buy-and-hold weight must be in [0, 1], got {weight}")
    v0, rate = env_config.initial_equity, env_config.cost_rate
    window = np.asarray(prices[start:stop], dtype=np.float64)  # [T + 1, ticker]
    n_bars, n_tickers = window.shape
    per_ticker = weight * v0 / (n_tickers * (1.0 + rate))
    if env_config.fills_next_bar:
        if fill_prices is None:
            raise ConfigError(f"env.fill {env_config.fill} needs fill prices for buy-and-hold")
        fills = np.asarray(fill_prices[start:stop], dtype=np.float64)
        ok = np.isfinite(fills) & (fills > 0)
        ok[0] = False  # an order sent at the close of `start` fills at the next bar
    else:
        fills = window
        ok = np.ones_like(window, dtype=bool)
        ok[-1] = False  # nothing can be bought at the close it is valued at and sold
    if tradable is not None:
        ok &= np.asarray(tradable[start:stop], dtype=bool)
    bought = ok.any(axis=0)
    first = np.where(bought, ok.argmax(axis=0), n_bars)  # row of each ticker's fill
    fill_price = fills[np.minimum(first, n_bars - 1), np.arange(n_tickers)]
    shares = np.where(bought, per_ticker / np.where(bought, fill_price, 1.0), 0.0)
    held = np.arange(n_bars)[:, None] >= first[None, :]  # [T + 1, ticker]
    holdings = np.where(held, shares[None, :] * window, 0.0)
    spent = np.where(held, per_ticker * (1.0 + rate), 0.0).sum(axis=1)
    equity = v0 - spent + holdings.sum(axis=1)
    equity[0] = v0  # V_0 is before any trade (a close fill at `start` shows from V_1 on)
    final_holdings = float(holdings[-1].sum())
    equity[-1] -= rate * final_holdings
    traded = per_ticker * int(bought.sum()) + final_holdings
    return equity_metrics(equity, traded, bars_per_year)
