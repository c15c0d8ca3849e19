"""The trading environment: a long-only multi-ticker portfolio stepping over precomputed arrays.

The ledger (fills, costs, valuation) and the gymnasium env that wraps it share this module on
purpose: the batched VecEnv and the single env must run the same step code bit for bit.

The environment never computes features. It reads two arrays that may be read-only memory maps
shared by many environments (it never writes into them and never copies them):

- ``features: float32[time, ticker, feature]``, already normalised; the features of bar ``t`` use
  bars ``<= t`` only.
- ``prices: float64 | float32[time, ticker]``, close prices; the price of bar ``t`` is its close.

Timing. At step ``t`` the agent sees the features of bar ``t`` (and the portfolio valued at the
close of bar ``t``) and decides; the step's P&L runs from the close of bar ``t`` to the close of
bar ``t + 1``. Where its orders fill is ``config.fill``:

- ``"next_open"`` (what a live order sent after the close can get): at the open of bar ``t + 1``.
  Holdings are first marked from the close of ``t`` to that open, the trades are made there, and
  everything is marked on to the close of ``t + 1``. ``fill_prices`` are then the bars' opens.
- ``"next_vwap"``: the same at bar ``t + 1``'s volume-weighted average price (``fill_prices`` =
  the bars' vwap), a fair price for an order worked over the next hour.
- ``"close"``: at the close of bar ``t``, the price the agent has just seen: impossible live, so
  every result made with it is labelled optimistic.

The last bar of a window has no next price, so the agent never acts there: arriving on it
truncates the episode.

Observation (float32, 1-D, length ``lookback * n_tickers * n_features + n_tickers + 1``)::

    [ features[t - L + 1 : t + 1] as [L, ticker, feature] flattened in C order (oldest bar first),
      weight[ticker]  = holding value / equity        (in [0, 1]),
      cash_fraction   = cash / equity                  (in [0, 1]) ]

Action: ``MultiDiscrete([3] * n_tickers)``, per ticker 0 = sell one unit, 1 = hold, 2 = buy one
unit. The single env rejects other values; the batched step does not check them (speed).

Accounting (all money in float64, in the same currency as ``initial_equity``):

- Each ticker holds an integer number of *units*, from 0 to ``max_units_per_ticker``. A buy adds
  one unit worth ``trade_fraction * V_f`` of notional, where ``V_f`` is the equity before this
  step's trades marked at the fill prices (``V_t``, the equity at the close of bar ``t``, when
  filling at the close). A sell removes one unit, defined as ``1 / units`` of the
  current holding in that ticker (so selling the last unit sells the whole position, leaving no
  dust). Selling a ticker with no units and buying one at the maximum do nothing (long only).
- Costs: ``rate = (commission_bps + slippage_bps) / 10_000`` of traded notional, on buys and
  sells alike (``traded`` holds each step's traded notional per portfolio). Slippage is charged like a fee rather than by moving the fill price (the same to
  first order, and simpler to audit). A sale of notional ``N`` credits ``N - N * rate`` to cash;
  a purchase of notional ``N`` debits ``N + N * rate``. A batch may scale the rate per
  portfolio (:meth:`PortfolioBatch.set_cost_multipliers`, for Monte Carlo cost jitter).
- Sells settle first, so their proceeds can pay for buys in the same step.
- Not enough cash: when the buys of a step would cost more than the cash available, every buy of
  that step is scaled down by the same factor so that exactly all the cash is spent (cash is set
  to exactly 0): "buy what cash allows", without favouring one ticker over another. With no cash
  at all a buy does nothing and adds no unit; a partially filled buy still counts as one unit.
- Holdings are kept as money values; between bars each one grows by ``price[t+1] / price[t]``
  (by ``fill[t+1] / price[t]`` to the fill, then ``price[t+1] / fill[t+1]``, when filling at the
  next bar). Cash earns nothing.
- Reward: ``log(V_{t+1} / V_t)`` where ``V_{t+1}`` is the equity at the close of bar ``t + 1``
  after this step's costs; the sum of rewards over an episode is ``log(V_end / V_start)`` (up to
  rounding).
- Ruin: the episode *terminates* when equity falls below ``ruin_fraction * initial_equity``
  (``ruin_fraction = 0`` disables it). It is *truncated* after ``episode_length`` steps or on
  arriving at the last bar of the window (``window_end - 1``), whichever comes first.

Episodes start at a bar drawn uniformly from ``[lo, hi]`` with ``lo = max(window_start,
lookback - 1)`` and ``hi = max(lo, window_end - 1 - episode_length)``: episodes are full length
whenever the window allows, and a window shorter than one episode starts at its first usable bar.
``reset(options={"start_index": b})`` starts at bar ``b`` instead (deterministic evaluation).

The state of ``n`` portfolios lives in :class:`PortfolioBatch` as arrays of shape ``[n]`` and
``[ticker, n]``. :class:`PortfolioTradingEnv` is a batch of one, and the batched VecEnv
(:mod:`engine.env.vec_env`) is a batch of ``n_envs``: both run the very same NumPy operations in the
same order, which is why they agree bit for bit. C-contiguous ``features`` take a faster
observation path (one gather per step); other layouts work, a little slower.

Index paths (for Monte Carlo): a batch can instead follow ``index_paths: int[n, length]``, where
the bar observed at step ``k`` of portfolio ``i`` is ``index_paths[i, k]``. The P&L of a step is
always the real next-bar return ``price[b + 1] / price[b]`` of the bar ``b`` acted on, so
bootstrapped paths resample (features, next-bar return) pairs. Such an episode runs
``length - 1`` steps, ignores the window and ``episode_length``, and restarts the same path.
``price_paths: int[n, length]`` (with ``index_paths``) decouple the two: step ``k`` observes the
features of bar ``index_paths[i, k]`` but earns the next-bar move (fills, tradable mask, returns)
of bar ``price_paths[i, k]``; the timing-skill test permutes returns against features this way.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from engine.errors import ConfigError, DataError

SELL = 0
HOLD = 1
BUY = 2
N_ACTIONS = 3
FILLS = ("next_open", "next_vwap", "close")
_TINY = np.finfo(np.float64).tiny


@dataclass(frozen=True)
class PortfolioEnvConfig:
    """Rules of the trading environment. Bar indices index the first axis of the arrays.

    Attributes:
        window_start: first bar (inclusive) where episodes may start, e.g. a fold's train start.
        window_end: end of the window (exclusive); ``None`` means the end of the arrays. The bar
            ``window_end - 1`` is the last one whose price is used.
        episode_length: steps per episode before truncation.
        lookback: bars of features in one observation (``L``), the current bar included.
        initial_equity: starting cash, in money units.
        trade_fraction: notional of one unit, as a fraction of equity at the time of the buy.
        max_units_per_ticker: most units held in one ticker.
        commission_bps: commission, basis points of traded notional.
        slippage_bps: slippage, basis points of traded notional (charged like a fee).
        ruin_fraction: terminate when equity < ``ruin_fraction * initial_equity``; 0 disables.
        obs_clip: if set, features in observations are clipped to ``[-obs_clip, obs_clip]`` and
            the observation space gets finite bounds; ``None`` leaves them unbounded.
        fill: where orders fill (module docstring). ``"close"`` here, the ledger's historical
            rule, so arrays without opens work as before; every training config defaults to
            ``"next_open"`` (:class:`engine.config.EnvConfig`).
    """

    window_start: int = 0
    window_end: int | None = None
    episode_length: int = 2048
    lookback: int = 1
    initial_equity: float = 1.0
    trade_fraction: float = 0.1
    max_units_per_ticker: int = 3
    commission_bps: float = 1.0
    slippage_bps: float = 2.0
    ruin_fraction: float = 0.5
    obs_clip: float | None = None
    fill: str = "close"

    def __post_init__(self) -> None:
        checks = [
            (self.window_start >= 0, "window_start must be >= 0"),
            (self.episode_length >= 1, "episode_length must be >= 1"),
            (self.lookback >= 1, "lookback must be >= 1"),
            (self.initial_equity > 0, "initial_equity must be > 0"),
            (0 < self.trade_fraction <= 1, "trade_fraction must be in (0, 1]"),
            (self.max_units_per_ticker >= 1, "max_units_per_ticker must be >= 1"),
            (self.commission_bps >= 0, "commission_bps must be >= 0"),
            (self.slippage_bps >= 0, "slippage_bps must be >= 0"),
            (0 <= self.ruin_fraction < 1, "ruin_fraction must be in [0, 1)"),
            (self.obs_clip is None or self.obs_clip > 0, "obs_clip must be > 0 or None"),
            (self.fill in FILLS, f"fill must be one of {', '.join(FILLS)}"),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(f"environment config: {message}; fix the env section")

    @property
    def fills_next_bar(self) -> bool:
        """True when orders fill at the next bar (``next_open`` / ``next_vwap``)."""
        return self.fill != "close"

    @property
    def cost_rate(self) -> float:
        """Cost per unit of traded notional: ``(commission_bps + slippage_bps) / 10_000``."""
        return (self.commission_bps + self.slippage_bps) * 1e-4


def _check_market_arrays(features: np.ndarray, prices: np.ndarray) -> None:
    """Reject arrays the env cannot use, with a message that says what to do."""
    if not isinstance(features, np.ndarray) or features.ndim != 3:
        raise DataError("features must be a float32 array [time, ticker, feature]")
    if features.dtype != np.float32:
        raise DataError(
            f"features must be float32, got {features.dtype}: cast once with "
            "features.astype(np.float32) before building environments"
        )
    if not isinstance(prices, np.ndarray) or prices.ndim != 2:
        raise DataError("prices must be a float array [time, ticker]")
    if prices.dtype not in (np.float32, np.float64):
        raise DataError(f"prices must be float64 or float32, got {prices.dtype}")
    if prices.shape != features.shape[:2]:
        raise DataError(
            f"prices {prices.shape} and features {features.shape} disagree on [time, ticker]"
        )
    if prices.shape[0] < 2:
        raise DataError("prices need at least 2 bars (a step needs a next price)")
    # A zero, negative or missing price would turn the P&L into inf/NaN silently.
    if not (np.isfinite(prices).all() and (prices > 0).all()):
        raise DataError("prices must be finite and > 0 everywhere: fill or drop the bad bars")


class PortfolioBatch:
    """State and dynamics of ``n`` independent portfolios over shared read-only arrays.

    The step is written once, with NumPy operations over all ``n`` portfolios, and serves both
    the single env (``n = 1``) and the batched VecEnv, so the two produce identical floating
    point results. Buffers are preallocated: a step allocates only a few ``[n]`` temporaries,
    and ``observe`` the observation array it returns.

    Layout: per-ticker state is stored ticker-major, ``[ticker, n]``, C-contiguous. NumPy then
    runs every operation as long flat loops over ``n``: broadcasting a per-portfolio ``[n]``
    value and summing over tickers cost about a quarter of what they cost on ``[n, ticker]``,
    where NumPy falls back to one 15-element loop per portfolio.

    Args:
        features: float32[time, ticker, feature], read only (may be a memory map).
        prices: float64 | float32[time, ticker], close prices > 0, read only.
        config: the trading rules.
        n: number of portfolios.
        index_paths: optional int[n, length >= 2] of bar indices (see the module docstring).
        tradable: optional bool[time, ticker] (``FeatureSet.tradable``): where False the ticker's
            bar is a carried-forward stale one, and an order that would fill on it (bar ``t + 1``
            when filling at the next bar, else bar ``t``) is treated as hold, so the agent never
            trades at a price that did not print.
        fill_prices: float[time, ticker], the price of each bar that ``config.fill`` names (its
            open or vwap); required unless ``config.fill == "close"``. A bar whose fill price is
            missing (NaN) or not positive cannot be traded at, like a stale one.
        price_paths: optional int[n, length] with ``index_paths`` (module docstring).
    """

    def __init__(
        self,
        features: np.ndarray,
        prices: np.ndarray,
        config: PortfolioEnvConfig,
        n: int,
        index_paths: np.ndarray | None = None,
        tradable: np.ndarray | None = None,
        fill_prices: np.ndarray | None = None,
        price_paths: np.ndarray | None = None,
    ) -> None:
        _check_market_arrays(features, prices)
        if n < 1:
            raise ConfigError(f"the number of environments must be >= 1, got {n}")
        self.features = features
        self.prices = prices
        self.config = config
        self.n = n
        n_time, n_tickers, n_features = features.shape
        self.n_time, self.n_tickers, self.n_features = n_time, n_tickers, n_features

        window_end = n_time if config.window_end is None else config.window_end
        if window_end > n_time:
            raise ConfigError(f"window_end {window_end} is past the data end ({n_time} bars)")
        self.window_end = window_end
        # First bar with a full lookback inside the data (features before the window are the
        # past, so a lookback may reach before window_start).
        self.start_lo = max(config.window_start, config.lookback - 1)
        if window_end - 1 <= self.start_lo:
            raise ConfigError(
                f"window [{config.window_start}, {window_end}) leaves no step with lookback "
                f"{config.lookback}: widen the window"
            )
        self.start_hi = max(self.start_lo, window_end - 1 - config.episode_length)

        self.n_feature_values = config.lookback * n_tickers * n_features
        self.obs_size = self.n_feature_values + n_tickers + 1
        self._setup_feature_rows()

        self.bar = np.zeros(n, dtype=np.int64)  # current (observed) bar index
        self.pbar = self.bar  # bar whose next-bar move the step earns (own array on price paths)
        self.index_paths: np.ndarray | None = None
        self.price_paths: np.ndarray | None = None
        self.set_index_paths(index_paths, price_paths)

        if tradable is not None and tradable.shape != (n_time, n_tickers):
            raise ConfigError(
                f"tradable must have shape [time={n_time}, ticker={n_tickers}], "
                f"got {tradable.shape}"
            )
        self._fill: np.ndarray | None = None
        if config.fills_next_bar:
            tradable = self._setup_fill_prices(fill_prices, tradable)
        self._tradable: np.ndarray | None = None
        if tradable is not None and not tradable.all():  # all-True masks cost nothing per step
            # 0.0/1.0 float64, multiplied into the orders (one copy per batch, not per env)
            self._tradable = np.ascontiguousarray(tradable, dtype=np.float64)
            self._trade_rows = np.zeros((n, n_tickers))
            self._trade_mask = np.zeros((n_tickers, n))

        # Cost rate: the config's scalar, or one rate per portfolio (set_cost_multipliers).
        self._rate: float | np.ndarray = config.cost_rate
        self._one_plus_rate: float | np.ndarray = 1.0 + config.cost_rate
        self.cost_multipliers: np.ndarray | None = None
        self._ruin_level = config.ruin_fraction * config.initial_equity
        self._max_units = float(config.max_units_per_ticker)

        shape = (n_tickers, n)
        # State, money in float64. Units are integer counts kept in float64 and the order masks
        # are 0.0/1.0 floats: mixed bool/int/float operations make NumPy cast through buffers.
        self.t = np.zeros(n, dtype=np.int64)  # steps taken in the episode
        self.stop_t = np.ones(n, dtype=np.int64)  # t at which the episode truncates
        # book[:ticker] holds the value of each holding at the bar's close, book[ticker] the
        # cash: one sum over its rows is the equity, one divide gives the observed weights.
        self.book = np.zeros((n_tickers + 1, n))
        self.hold = self.book[:n_tickers]  # [ticker, n] view, contiguous
        self.cash = self.book[n_tickers]  # [n] view, contiguous
        self.units = np.zeros(shape)  # [ticker, n]
        self.equity = np.zeros(n)  # cash + holdings at the current bar's close
        self.costs = np.zeros(n)  # costs paid in this episode
        self.traded = np.zeros(n)  # notional traded (sells + buys) by the last step
        self.price_now = np.zeros(shape, dtype=prices.dtype)  # [ticker, n] prices[bar]
        self.started = False

        # Scratch buffers, reused every step.
        self._order = np.zeros(shape)
        self._sell = np.zeros(shape)
        self._buy = np.zeros(shape)
        self._traded = np.zeros(shape)
        self._tmp = np.zeros(shape)
        self._ratio = np.zeros(shape)
        self._price_next = np.zeros(shape, dtype=prices.dtype)
        self._price_fill = np.zeros(shape)
        self._price_rows = np.zeros((n, n_tickers), dtype=prices.dtype)
        self._weights = np.zeros((n_tickers + 1, n))
        self._next_bar = np.zeros(n, dtype=np.int64)
        self._v_pre = np.zeros(n)
        self._n_buy = np.zeros(n)
        self._notional = np.zeros(n)
        self._fee = np.zeros(n)
        self._unit = np.zeros(n)
        self._need = np.zeros(n)
        self._scale = np.zeros(n)
        self._filled = np.zeros(n)
        self._short = np.zeros(n, dtype=bool)
        self._reward = np.zeros(n)
        self._terminated = np.zeros(n, dtype=bool)
        self._truncated = np.zeros(n, dtype=bool)

    def _setup_fill_prices(
        self, fill_prices: np.ndarray | None, tradable: np.ndarray | None
    ) -> np.ndarray | None:
        """Check the next-bar fill prices; returns the tradable mask with unfillable bars off.

        A bar without a usable fill price (NaN, or <= 0) is marked through at its close (the
        ratio then cancels out) and cannot be traded at."""
        n_time, n_tickers = self.n_time, self.n_tickers
        name = "opens" if self.config.fill == "next_open" else "vwaps"
        if fill_prices is None:
            raise ConfigError(
                f"env.fill {self.config.fill} needs the bars' {name} (fill_prices); "
                "pass them or set env.fill: close (optimistic)"
            )
        if not isinstance(fill_prices, np.ndarray) or fill_prices.shape != (n_time, n_tickers):
            raise DataError(
                f"fill prices ({name}) must be float[time={n_time}, ticker={n_tickers}], "
                f"got {getattr(fill_prices, 'shape', type(fill_prices))}"
            )
        ok = np.isfinite(fill_prices) & (fill_prices > 0)
        if ok.all():
            self._fill = np.asarray(fill_prices, dtype=np.float64)
            return tradable
        self._fill = np.where(ok, fill_prices, self.prices).astype(np.float64)
        return ok if tradable is None else (ok & tradable)

    def _setup_feature_rows(self) -> None:
        """Prepare the observation gather: one indexing operation builds the observation array.

        For C-contiguous features, ``_padded_rows`` is a read-only view whose row ``r`` is the
        ``obs_size`` values starting at ``features[r]`` (flattened): the ``L`` bars of features
        of an observation starting at ``r``, then ``n_tickers + 1`` values of the following bar
        that ``observe`` always overwrites with the portfolio state before returning. The
        rows overlap, so the view costs no memory, and gathering whole observation rows avoids
        a second copy through a buffer. The few last bars, whose padded row would run past the
        array, are gathered the plain way.
        """
        features = self.features
        lookback = self.config.lookback
        per_bar = self.n_tickers * self.n_features
        self._padded_rows: np.ndarray | None = None
        self._fast_bar_max = -1  # observations at bars above this take the plain path
        if features.flags.c_contiguous:
            n_rows = (features.size - self.obs_size) // per_bar + 1
            if n_rows > 0:
                flat = features.reshape(-1)
                item = flat.itemsize
                self._padded_rows = np.lib.stride_tricks.as_strided(
                    flat,
                    shape=(n_rows, self.obs_size),
                    strides=(per_bar * item, item),
                    writeable=False,
                )
                self._fast_bar_max = n_rows - 1 + (lookback - 1)
        self._lookback_offsets = np.arange(-(lookback - 1), 1, dtype=np.int64)
        self._feat = np.zeros((0,), dtype=np.float32)  # plain-path buffer, grown on demand

    # ---------------------------------------------------------------- spaces
    def observation_space(self) -> spaces.Box:
        """The float32 Box of one observation (see the module docstring for the layout)."""
        low = np.zeros(self.obs_size, dtype=np.float32)
        high = np.ones(self.obs_size, dtype=np.float32)
        bound = np.inf if self.config.obs_clip is None else self.config.obs_clip
        low[: self.n_feature_values] = -bound
        high[: self.n_feature_values] = bound
        return spaces.Box(low=low, high=high, dtype=np.float32)

    def action_space(self) -> spaces.MultiDiscrete:
        """Per ticker: 0 sell one unit, 1 hold, 2 buy one unit."""
        return spaces.MultiDiscrete([N_ACTIONS] * self.n_tickers)

    # ---------------------------------------------------------------- starts
    def draw_start(self, rng: np.random.Generator) -> int:
        """A random start bar for a new episode, uniform in ``[start_lo, start_hi]``."""
        # Always one draw, even when lo == hi, so RNG streams never depend on the window.
        return int(rng.integers(self.start_lo, self.start_hi + 1))

    def check_start(self, start: int) -> int:
        """Validate an explicit start bar; returns it as an int."""
        start = int(start)
        if not self.start_lo <= start <= self.window_end - 2:
            raise ConfigError(
                f"start_index {start} is outside [{self.start_lo}, {self.window_end - 2}], the "
                "bars of the window where a step is possible"
            )
        return start

    def set_index_paths(
        self, index_paths: np.ndarray | None, price_paths: np.ndarray | None = None
    ) -> None:
        """Follow ``index_paths: int[n, length]`` from the next reset on (``None``: random starts),
        earning the moves of ``price_paths`` (same shape; ``None``: of the bars observed)."""
        if index_paths is None:
            if price_paths is not None:
                raise ConfigError("price_paths need index_paths")
            self.index_paths = self.price_paths = None
            self.pbar = self.bar
            self._last_obs_bar = self.window_end - 1
            return
        paths = np.ascontiguousarray(index_paths, dtype=np.int64)
        if paths.ndim != 2 or paths.shape[0] != self.n or paths.shape[1] < 2:
            raise ConfigError(
                f"index_paths must have shape [n_envs={self.n}, length >= 2], got {paths.shape}"
            )
        lo = self.config.lookback - 1
        # Bars acted on need a next price; the last bar of a path is only observed.
        if paths.min() < lo or paths[:, :-1].max() > self.n_time - 2 or paths.max() >= self.n_time:
            raise ConfigError(
                f"index_paths must lie in [{lo}, {self.n_time - 2}] ([{lo}, {self.n_time - 1}] "
                "in the last column)"
            )
        self.index_paths = paths
        self._paths_flat = paths.reshape(-1)
        self._path_rows = np.arange(self.n, dtype=np.int64) * paths.shape[1]
        self._last_obs_bar = int(paths.max())
        self.price_paths = None
        self.pbar = self.bar
        if price_paths is not None:
            moves = np.ascontiguousarray(price_paths, dtype=np.int64)
            if moves.shape != paths.shape:
                raise ConfigError(
                    f"price_paths must have the shape of index_paths {paths.shape}, "
                    f"got {moves.shape}"
                )
            if moves.min() < 0 or moves[:, :-1].max() > self.n_time - 2:
                raise ConfigError(f"price_paths must lie in [0, {self.n_time - 2}]")
            self.price_paths = moves
            self._moves_flat = np.clip(moves, 0, self.n_time - 1).reshape(-1)
            self.pbar = np.zeros(self.n, dtype=np.int64)

    def set_cost_rates(self, rates: np.ndarray) -> None:
        """Charge portfolio ``i`` a cost rate of ``rates[i]`` (a fraction of traded notional)
        from the next step on, whatever the config says: the cost-sensitivity table."""
        base = self.config.cost_rate
        rates = np.asarray(rates, dtype=np.float64)
        if base > 0:
            self.set_cost_multipliers(rates / base)
            self._rate = rates.copy()  # exact, not base * (rate / base)
            self._one_plus_rate = 1.0 + self._rate
            return
        if rates.shape != (self.n,) or not (np.isfinite(rates).all() and (rates >= 0).all()):
            raise ConfigError(f"cost rates must be {self.n} finite values >= 0")
        self.cost_multipliers = None
        self._rate = rates.copy()
        self._one_plus_rate = 1.0 + self._rate

    def set_cost_multipliers(self, multipliers: np.ndarray | None) -> None:
        """Charge portfolio ``i`` a cost rate of ``config.cost_rate * multipliers[i]`` from the
        next step on (Monte Carlo cost jitter); ``None`` goes back to the config's scalar rate.

        ``multipliers``: float64[n], finite and >= 0, copied. With every multiplier 1.0 the
        results equal the scalar rate's bit for bit (``x * 1.0 == x``, and the step broadcasts
        ``[n]`` rates exactly where it used the scalar).
        """
        if multipliers is None:
            self._rate = self.config.cost_rate
            self._one_plus_rate = 1.0 + self.config.cost_rate
            self.cost_multipliers = None
            return
        mult = np.array(multipliers, dtype=np.float64)  # a copy: the caller may reuse theirs
        if mult.shape != (self.n,) or not (np.isfinite(mult).all() and (mult >= 0).all()):
            raise ConfigError(
                f"cost multipliers must be {self.n} finite values >= 0, got shape {mult.shape}"
            )
        self.cost_multipliers = mult
        self._rate = self.config.cost_rate * mult
        self._one_plus_rate = 1.0 + self._rate

    # ---------------------------------------------------------------- dynamics
    def reset_rows(self, rows: np.ndarray, starts: np.ndarray | None) -> None:
        """Start new episodes for portfolios ``rows`` at bars ``starts`` (ignored on paths)."""
        if self.index_paths is not None:
            starts = self.index_paths[rows, 0]
            self.stop_t[rows] = self.index_paths.shape[1] - 1
            if self.price_paths is not None:
                self.pbar[rows] = self.price_paths[rows, 0]
        else:
            assert starts is not None
            self.stop_t[rows] = np.minimum(self.config.episode_length, self.window_end - 1 - starts)
        self.bar[rows] = starts
        self.t[rows] = 0
        self.book[:, rows] = 0.0
        self.cash[rows] = self.config.initial_equity
        self.units[:, rows] = 0.0
        self.equity[rows] = self.config.initial_equity
        self.costs[rows] = 0.0
        self.traded[rows] = 0.0
        self.price_now[:, rows] = self.prices[self.pbar[rows]].T
        self.started = True

    def step(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Apply ``actions: int[n, ticker]`` (values in {0, 1, 2}, unchecked) at the current
        bars and move every portfolio to its next bar.

        Returns ``(reward float64[n], terminated bool[n], truncated bool[n])``: internal buffers
        that the next step overwrites (copy them to keep them).
        """
        hold, units, cash = self.hold, self.units, self.cash
        order, sell, buy, traded, tmp = self._order, self._sell, self._buy, self._traded, self._tmp
        notional, fee, unit, need, scale = (
            self._notional,
            self._fee,
            self._unit,
            self._need,
            self._scale,
        )
        rate, costs = self._rate, self.costs
        # Equity at this bar becomes v_pre; the buffers swap instead of copying.
        v_pre = self.equity
        equity = self.equity = self._v_pre
        self._v_pre = v_pre

        pbar, next_bar = self.pbar, self._next_bar
        np.add(pbar, 1, out=next_bar)
        fill_next = self._fill is not None
        # order: -1.0 sell, 0.0 hold, +1.0 buy, per [ticker, n].
        np.copyto(order, actions.T, casting="unsafe")  # one cast; arithmetic stays in float64
        np.subtract(order, 1.0, out=order)
        if self._tradable is not None:  # stale (carried-forward) fill bars: no trade
            fill_bar = next_bar if fill_next else pbar
            np.take(self._tradable, fill_bar, axis=0, out=self._trade_rows, mode="clip")
            np.copyto(self._trade_mask, self._trade_rows.T)
            np.multiply(order, self._trade_mask, out=order)
        v_unit = v_pre
        if fill_next:
            # Mark the holdings from this close to the next bar's fill price: trades happen there.
            assert self._fill is not None
            np.take(self._fill, next_bar, axis=0, out=self._price_rows, mode="clip")
            np.copyto(self._price_fill, self._price_rows.T)
            np.divide(self._price_fill, self.price_now, out=self._ratio, dtype=np.float64)
            np.multiply(hold, self._ratio, out=hold)
            _sum_over_tickers(self.book, out=equity)  # equity at the fill, before trades
            v_unit = equity
        # sell = 1.0 where asked and something is held: max(min(units, -order), 0)
        np.negative(order, out=tmp)
        np.minimum(units, tmp, out=sell)
        np.maximum(sell, 0.0, out=sell)
        # buy = 1.0 where asked and there is room: max(min(max_units - units, order), 0)
        np.subtract(self._max_units, units, out=tmp)
        np.minimum(tmp, order, out=buy)
        np.maximum(buy, 0.0, out=buy)

        # Sells settle first, so their proceeds can pay for this step's buys.
        np.maximum(units, 1.0, out=tmp)
        np.divide(hold, tmp, out=traded)  # one unit = 1/units of the holding (all of the last)
        np.multiply(traded, sell, out=traded)
        np.subtract(hold, traded, out=hold)
        np.subtract(units, sell, out=units)
        _sum_over_tickers(traded, out=notional)
        np.copyto(self.traded, notional)
        np.multiply(notional, rate, out=fee)
        np.add(costs, fee, out=costs)
        np.subtract(notional, fee, out=notional)
        np.add(cash, notional, out=cash)

        # Buys: one unit each, all scaled by the same factor when cash cannot pay for them all.
        _sum_over_tickers(buy, out=self._n_buy)
        np.multiply(v_unit, self.config.trade_fraction, out=unit)
        np.multiply(self._n_buy, unit, out=need)
        np.multiply(need, self._one_plus_rate, out=need)
        np.less(cash, need, out=self._short)
        # scale = min(1, cash / need), as min(cash, need) / need: exactly 1.0 when cash suffices,
        # and no cash / tiny overflow when nothing is bought (need = 0; the floor keeps 0/0 out).
        np.maximum(need, _TINY, out=self._filled)
        np.minimum(cash, need, out=scale)
        np.divide(scale, self._filled, out=scale)
        np.multiply(unit, scale, out=unit)
        np.sign(unit, out=self._filled)  # 0.0 with no cash at all: no unit is added
        np.multiply(buy, self._filled, out=buy)
        np.add(units, buy, out=units)
        np.multiply(buy, unit, out=traded)
        np.add(hold, traded, out=hold)
        np.multiply(self._n_buy, unit, out=notional)
        np.add(self.traded, notional, out=self.traded)
        np.multiply(notional, rate, out=fee)
        np.add(costs, fee, out=costs)
        np.add(notional, fee, out=notional)
        np.subtract(cash, notional, out=cash)
        # A scaled buy spends exactly all the cash; rounding must not leave -1e-17 behind.
        np.copyto(cash, 0.0, where=self._short)

        # Mark to the next close: holdings grow by the bar's price ratio (in float64), from the
        # fill price when the trades were made at the next bar.
        bar = self.bar
        # mode="clip" never clips here (bars are validated) but, unlike "raise", lets np.take
        # write straight into `out` without a temporary copy.
        np.take(self.prices, next_bar, axis=0, out=self._price_rows, mode="clip")
        np.copyto(self._price_next, self._price_rows.T)
        base = self._price_fill if fill_next else self.price_now
        np.divide(self._price_next, base, out=self._ratio, dtype=np.float64)
        np.multiply(hold, self._ratio, out=hold)
        _sum_over_tickers(self.book, out=equity)  # holdings, then cash

        reward = self._reward
        np.divide(equity, v_pre, out=reward)
        np.log(reward, out=reward)

        np.add(self.t, 1, out=self.t)
        if self.index_paths is None:
            np.copyto(bar, next_bar)
            # The next price is the current price of the next step: swap instead of gathering.
            self.price_now, self._price_next = self._price_next, self.price_now
        else:
            np.take(self._paths_flat, self._path_rows + self.t, out=bar, mode="clip")
            if self.price_paths is not None:
                np.take(self._moves_flat, self._path_rows + self.t, out=self.pbar, mode="clip")
            np.take(self.prices, self.pbar, axis=0, out=self._price_rows, mode="clip")
            np.copyto(self.price_now, self._price_rows.T)
        np.less(equity, self._ruin_level, out=self._terminated)
        np.greater_equal(self.t, self.stop_t, out=self._truncated)
        return reward, self._terminated, self._truncated

    def observe(self, rows: np.ndarray | None = None) -> np.ndarray:
        """Fresh observations ``float32[len(rows), obs_size]`` of portfolios ``rows`` (all if
        ``None``), laid out as in the module docstring."""
        if rows is None:
            bar, book, equity, weights = self.bar, self.book, self.equity, self._weights
        else:
            bar, book, equity = self.bar[rows], self.book[:, rows], self.equity[rows]
            weights = np.empty_like(book)
        k, lookback = self.n_feature_values, self.config.lookback
        if self._padded_rows is not None:
            first = bar if lookback == 1 else bar - (lookback - 1)
            late = None
            if self._last_obs_bar > self._fast_bar_max:
                late = np.flatnonzero(bar > self._fast_bar_max)
                first = np.minimum(first, len(self._padded_rows) - 1)
            # Fancy indexing (not np.take, which would first copy the whole strided view into a
            # contiguous array) gathers whole observation rows into a new array in one pass.
            out = self._padded_rows[first]
            if late is not None and late.size:
                out[late, :k] = self._gather_features(bar[late])
        else:
            out = np.empty((len(bar), self.obs_size), dtype=np.float32)
            out[:, :k] = self._gather_features(bar)
        if self.config.obs_clip is not None:
            np.clip(out[:, :k], -self.config.obs_clip, self.config.obs_clip, out=out[:, :k])
        # Weights and cash fraction overwrite the last n_tickers + 1 columns (which held
        # padding from the next bar).
        np.divide(book, equity, out=weights)
        np.copyto(out[:, k:], weights.T, casting="same_kind")
        return out

    def _gather_features(self, bar: np.ndarray) -> np.ndarray:
        """features for bars ``bar``, as float32[len(bar), L * ticker * feature] (a buffer)."""
        size = len(bar) * self.n_feature_values
        if self._feat.size < size:
            self._feat = np.empty(size, dtype=np.float32)
        lookback = self.config.lookback
        feat = self._feat[:size].reshape(len(bar), lookback, self.n_tickers, self.n_features)
        index = bar[:, None] + self._lookback_offsets
        np.take(self.features, index, axis=0, out=feat, mode="clip")
        return feat.reshape(len(bar), self.n_feature_values)


