"""The verdict's statistics: formulas against published and hand-computed values, tests that
reject at about their nominal rate on noise and find a planted edge, and a scripted
policy-on-a-simulated-market calibration of the whole verdict (no RL)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy import stats

from engine.errors import ConfigError
from engine.evaluation.skill import (
    VerdictThresholds,
    block_permutations,
    deflated_sharpe,
    expected_max_sharpe,
    pbo_cscv,
    permutation_pvalue,
    pooled_permutation_pvalue,
    probabilistic_sharpe_ratio,
    reality_check,
    seed_dispersion,
    sharpe_ratio,
    verdict,
)

VOL = 0.01


def market(seed: int, n_bars: int, rho: float) -> tuple[np.ndarray, np.ndarray]:
    """iid normal next-bar returns ``ret[t]`` and a feature ``feat[t]`` seen at bar t with
    correlation ``rho`` to ``ret[t]``."""
    rng = np.random.default_rng(seed)
    ret = rng.normal(0.0, VOL, n_bars)
    feat = rho * ret / VOL + math.sqrt(1 - rho**2) * rng.normal(size=n_bars)
    return ret, feat


def long_when_positive(feat: np.ndarray) -> np.ndarray:
    return (feat > 0).astype(np.float64)


def total_return_null(ret, pos, seed, n_perms=199, block=10):
    """The timing test: positions stay, the next-bar returns are block-permuted against them."""
    perms = block_permutations(np.random.default_rng(seed), ret.size, n_perms, block)
    observed = float(np.prod(1 + pos * ret) - 1)
    return observed, np.prod(1 + pos[None, :] * ret[perms], axis=1) - 1


def timing_p(ret, pos, seed):
    return permutation_pvalue(*total_return_null(ret, pos, seed))


def passing_inputs(**changes):
    args = dict(
        p_return=0.004,
        p_sharpe=0.01,
        deflated_sharpe=0.97,
        pbo=0.08,
        oos_return=0.12,
        beats_always_long=0.81,
        beats_cash=0.9,
        exposure=0.5,
        thresholds=VerdictThresholds(),
    )
    args.update(changes)
    return args


# --- block permutations ----------------------------------------------------------------------


def run_starts(row: np.ndarray) -> np.ndarray:
    """Values that start a run of consecutive positions in a permuted row."""
    breaks = np.flatnonzero(np.diff(row) != 1) + 1
    return row[np.concatenate([[0], breaks])]


def test_block_permutations_are_permutations_cut_at_one_offset_per_row():
    n, block = 103, 10
    perms = block_permutations(np.random.default_rng(0), n, 300, block)
    assert perms.shape == (300, n) and perms.dtype == np.int64
    assert np.array_equal(np.sort(perms, axis=1), np.broadcast_to(np.arange(n), perms.shape))
    offsets = []
    for row in perms:
        cuts = {int(v) % block for v in run_starts(row) if v != 0}
        assert len(cuts) <= 1  # every cut sits at the row's offset + k * block: no wrap-around
        offsets.extend(cuts)
    assert len(set(offsets)) == block  # the boundaries move between rows
    kept = np.mean(np.diff(perms, axis=1) == 1)
    assert 0.85 < kept < 0.95  # about 1 - 1/block of adjacent pairs stay adjacent


def test_block_of_one_is_a_plain_shuffle():
    perms = block_permutations(np.random.default_rng(1), 5, 6000, 1)
    assert len({tuple(row) for row in perms}) == 120
    counts = np.bincount(perms[:, 0], minlength=5)
    assert np.all(np.abs(counts - 1200) < 5 * math.sqrt(6000 * 0.2 * 0.8))


def test_block_of_at_least_n_gives_circular_shifts():
    perms = block_permutations(np.random.default_rng(2), 7, 200, 7)
    assert np.array_equal(perms, (np.arange(7)[None, :] + perms[:, :1]) % 7)
    assert len(set(perms[:, 0])) == 7


def test_same_generator_seed_gives_the_same_permutations():
    a = block_permutations(np.random.default_rng(3), 50, 20, 4)
    b = block_permutations(np.random.default_rng(3), 50, 20, 4)
    assert np.array_equal(a, b) and not np.array_equal(a[0], a[1])


@pytest.mark.parametrize(
    "n, n_perms, block", [(0, 5, 2), (10, 0, 2), (10, 5, 0), (10, 5, 2.5), (10, True, 2)]
)
def test_bad_permutation_arguments_are_one_line_config_errors(n, n_perms, block):
    with pytest.raises(ConfigError, match=r"must be an integer >= 1"):
        block_permutations(np.random.default_rng(0), n, n_perms, block)


# --- p-values --------------------------------------------------------------------------------


def test_permutation_pvalue_counts_ties_and_nans_against_skill():
    assert permutation_pvalue(3.0, np.array([1.0, 2.0, 3.0, 4.0])) == pytest.approx(3 / 5)
    assert permutation_pvalue(0.0, np.zeros(99)) == 1.0
    assert permutation_pvalue(5.0, np.array([1.0, np.nan])) == pytest.approx(2 / 3)
    assert permutation_pvalue(np.nan, np.array([1.0, 2.0])) == 1.0
    assert permutation_pvalue(5.0, np.array([])) == 1.0
    # a sum reordered by a permutation differs in the last bits: still a tie
    assert permutation_pvalue(0.3, np.array([0.1 + 0.2, 0.0])) == pytest.approx(2 / 3)


def test_always_long_has_no_timing_skill():
    ret, _ = market(4, 600, 0.0)
    assert timing_p(ret + 0.002, np.ones(600), seed=5) == 1.0  # drift is not timing


def test_pooled_pvalue_pairs_the_kth_permutation_of_every_fold():
    # sums of paired draws: [0, 3, 1]; observed sum 3 -> (1 + 1) / 4
    assert pooled_permutation_pvalue([1.0, 2.0], [np.array([0, 1, 5]), np.array([0, 2, -4])]) == 0.5
    with pytest.raises(ConfigError, match="same number of permutations"):
        pooled_permutation_pvalue([1.0, 2.0], [np.zeros(3), np.zeros(4)])
    with pytest.raises(ConfigError, match="one null per fold"):
        pooled_permutation_pvalue([1.0], [np.zeros(3), np.zeros(3)])


# --- Sharpe, PSR, deflated Sharpe ----------------------------------------------------------------


def test_sharpe_is_per_bar_mean_over_sample_std():
    assert sharpe_ratio(np.array([1.0, 2.0, 3.0])) == pytest.approx(2.0)  # mean 2, std 1
    assert sharpe_ratio(np.full(10, 0.01)) == 0.0
    assert sharpe_ratio(np.array([0.5])) == 0.0


def test_probabilistic_sharpe_matches_a_hand_computation():
    # sr 0.1 vs 0 over 101 bars, normal: z = 0.1 * 10 / sqrt(1 + 2/4 * 0.01) = 0.997509,
    # Phi(0.997509) = Phi(1) - 0.002491 * phi(1) = 0.841345 - 0.000603 = 0.840742
    assert probabilistic_sharpe_ratio(0.1, 0.0, 101, 0.0, 3.0) == pytest.approx(0.840742, abs=2e-6)
    assert probabilistic_sharpe_ratio(0.2, 0.2, 50, -1.0, 6.0) == 0.5
    assert math.isnan(probabilistic_sharpe_ratio(0.5, 0.0, 100, 10.0, 3.0))  # impossible moments


def test_deflated_sharpe_reproduces_the_papers_worked_example():
    # Bailey & Lopez de Prado (2014), section 6: N = 100 trials, annualised variance of trial
    # Sharpes 0.5, 250 bars a year, T = 1250 bars, annualised SR 2.5, skew -3, kurtosis 10.
    sr0 = expected_max_sharpe(100, 0.5 / 250)
    assert sr0 == pytest.approx(0.1132, abs=5e-5)
    dsr = probabilistic_sharpe_ratio(2.5 / math.sqrt(250), sr0, 1250, -3.0, 10.0)
    assert dsr == pytest.approx(0.9004, abs=5e-5)


def test_expected_max_sharpe_of_one_trial_is_zero_and_bad_inputs_raise():
    assert expected_max_sharpe(1, 0.3) == 0.0
    assert expected_max_sharpe(1000, 0.01) > expected_max_sharpe(10, 0.01) > 0
    with pytest.raises(ConfigError, match="n_trials"):
        expected_max_sharpe(0, 0.1)
    with pytest.raises(ConfigError, match="sr_variance"):
        expected_max_sharpe(5, -1.0)


def test_deflated_sharpe_of_returns_uses_plug_in_moments_and_the_trial_variance():
    rng = np.random.default_rng(6)
    r = rng.standard_t(5, 400) * 0.01 + 0.001
    trials = rng.normal(0.0, 0.05, 25)
    out = deflated_sharpe(r, trials)
    sr0 = expected_max_sharpe(25, float(np.var(trials, ddof=1)))
    skew, kurt = stats.skew(r), stats.kurtosis(r, fisher=False)
    assert out.sr0 == pytest.approx(sr0) and out.kurtosis == pytest.approx(kurt)
    assert out.dsr == pytest.approx(probabilistic_sharpe_ratio(out.sharpe, sr0, 400, skew, kurt))
    assert deflated_sharpe(r, trials, n_trials=500).sr0 > out.sr0  # more trials, higher bar
    lone = deflated_sharpe(r, trials[:1])
    assert lone.sr0 == 0.0 and lone.sr_variance == 0.0
    flat = deflated_sharpe(np.zeros(50), trials)
    assert (flat.sharpe, flat.skew, flat.kurtosis) == (0.0, 0.0, 3.0) and flat.dsr < 0.5
    assert json.loads(json.dumps(out.to_dict()))["n_bars"] == 400


# --- PBO -----------------------------------------------------------------------------------------


def test_pbo_matches_a_hand_computed_two_block_case():
    # Rows: one remainder row (dropped: T = 5 is not a multiple of S = 2), then block 0 (2 bars)
    # and block 1 (2 bars). The Sharpe of bars [a, b] is (a + b) / (sqrt(2) |a - b|).
    perf = np.array(
        [
            [100.0, -100.0, 50.0, 7.0],  # dropped
            [2, 1, 0, -1],  # block 0 Sharpes: A 2.121, B 1.414, C 0.707, D 0
            [4, 3, 2, 1],
            [0, 2, 1, -2],  # block 1 Sharpes: A 0.707, B 3.536, C 1.414, D -0.707
            [2, 3, 3, 0],
        ]
    )
    out = pbo_cscv(perf, n_splits=2)
    # IS = block 0 picks A, whose OOS Sharpe ranks 2 of 4: omega 2/5, logit ln(2/3) (overfit);
    # IS = block 1 picks B, whose OOS Sharpe ranks 3 of 4: omega 3/5, logit ln(3/2).
    assert out.logits == pytest.approx([math.log(2 / 3), math.log(3 / 2)])
    assert out.pbo == 0.5 and out.n_combinations == 2 and out.prob_oos_loss == 0.0
    # (IS, OOS) of the picks: (2.121, 0.707) and (3.536, 1.414): slope 0.707 / 1.414
    assert out.degradation_slope == pytest.approx(0.5)


def test_identical_trials_count_as_overfit_and_the_first_is_picked():
    col = np.random.default_rng(7).normal(0, VOL, 64)
    out = pbo_cscv(np.column_stack([col, col, col]), n_splits=4)
    assert out.logits == [0.0] * 6 and out.pbo == 1.0  # average rank 2 of 3: omega 1/2


def test_pbo_of_equally_skill_less_strategies_is_about_one_half():
    # Measured over seeds 0..19: per-seed PBO sd 0.19 (the 12870 combinations share data), so the
    # mean of 20 seeds has sd ~0.043; +- 0.15 is 3.5 of those.
    pbos = [pbo_cscv(np.random.default_rng(s).normal(0, VOL, (2000, 20))).pbo for s in range(20)]
    assert abs(np.mean(pbos) - 0.5) < 0.15


def test_pbo_of_one_real_edge_among_noise_is_low():
    for seed in range(3):
        perf = np.random.default_rng(seed).normal(0, VOL, (2000, 20))
        perf[:, 7] += 0.0015  # per-bar Sharpe 0.15 against 19 pure-noise trials
        out = pbo_cscv(perf)
        assert out.pbo < 0.1 and out.prob_oos_loss < 0.1 and out.n_combinations == 12870


@pytest.mark.parametrize(
    "shape, splits, message",
    [((100, 3), 5, "even"), ((100, 1), 4, "2 trials"), ((7, 3), 4, "at least 8 bars")],
)
def test_impossible_pbo_inputs_are_config_errors(shape, splits, message):
    with pytest.raises(ConfigError, match=message):
        pbo_cscv(np.zeros(shape), n_splits=splits)


# --- seeds and the reality check -------------------------------------------------------------


def test_seed_dispersion_is_a_student_t_interval():
    out = seed_dispersion([1.0, 2.0, 3.0, 4.0, 5.0])
    # mean 3, std sqrt(2.5), t_{0.975, 4} = 2.776445: half-width 2.776445 * 1.581139 / sqrt(5)
    assert (out.n, out.mean, out.min, out.max) == (5, 3.0, 1.0, 5.0)
    assert out.std == pytest.approx(math.sqrt(2.5))
    assert (out.ci_low, out.ci_high) == pytest.approx((1.036757, 4.963243), abs=1e-6)
    one = seed_dispersion([0.2]).to_dict()
    assert one["std"] is None and one["ci_low"] is None and one["ci_high"] is None
    with pytest.raises(ConfigError):
        seed_dispersion([])


def test_reality_check_does_not_reject_noise_models():
    ps = []
    for seed in range(20):
        rng = np.random.default_rng(seed)
        rc = reality_check(rng.normal(0, VOL, 500), rng.normal(0, VOL, (500, 10)), 10.0, 300, seed)
        ps.append(rc.p_consistent)
    assert sum(p < 0.05 for p in ps) <= 4 and np.mean(ps) > 0.25  # measured: 2 of 20, mean 0.43


def test_reality_check_finds_a_planted_excess_and_is_reproducible():
    rng = np.random.default_rng(1)
    bench, models = rng.normal(0, VOL, 500), rng.normal(0, VOL, (500, 10))
    models[:, 3] += 0.003
    rc = reality_check(bench, models, 10.0, 300, seed=1)
    assert rc.p_consistent < 0.05 and rc.best_model == 3 and rc.best_mean_excess > 0.002
    assert reality_check(bench, models, 10.0, 300, seed=1) == rc
    assert reality_check(bench, models[:, 3], 10.0, 300, seed=1).n_models == 1


# --- verdict -------------------------------------------------------------------------------------


def test_skill_shown_line_lists_the_evidence():
    v = verdict(**passing_inputs())
    assert v.skill
    assert v.line == (
        "skill shown: timing p=0.004, PBO 0.08, deflated Sharpe 0.97, "
        "beats always-long in 81 % of paths"
    )
    assert len(v.reasons) == 8 and json.loads(json.dumps(v.to_dict()))["skill"] is True


def test_failing_checks_come_first_in_the_line():
    v = verdict(
        **passing_inputs(p_return=0.43, pbo=0.62, deflated_sharpe=0.41, beats_always_long=0.45)
    )
    assert not v.skill
    assert v.line == (
        "skill not shown: timing p=0.43 (needs <= 0.05), PBO 0.62 (needs <= 0.50), "
        "deflated Sharpe 0.41 (needs >= 0.95), beats always-long in 45 % of paths"
    )
    assert v.reasons[0].startswith("timing skill: p=0.43 > alpha 0.05: the ensemble's return is")
    v = verdict(**passing_inputs(deflated_sharpe=0.949))
    assert v.line.startswith("skill not shown: deflated Sharpe 0.949 (needs >= 0.95), timing")


def test_never_trading_is_never_judged_skilled():
    v = verdict(**passing_inputs(exposure=0.0))
    assert not v.skill and v.line.startswith("skill not shown: never in the market")


def test_a_loss_after_costs_is_not_skill():
    v = verdict(**passing_inputs(oos_return=-0.012))
    assert not v.skill and v.line.startswith("skill not shown: OOS return -1.20 %")


def test_missing_pbo_is_said_but_not_a_fail_while_missing_tests_are():
    v = verdict(**passing_inputs(pbo=None))
    assert v.skill and "PBO n/a" in v.line and "not computable" in v.reasons[1]
    assert not verdict(**passing_inputs(p_return=None)).skill
    assert not verdict(**passing_inputs(deflated_sharpe=float("nan"))).skill


def test_thresholds_outside_zero_one_are_config_errors():
    with pytest.raises(ConfigError, match="alpha"):
        VerdictThresholds(alpha=1.5)


# --- calibration: a scripted policy on a simulated market ----------------------------------------


def test_timing_test_rejects_noise_at_about_its_nominal_rate():
    rejections = [
        timing_p(ret, long_when_positive(feat), seed=5000 + s) <= 0.05
        for s in range(50)
        for ret, feat in [market(s, 600, 0.0)]
    ]
    assert 0 <= np.mean(rejections) <= 0.15  # measured: 4 of 50


def test_timing_test_finds_a_feature_correlated_0_2_with_the_next_return():
    ret, feat = market(0, 600, 0.2)
    assert timing_p(ret, long_when_positive(feat), seed=1000) < 0.01  # 95 % of seeds 0..19


def judge(seed: int, rho: float, n_bars: int = 600):
    """The whole verdict for 'long when feature > 0' on one market, 10 noise trials beside it."""
    ret, feat = market(seed, n_bars, rho)
    pos = long_when_positive(feat)
    trials = [pos * ret] + [
        long_when_positive(f) * r for r, f in (market(10_000 + k, n_bars, 0.0) for k in range(10))
    ]
    dsr = deflated_sharpe(trials[0], np.array([sharpe_ratio(t) for t in trials]))
    p = timing_p(ret, pos, seed=1000 + seed)
    out = verdict(
        p_return=p,
        p_sharpe=None,
        deflated_sharpe=dsr.dsr,
        pbo=pbo_cscv(np.column_stack(trials), n_splits=8).pbo,
        oos_return=float(np.prod(1 + trials[0]) - 1),
        beats_always_long=None,
        beats_cash=None,
        exposure=float(np.mean(pos != 0)),
        thresholds=VerdictThresholds(),
    )
    return p, dsr, out


def test_strong_planted_edge_is_judged_skilled():
    # With 10 rival trials over 600 bars the deflated Sharpe needs more than rho 0.2 (it gives
    # DSR ~0.8); at rho 0.45 it reached 0.95 in 39 of 40 seeds.
    p, dsr, out = judge(0, 0.45)
    assert p < 0.01 and dsr.dsr >= 0.95 and out.skill, out.line


def test_the_same_policy_on_a_noise_market_is_not_judged_skilled():
    for seed in range(5):
        assert not judge(seed, 0.0)[2].skill


def test_cash_has_timing_p_of_one_and_is_never_skilled():
    ret, _ = market(8, 600, 0.0)
    pos = np.zeros(600)
    assert timing_p(ret, pos, seed=9) == 1.0
    out = verdict(**passing_inputs(p_return=1.0, oos_return=0.0, exposure=0.0))
    assert not out.skill
    assert deflated_sharpe(pos * ret, np.zeros(11)).sharpe == 0.0


def test_pooled_timing_test_over_two_folds_is_calibrated_and_finds_an_edge():
    def pooled(seed, rho):
        obs, nulls = [], []
        for fold in range(2):
            ret, feat = market(100 * seed + fold, 300, rho)
            o, null = total_return_null(
                ret, long_when_positive(feat), seed=7000 + 100 * seed + fold
            )
            obs.append(o)
            nulls.append(null)
        return pooled_permutation_pvalue(obs, nulls)

    assert np.mean([pooled(s, 0.0) <= 0.05 for s in range(40)]) <= 0.15
    assert pooled(0, 0.3) < 0.01


def test_results_are_json_safe_with_nan_as_none():
    out = pbo_cscv(np.column_stack([np.zeros(40), np.zeros(40)]), n_splits=2).to_dict()
    assert out["degradation_slope"] is None and isinstance(out["logits"], list)
    json.dumps(out)
    assert list(out)[:3] == ["pbo", "n_trials", "n_splits"]
