"""engine.features.indicators against the ``ta`` reference, on real-shaped bars, plus warm-up and causality."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import ta

from engine.features import indicators as ind

RTOL = 1e-9


def random_walk_bars(seed: int, n: int = 3000) -> pd.DataFrame:
    """Hourly-like OHLCV: a random walk with volatility regimes, a jump, a flat halt, zero volume.

    The index has gaps (nights, missing bars) like real hourly data; indicators ignore time and
    see consecutive bars, which is what the feature stage feeds them.
    """
    rng = np.random.default_rng(seed)
    vol = np.where(rng.random(n) < 0.2, 0.02, 0.006)
    r = rng.standard_t(4, n) * vol / 1.4
    r[n // 3] += 0.08  # an earnings-like jump
    flat = slice(n // 2, n // 2 + 40)  # a halt: constant price, no range
    r[flat] = 0.0
    close = 100.0 * np.exp(np.cumsum(r))
    open_ = np.r_[close[0], close[:-1]] * np.exp(rng.normal(0, 0.001, n))
    spread = np.abs(rng.normal(0, 0.004, n))
    spread[flat] = 0.0
    open_[flat] = close[flat]
    high = np.maximum(open_, close) * (1 + spread)
    low = np.minimum(open_, close) * (1 - spread * rng.random(n))
    volume = np.round(rng.lognormal(11, 0.8, n))
    volume[n // 2 + 100 : n // 2 + 120] = 0.0  # a stretch without volume
    hours = np.cumsum(rng.choice([1, 1, 1, 1, 2, 17], size=n))
    index = pd.Timestamp("2020-01-02 14:00", tz="UTC") + pd.to_timedelta(hours, unit="h")
    return pd.DataFrame(
        {"open": open_, "high": high, "low": low, "close": close, "volume": volume},
        index=index.as_unit("us"),
    )


@pytest.fixture(params=[1, 2, 3], ids=lambda s: f"seed{s}")
def bars(request: pytest.FixtureRequest) -> pd.DataFrame:
    return random_walk_bars(request.param)


def ta_inputs(frame: pd.DataFrame) -> tuple[pd.Series, ...]:
    # ta is called on RangeIndex Series: its PSAR mis-assigns by label on a DatetimeIndex under
    # pandas 3 (see engine/indicators.py); the others give the same values either way.
    return tuple(pd.Series(frame[c].to_numpy()) for c in ("high", "low", "close", "volume"))


def assert_matches_ta(mine: np.ndarray, ref: pd.Series, defined_from: int) -> None:
    """Equal within RTOL wherever ``ta`` has a real value; NaN (not a placeholder) before that."""
    ref_values = ref.to_numpy(dtype=np.float64)
    assert mine.shape == ref_values.shape
    assert np.isnan(mine[:defined_from]).all(), "warm-up must be NaN, not a placeholder"
    both = ~np.isnan(ref_values[defined_from:]) & ~np.isnan(mine[defined_from:])
    # Where one is defined the other must be too (same warm-up, same undefined points).
    np.testing.assert_array_equal(
        np.isnan(mine[defined_from:]), np.isnan(ref_values[defined_from:])
    )
    a, b = mine[defined_from:][both], ref_values[defined_from:][both]
    scale = np.max(np.abs(b)) if b.size else 1.0
    np.testing.assert_allclose(a, b, rtol=RTOL, atol=RTOL * 1e-3 * scale)


def test_rsi_equals_ta(bars: pd.DataFrame) -> None:
    _, _, c, _ = ta_inputs(bars)
    for window in (14, 5):
        ref = ta.momentum.RSIIndicator(c, window).rsi()
        assert_matches_ta(ind.rsi(c.to_numpy(), window), ref, window - 1)


def test_macd_line_signal_and_diff_equal_ta(bars: pd.DataFrame) -> None:
    _, _, c, _ = ta_inputs(bars)
    ref = ta.trend.MACD(c, window_slow=26, window_fast=12, window_sign=9)
    line, signal, diff = ind.macd(c.to_numpy(), 12, 26, 9)
    assert_matches_ta(line, ref.macd(), 25)
    assert_matches_ta(signal, ref.macd_signal(), 33)
    assert_matches_ta(diff, ref.macd_diff(), 33)


def exact_window_mean_std(values: np.ndarray, window: int) -> tuple[np.ndarray, np.ndarray]:
    """The textbook definition, one window at a time (slow, obviously right)."""
    mean = np.full(len(values), np.nan)
    std = np.full(len(values), np.nan)
    for t in range(window - 1, len(values)):
        w = values[t - window + 1 : t + 1]
        mean[t] = np.mean(w)
        std[t] = 0.0 if w.max() == w.min() else np.sqrt(np.mean((w - np.mean(w)) ** 2))
    return mean, std


def test_bollinger_position_and_width_equal_the_definition_and_ta(bars: pd.DataFrame) -> None:
    _, _, c, _ = ta_inputs(bars)
    close = c.to_numpy()
    pband, wband = ind.bollinger(close, 20, 2.0)
    mid, std = exact_window_mean_std(close, 20)
    width = 4.0 * std
    with np.errstate(divide="ignore", invalid="ignore"):
        want_p = np.where(width > 0, (close - (mid - 2.0 * std)) / width, np.nan)
    np.testing.assert_allclose(pband, want_p, rtol=1e-9, atol=1e-9, equal_nan=True)
    np.testing.assert_allclose(wband, width / mid * 100.0, rtol=1e-9, atol=1e-12, equal_nan=True)
    # ta runs pandas' online rolling std, whose rounding residue depends on the release (1.5e-5
    # over a flat window under pandas 3.1.1 / NumPy 2.4.6): compare where the band is not thin.
    ref = ta.volatility.BollingerBands(c, window=20, window_dev=2)
    wide = np.flatnonzero(std > 1e-6 * np.nan_to_num(mid, nan=1.0))
    np.testing.assert_allclose(pband[wide], ref.bollinger_pband().to_numpy()[wide], rtol=1e-6)
    np.testing.assert_allclose(wband[wide], ref.bollinger_wband().to_numpy()[wide], rtol=1e-6)
    assert np.isnan(pband[:19]).all() and np.isnan(wband[:19]).all()
    # The halt: a zero-width band leaves %b undefined (NaN) and the width exactly 0.
    flat = np.flatnonzero(wband == 0)
    assert len(flat) >= 20 and np.isnan(pband[flat]).all()


def test_rolling_volatility_equals_the_definition_and_is_exactly_zero_in_a_halt(
    bars: pd.DataFrame,
) -> None:
    close = bars["close"].to_numpy()
    r1 = ind.log_returns(close, 1)
    for window in (7, 35):
        got = ind.rolling_volatility(close, window)
        _, want = exact_window_mean_std(r1, window)
        np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-15, equal_nan=True)
    assert (ind.rolling_volatility(close, 7) == 0.0).sum() >= 30


def test_atr_equals_ta_and_is_nan_during_warm_up(bars: pd.DataFrame) -> None:
    h, lo, c, _ = ta_inputs(bars)
    for window in (14, 3):
        ref = ta.volatility.AverageTrueRange(h, lo, c, window).average_true_range()
        mine = ind.atr(h.to_numpy(), lo.to_numpy(), c.to_numpy(), window)
        assert (ref.to_numpy()[: window - 1] == 0).all()  # ta's placeholder zeros
        assert_matches_ta(mine, ref, window - 1)


def test_adx_and_directional_indicators_equal_ta(bars: pd.DataFrame) -> None:
    h, lo, c, _ = ta_inputs(bars)
    for window in (14, 6):
        ref = ta.trend.ADXIndicator(h, lo, c, window)
        adx, pdi, ndi = ind.adx(h.to_numpy(), lo.to_numpy(), c.to_numpy(), window)
        assert_matches_ta(adx, ref.adx(), 2 * window - 1)
        assert_matches_ta(pdi, ref.adx_pos(), window + 1)
        assert_matches_ta(ndi, ref.adx_neg(), window + 1)


def test_obv_equals_ta(bars: pd.DataFrame) -> None:
    _, _, c, v = ta_inputs(bars)
    ref = ta.volume.OnBalanceVolumeIndicator(c, v).on_balance_volume()
    assert_matches_ta(ind.obv(c.to_numpy(), v.to_numpy()), ref, 0)


def test_parabolic_sar_equals_ta_including_trend_split(bars: pd.DataFrame) -> None:
    frame = bars.iloc[:1500]  # ta's loop costs ~1 ms a bar
    h, lo, c, _ = ta_inputs(frame)
    ref = ta.trend.PSARIndicator(h, lo, c, step=0.02, max_step=0.2)
    sar, up = ind.parabolic_sar(h.to_numpy(), lo.to_numpy(), c.to_numpy(), 0.02, 0.2)
    assert_matches_ta(sar, ref.psar(), 2)
    up_ref = ref.psar_up().to_numpy()
    np.testing.assert_array_equal(up[2:] == 1.0, ~np.isnan(up_ref[2:]))
    assert set(np.unique(up[2:])) == {0.0, 1.0}  # both trends occur in the sample


def test_parabolic_sar_with_other_steps_equals_ta() -> None:
    frame = random_walk_bars(7, 800)
    h, lo, c, _ = ta_inputs(frame)
    ref = ta.trend.PSARIndicator(h, lo, c, step=0.05, max_step=0.3).psar()
    sar, _ = ind.parabolic_sar(h.to_numpy(), lo.to_numpy(), c.to_numpy(), 0.05, 0.3)
    assert_matches_ta(sar, ref, 2)


def test_log_returns_and_volatility_follow_their_definitions(bars: pd.DataFrame) -> None:
    c = bars["close"].to_numpy()
    r3 = ind.log_returns(c, 3)
    assert np.isnan(r3[:3]).all()
    np.testing.assert_allclose(r3[3:], np.log(c[3:] / c[:-3]), rtol=1e-12, atol=1e-15)
    vol = ind.rolling_volatility(c, 10)
    assert np.isnan(vol[:10]).all() and not np.isnan(vol[10:]).any()
    r1 = np.diff(np.log(c))
    t = 500
    np.testing.assert_allclose(vol[t], np.std(r1[t - 10 : t]), rtol=1e-9)


def test_volume_features_handle_flat_and_empty_volume() -> None:
    close = np.array([10.0, 10.5, 10.2, 10.2, 10.8, 10.1] * 5)
    volume = np.array([100.0, 200.0, 300.0, 0.0, 0.0, 50.0] * 5)
    flow = ind.obv_flow(close, volume, 3)
    assert np.isnan(flow[:2]).all()
    assert ((flow[2:] >= -1) & (flow[2:] <= 1)).all()
    no_volume = ind.obv_flow(close, np.zeros_like(close), 3)
    assert (no_volume[2:] == 0).all()
    z = ind.volume_zscore(np.full(20, 500.0), 5)
    assert np.isnan(z[:4]).all() and (z[4:] == 0).all()
    z2 = ind.volume_zscore(volume, 4)
    assert np.isfinite(z2[3:]).all()


def test_short_inputs_give_all_nan_without_errors() -> None:
    h, lo, c = np.array([2.0, 2.1]), np.array([1.9, 2.0]), np.array([2.0, 2.05])
    assert np.isnan(ind.atr(h, lo, c, 14)).all()
    assert all(np.isnan(x).all() for x in ind.adx(h, lo, c, 14))
    assert all(np.isnan(x).all() for x in ind.parabolic_sar(h, lo, c))
    assert np.isnan(ind.rsi(c, 14)).all()
    assert np.isnan(ind.log_returns(c, 5)).all()
    with pytest.raises(ValueError, match="window"):
        ind.rsi(c, 0)


def all_outputs(frame: pd.DataFrame) -> dict[str, np.ndarray]:
    h, lo, c, v = (frame[k].to_numpy() for k in ("high", "low", "close", "volume"))
    out = {
        "ret": ind.log_returns(c, 5),
        "vol": ind.rolling_volatility(c, 7),
        "rsi": ind.rsi(c),
        "atr": ind.atr(h, lo, c),
        "obv": ind.obv(c, v),
        "obv_flow": ind.obv_flow(c, v, 10),
        "volume_z": ind.volume_zscore(v, 10),
    }
    out.update(zip(("macd", "macd_signal", "macd_diff"), ind.macd(c), strict=True))
    out.update(zip(("bb_pos", "bb_width"), ind.bollinger(c), strict=True))
    out.update(zip(("adx", "pdi", "ndi"), ind.adx(h, lo, c), strict=True))
    out.update(zip(("sar", "trend"), ind.parabolic_sar(h, lo, c), strict=True))
    return out


def test_no_indicator_looks_ahead() -> None:
    frame = random_walk_bars(11, 1200)
    base = all_outputs(frame)
    rng = np.random.default_rng(5)
    for t in rng.integers(30, 1150, size=4):
        changed = frame.copy()
        factor = np.exp(rng.normal(0, 0.05, len(frame) - t - 1))
        for col in ("open", "high", "low", "close"):
            changed.iloc[t + 1 :, changed.columns.get_loc(col)] *= factor
        changed.iloc[t + 1 :, changed.columns.get_loc("volume")] *= 3.0
        after = all_outputs(changed)
        for name, values in base.items():
            np.testing.assert_array_equal(after[name][: t + 1], values[: t + 1], err_msg=name)
            assert not np.array_equal(after[name][t + 1 :], values[t + 1 :], equal_nan=True) or (
                name == "trend"
            ), f"{name}: perturbation had no effect, the test would prove nothing"
