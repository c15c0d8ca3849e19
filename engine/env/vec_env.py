"""A stable-baselines3 VecEnv that steps ``n_envs`` portfolios at once with NumPy, in one process.

All environments share the same read-only ``features`` and ``prices`` arrays (possibly memory
maps); per-env state is a few ``[n_envs]`` and ``[ticker, n_envs]`` arrays in
:class:`engine.env.portfolio.PortfolioBatch`, the same code the single
:class:`engine.env.portfolio.PortfolioTradingEnv` runs with ``n = 1``. With the same seeds and actions, env ``i`` of this VecEnv produces bit-identical observations, rewards and
dones to a single env seeded like SB3 seeds env ``i`` (``seed + i``), across auto-resets too.

Returned arrays are fresh every step (SB3's PPO keeps the previous observation, and torch may
share its memory, while the next step runs), so nothing returned is overwritten later. Rewards
are float32 like SB3's ``DummyVecEnv``; infos of envs that are not done are shared empty dicts
(treat them as read only: they are checked and replaced if anyone writes into them).
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.utils import seeding
from stable_baselines3.common.vec_env.base_vec_env import (
    VecEnv,
    VecEnvIndices,
    VecEnvObs,
    VecEnvStepReturn,
)

from engine.env.portfolio import PortfolioBatch, PortfolioEnvConfig

# Per-env state that get_attr reads from the batch arrays (and set_attr refuses to write).
_PER_ENV_STATE = ("bar", "t", "cash", "equity", "costs")
# Attributes the batch was built from: changing them needs a new VecEnv.
_BUILT_FROM = ("batch", "config", "num_envs", "observation_space", "action_space")


class BatchedPortfolioVecEnv(VecEnv):
    """``n_envs`` copies of :class:`engine.env.portfolio.PortfolioTradingEnv` stepped as one NumPy batch.

    Args:
        features: float32[time, ticker, feature], read only, shared by all envs.
        prices: float64 | float32[time, ticker], close prices > 0, read only, shared.
        n_envs: number of environments.
        config: trading rules (:class:`engine.env.portfolio.PortfolioEnvConfig`), the same for all envs.
        index_paths: optional int[n_envs, length]: env ``i`` observes bar ``index_paths[i, k]``
            at step ``k`` (Monte Carlo on bootstrapped paths); episodes then run ``length - 1``
            steps and restart the same path, and ``start_index`` options are ignored.
        seed: if given, ``seed(seed)`` is applied: env ``i`` gets ``seed + i`` at the first reset.
        tradable, fill_prices: as for :class:`engine.env.portfolio.PortfolioBatch` (stale bars;
            the opens or vwaps that ``config.fill`` needs).

    Auto-reset: an env that is done is reset within the same ``step_wait``; its last observation
    is in ``infos[i]["terminal_observation"]``, with ``"TimeLimit.truncated"`` (truncated and not
    terminated), ``"final_equity"`` and ``"episode_costs"`` (money). Auto-resets draw random
    starts; ``set_options({"start_index": b})`` or a list of such dicts applies to the next
    ``reset()`` only.

    ``step_wait_s``: wall seconds spent in ``step_wait`` so far (``time.perf_counter``), the env
    stepping part of a rollout (:class:`engine.train.callback.MemberCallback` reads it).
    """

    def __init__(
        self,
        features: np.ndarray,
        prices: np.ndarray,
        n_envs: int,
        config: PortfolioEnvConfig | None = None,
        index_paths: np.ndarray | None = None,
        seed: int | None = None,
        tradable: np.ndarray | None = None,
        fill_prices: np.ndarray | None = None,
    ) -> None:
        self.config = config or PortfolioEnvConfig()
        self.batch = PortfolioBatch(
            features,
            prices,
            self.config,
            n=n_envs,
            index_paths=index_paths,
            tradable=tradable,
            fill_prices=fill_prices,
        )
        self.render_mode = None  # read by VecEnv.__init__ through get_attr
        super().__init__(n_envs, self.batch.observation_space(), self.batch.action_space())
        self._rngs: list[np.random.Generator | None] = [None] * n_envs
        self._all_rows = np.arange(n_envs, dtype=np.int64)
        self._actions: np.ndarray | None = None
        # One distinct empty dict per env, handed out again every step for envs that are not
        # done: building 256 new dicts costs ~12 us a step, checking and reusing these ~3 us.
        self._blank_infos: list[dict[str, Any]] = [{} for _ in range(n_envs)]
        # Two clock reads a step (~0.1 us): cheap enough to leave on always.
        self.step_wait_s = 0.0
        if seed is not None:
            self.seed(seed)

    # ---------------------------------------------------------------- VecEnv API
    def reset(self) -> VecEnvObs:
        """Start a new episode in every env, using pending ``seed()`` seeds and options."""
        batch = self.batch
        starts = np.zeros(self.num_envs, dtype=np.int64)
        for i in range(self.num_envs):
            if self._seeds[i] is not None:
                self._rngs[i] = seeding.np_random(self._seeds[i])[0]
            rng = self._rng(i)
            start = self._options[i].get("start_index")
            if batch.index_paths is None:
                starts[i] = batch.draw_start(rng) if start is None else batch.check_start(start)
        batch.reset_rows(self._all_rows, None if batch.index_paths is not None else starts)
        self._reset_seeds()
        self._reset_options()
        self.reset_infos = [{} for _ in range(self.num_envs)]
        return batch.observe()

    def step_async(self, actions: np.ndarray) -> None:
        """Store ``actions: int[n_envs, ticker]`` (0 sell, 1 hold, 2 buy) for ``step_wait``."""
        self._actions = actions

    def step_wait(self) -> VecEnvStepReturn:
        """Step every env; returns fresh ``(obs f32[n, obs], rewards f32[n], dones bool[n],
        infos)``. Its wall time is added to ``step_wait_s``."""
        started = time.perf_counter()
        batch = self.batch
        if not batch.started or self._actions is None:
            raise RuntimeError("BatchedPortfolioVecEnv: call reset() then step_async() first")
        actions = np.asarray(self._actions).reshape(self.num_envs, batch.n_tickers)
        self._actions = None
        reward, terminated, truncated = batch.step(actions)
        rewards = reward.astype(np.float32)
        dones = terminated | truncated
        obs = batch.observe()

        blank = self._blank_infos
        if any(blank):  # someone wrote into a shared info: hand out clean ones from now on
            blank = self._blank_infos = [{} for _ in range(self.num_envs)]
        infos = list(blank)
        if dones.any():
            rows = np.flatnonzero(dones)
            for i in rows.tolist():
                infos[i] = {
                    "terminal_observation": obs[i].copy(),
                    "TimeLimit.truncated": bool(truncated[i] and not terminated[i]),
                    "final_equity": float(batch.equity[i]),
                    "episode_costs": float(batch.costs[i]),
                }
            self._auto_reset(rows)
            obs[rows] = batch.observe(rows)
        self.step_wait_s += time.perf_counter() - started
        return obs, rewards, dones, infos

    def _auto_reset(self, rows: np.ndarray) -> None:
        batch = self.batch
        if batch.index_paths is not None:
            batch.reset_rows(rows, None)
            return
        starts = np.array([batch.draw_start(self._rng(i)) for i in rows.tolist()], dtype=np.int64)
        batch.reset_rows(rows, starts)

    def _rng(self, i: int) -> np.random.Generator:
        rng = self._rngs[i]
        if rng is None:  # like gymnasium's lazy Env.np_random: fresh OS entropy
            rng = self._rngs[i] = seeding.np_random(None)[0]
        return rng

    def close(self) -> None:
        """Nothing to release: the arrays belong to the caller."""

    def get_images(self) -> Sequence[np.ndarray | None]:
        return [None] * self.num_envs

    # ---------------------------------------------------------------- attributes and methods
    def get_attr(self, attr_name: str, indices: VecEnvIndices = None) -> list[Any]:
        """Per-env state (``bar``, ``t``, ``cash``, ``equity``, ``costs``) per env; anything
        else is shared by all envs and repeated once per index."""
        rows = self._get_indices(indices)
        if attr_name in _PER_ENV_STATE:
            values = getattr(self.batch, attr_name)
            return [values[i].item() for i in rows]
        value = getattr(self, attr_name)
        return [value for _ in rows]

    def set_attr(self, attr_name: str, value: Any, indices: VecEnvIndices = None) -> None:
        """Set a shared attribute (all envs at once). Per-env state is read only: it would break
        the accounting identities (reset the env instead); so is what the batch was built from
        (build a new VecEnv)."""
        rows = list(self._get_indices(indices))
        if attr_name in _PER_ENV_STATE:
            raise AttributeError(
                f"{attr_name} is per-env portfolio state and cannot be set; use reset() instead"
            )
        if attr_name in _BUILT_FROM:
            raise AttributeError(
                f"{attr_name} fixes the batch's arrays; build a new BatchedPortfolioVecEnv instead"
            )
        if sorted(rows) != list(range(self.num_envs)):
            raise ValueError(
                f"{attr_name} is shared by all envs of BatchedPortfolioVecEnv: set it with "
                "indices=None"
            )
        setattr(self, attr_name, value)

    def env_method(
        self,
        method_name: str,
        *method_args: Any,
        indices: VecEnvIndices = None,
        **method_kwargs: Any,
    ) -> list[Any]:
        """Call a method of this VecEnv. Methods with an ``indices`` parameter get the indices
        and return one result per env; other methods act on the whole batch once and their
        result is repeated per index."""
        method = getattr(self, method_name)
        if "indices" in inspect.signature(method).parameters:
            return list(method(*method_args, indices=indices, **method_kwargs))
        result = method(*method_args, **method_kwargs)
        return [result for _ in self._get_indices(indices)]

    def env_is_wrapped(
        self, wrapper_class: type[gym.Wrapper], indices: VecEnvIndices = None
    ) -> list[bool]:
        """Batched envs are plain arrays, never wrapped by gymnasium wrappers."""
        return [False for _ in self._get_indices(indices)]
