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

from engine.env.portfolio import HOLD, N_ACTIONS, PortfolioBatch, PortfolioEnvConfig
from engine.errors import ConfigError, DataError

__all__ = [
    "EnsemblePolicy",
    "FoldMetrics",
    "Policy",
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
        final_equity: ``V_T``, in money units.
    """

    total_return: float
    sharpe: float
    max_drawdown: float
    turnover: float
    n_bars: int
    final_equity: float

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


def _traded_notional(
    batch: PortfolioBatch,
    hold_pre: np.ndarray,
    units_pre: np.ndarray,
    cash_pre: float,
    v_pre: float,
    rate: float,
) -> float:
    """Notional traded by portfolio 0's last step, from its state before and after the step.

    A ticker whose units went down sold one unit, ``hold / units`` of its holding (the env's own
    arithmetic); one whose units went up bought one unit of ``trade_fraction * V``. When cash
    could not pay for every buy (cash left at exactly 0), the buys were scaled down to spend
    ``cash after sells / (1 + rate)``. Exact when buys fill in full; to rounding otherwise.
    """
    units_post = batch.units[:, 0]
    sold = units_post < units_pre
    sells = 0.0
    for value in (hold_pre[sold] / np.maximum(units_pre[sold], 1.0)).tolist():
        sells += value  # in ticker order, like the env's own sum
    n_bought = int(np.count_nonzero(units_post > units_pre))
    if n_bought == 0:
        return sells
    buys = n_bought * (v_pre * batch.config.trade_fraction)
    if batch.cash[0] <= 0.0:  # scaled down to the cash available
        buys = min(buys, (cash_pre + sells - sells * rate) / (1.0 + rate))
    return sells + buys


def evaluate_policy(
    policy: Policy,
    features: np.ndarray,
    prices: np.ndarray,
    tradable: np.ndarray | None,
    rows: tuple[int, int],
    env_config: PortfolioEnvConfig,
    bars_per_year: float,
) -> FoldMetrics:
    """One deterministic pass of ``policy`` over the bars ``rows = (start, stop)``.

    A single portfolio starts with ``env_config.initial_equity`` at the close of bar ``start``,
    acts at the closes of bars ``start .. stop - 2`` and is valued at the close of ``stop - 1``
    (``stop - start - 1`` steps; ruin disabled, the other trading rules from ``env_config``).
    ``start`` must be ``>= lookback - 1`` (the features before it may be used as lookback).
    Turnover counts the notional of every fill (see :func:`_traded_notional`).
    """
    start, stop = _check_rows(rows, features.shape[0])
    config = replace(
        env_config,
        window_start=start,
        window_end=stop,
        episode_length=stop - 1 - start,
        ruin_fraction=0.0,
    )
    batch = PortfolioBatch(features, prices, config, n=1, tradable=tradable)
    start = batch.check_start(start)
    steps = stop - 1 - start
    rate = config.cost_rate
    policy.reset(1)
    batch.reset_rows(np.zeros(1, dtype=np.int64), np.array([start], dtype=np.int64))
    equity = np.empty(steps + 1)
    equity[0] = batch.equity[0]
    traded = 0.0
    episode_start = np.ones(1, dtype=bool)
    for k in range(steps):
        actions = np.asarray(policy.act(batch.observe(), episode_start), dtype=np.int64)
        actions = actions.reshape(1, batch.n_tickers)
        if actions.min() < 0 or actions.max() >= N_ACTIONS:
            raise ValueError(f"policy returned actions outside {{0, 1, 2}}: {actions}")
        hold_pre, units_pre = batch.hold[:, 0].copy(), batch.units[:, 0].copy()
        cash_pre, v_pre = float(batch.cash[0]), float(batch.equity[0])
        batch.step(actions)
        traded += _traded_notional(batch, hold_pre, units_pre, cash_pre, v_pre, rate)
        equity[k + 1] = batch.equity[0]
        episode_start[0] = False
    return equity_metrics(equity, traded, bars_per_year)


def buy_and_hold(
    prices: np.ndarray,
    rows: tuple[int, int],
    env_config: PortfolioEnvConfig,
    bars_per_year: float,
) -> FoldMetrics:
    """Equal weights in every ticker bought at the close of ``start`` with all the initial
    equity (paying ``env_config.cost_rate`` once on the notional, so each ticker gets
    ``V_0 / (n_tickers * (1 + rate))``), held to the close of ``stop - 1``. Same equity curve
    convention as :func:`evaluate_policy` (``V_0`` before the purchase)."""
    start, stop = _check_rows(rows, prices.shape[0])
    v0 = env_config.initial_equity
    n_tickers = prices.shape[1]
    per_ticker = v0 / (n_tickers * (1.0 + env_config.cost_rate))
    window = np.asarray(prices[start:stop], dtype=np.float64)
    growth = window[1:] / window[0]  # [steps, ticker]
    equity = np.empty(stop - start)
    equity[0] = v0
    equity[1:] = growth.sum(axis=1) * per_ticker
    return equity_metrics(equity, per_ticker * n_tickers, bars_per_year)