def _sum_over_tickers(x: np.ndarray, out: np.ndarray) -> None:
    """``out[i] = ((x[0, i] + x[1, i]) + x[2, i]) + ...`` for ``x: float64[rows, n]``.

    The summation order must not depend on ``n``, or a batch of one would round differently
    from a batch of 256. For ``n >= 2`` NumPy's reduction over axis 0 adds row after row, in
    this order; for ``n == 1`` it would switch to pairwise summation, so that case is spelled
    out with Python floats (IEEE doubles too, and faster than NumPy calls on one element). The
    tests compare the two bit for bit.
    """
    if x.shape[1] > 1:
        np.add.reduce(x, axis=0, out=out)
        return
    values = x.ravel().tolist()
    total = values[0]
    for value in values[1:]:
        total += value
    out[0] = total


class PortfolioTradingEnv(gym.Env[np.ndarray, np.ndarray]):
    """A long-only portfolio of ``n_tickers`` trading hourly bars; rules in the module docstring.

    Args:
        features: float32[time, ticker, feature], normalised, read only (may be a memory map).
        prices: float64 | float32[time, ticker], close prices > 0, read only.
        config: trading rules; defaults to :class:`PortfolioEnvConfig()`.
        tradable, fill_prices: as for :class:`PortfolioBatch`.

    ``reset(options=...)`` accepts ``{"start_index": bar}`` for a deterministic start and
    ``{"index_path": int[length]}`` to follow a bar index path from then on (``None`` clears it).
    ``info`` has ``equity``, ``cash`` (money), ``bar`` (index of the observed bar) and ``costs``
    (paid in this episode, money).
    """

    metadata: dict[str, Any] = {"render_modes": []}

    def __init__(
        self,
        features: np.ndarray,
        prices: np.ndarray,
        config: PortfolioEnvConfig | None = None,
        tradable: np.ndarray | None = None,
        fill_prices: np.ndarray | None = None,
    ) -> None:
        super().__init__()
        self.config = config or PortfolioEnvConfig()
        self._batch = PortfolioBatch(
            features, prices, self.config, n=1, tradable=tradable, fill_prices=fill_prices
        )
        self.observation_space = self._batch.observation_space()
        self.action_space = self._batch.action_space()
        self.render_mode = None
        self._rows = np.zeros(1, dtype=np.int64)
        self._needs_reset = True

    @property
    def batch(self) -> PortfolioBatch:
        """The underlying batch of one portfolio (state arrays ``[1]`` and ``[ticker, 1]``)."""
        return self._batch

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        options = options or {}
        batch = self._batch
        if "index_path" in options:
            path = options["index_path"]
            batch.set_index_paths(None if path is None else np.asarray(path).reshape(1, -1))
        if batch.index_paths is not None:
            starts = None
        elif options.get("start_index") is not None:
            starts = np.array([batch.check_start(options["start_index"])], dtype=np.int64)
        else:
            starts = np.array([batch.draw_start(self.np_random)], dtype=np.int64)
        batch.reset_rows(self._rows, starts)
        self._needs_reset = False
        return self._observe(), self._info()

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        if self._needs_reset:
            raise RuntimeError("PortfolioTradingEnv.step() called before reset() or after done")
        actions = np.asarray(action)
        if actions.shape != (self._batch.n_tickers,) or actions.min() < 0 or actions.max() > 2:
            raise ValueError(
                f"action must be {self._batch.n_tickers} integers in {{0, 1, 2}}, got {action!r}"
            )
        reward, terminated, truncated = self._batch.step(actions.reshape(1, -1))
        term, trunc = bool(terminated[0]), bool(truncated[0])
        self._needs_reset = term or trunc
        return self._observe(), float(reward[0]), term, trunc, self._info()

    def _observe(self) -> np.ndarray:
        return self._batch.observe()[0]  # a fresh array: callers may keep observations

    def _info(self) -> dict[str, Any]:
        b = self._batch
        return {
            "equity": float(b.equity[0]),
            "cash": float(b.cash[0]),
            "bar": int(b.bar[0]),
            "costs": float(b.costs[0]),
        }
