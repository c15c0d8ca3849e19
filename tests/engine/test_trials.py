"""Trials: fold files, a run's member series, the registry of every run on one dataset, the
config hash and the reproducibility key."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from engine import atomic
from engine.config import PloutosConfig
from engine.errors import DataError
from engine.evaluation import trials as trials_module
from engine.evaluation.trials import (
    FoldTrials,
    Trial,
    TrialRegistry,
    config_hash,
    reproducibility_key,
    run_trials,
)
from engine.runs.folder import RunFolder

HOUR_US = 3_600_000_000
T0_US = 1_700_000_000_000_000  # 2023-11-14 22:13:20 UTC
DATASET = "a" * 64
OTHER_DATASET = "b" * 64


def bars(start, stop):
    """Hourly bar starts ``start .. stop - 1`` (in hours after T0)."""
    return T0_US + HOUR_US * np.arange(start, stop, dtype=np.int64)


def fold_trials(fold, start, stop, members, seeds=None, value=None):
    """Member ``m``'s return at hour ``h`` is ``value`` or ``fold + m / 10 + h / 1000``: each
    number says where it came from."""
    members = np.asarray(members, dtype=np.int64)
    hours = np.arange(start, stop)
    returns = fold + members[:, None] / 10 + hours[None, :] / 1000
    if value is not None:
        returns = np.full_like(returns, value)
    seeds = 100 * fold + members if seeds is None else np.asarray(seeds)
    return FoldTrials(fold, bars(start, stop), returns, seeds, members)


def make_run(root, run_id, *, folds=(), trials=(), meta=None, dataset=DATASET, chash="c" * 16):
    """A run folder as the trainer leaves it: config.yaml, run.json, folds.json, trials files."""
    folder = RunFolder(root / run_id).create()
    folder.config_path.write_text("dataset_path: x\n")
    if meta is None:
        meta = {"run_id": run_id, "dataset_checksum": dataset, "config_hash": chash}
    atomic.write_json(folder.meta_path, meta)
    atomic.write_json(
        folder.folds_path,
        [{"index": k, "train_rows": [0, 1], "test_rows": [1, 2]} for k in folds],
    )
    for ft in trials:
        ft.save(folder.fold_trials_path(ft.fold))
    return folder


def trial(run_id, member, start, stop, returns=None):
    ts = bars(start, stop)
    r = np.linspace(-0.01, 0.01, ts.size) if returns is None else np.asarray(returns, float)
    return Trial(run_id, "c" * 16, member, member, (0,), ts, r)


# ------------------------------------------------------------------------------ config hash


def resolved():
    return PloutosConfig(dataset_path="data/demo").model_dump(mode="json")


def changed(section, key, value):
    cfg = resolved()
    if section is None:
        cfg[key] = value
    else:
        cfg[section] = {**cfg[section], key: value}
    return cfg


def test_config_hash_is_16_hex_digits_of_the_sha256_of_canonical_json():
    assert config_hash({}) == "44136fa355b3678a"  # sha256(b"{}")
    expected = hashlib.sha256(b'{"a":[1,2],"b":{"c":0.5}}').hexdigest()[:16]
    assert config_hash({"b": {"c": 0.5}, "a": [1, 2]}) == expected


def test_config_hash_changes_with_what_is_learnt_or_judged():
    base = config_hash(resolved())
    assert len(base) == 16 and int(base, 16) >= 0
    for section, key, value in [
        ("training", "ent_coef", 0.02),
        ("training", "seed", 1),
        ("training", "vote", "mean_prob"),
        ("env", "commission_bps", 5.0),
        ("walk_forward", "test_months", 3),
        ("monte_carlo", "seed", 7),
        ("features", "rsi_window", 21),
    ]:
        assert config_hash(changed(section, key, value)) != base, f"{section}.{key}"


def test_config_hash_ignores_where_and_how_fast_it_runs():
    base = config_hash(resolved())
    for section, key, value in [
        (None, "hardware_profile", "cpu-small"),
        (None, "executor", "ray"),
        (None, "ray_address", "ray://head:10001"),
        (None, "dataset_path", "/elsewhere/demo"),
        (None, "data", {"source": "yahoo", "tickers": ["SPY"], "start": "2020-01-01"}),
        ("training", "progress_interval_s", 1.0),
        ("training", "checkpoint_every_timesteps", 5),
        ("training", "tensorboard", True),
    ]:
        assert config_hash(changed(section, key, value)) == base, f"{section}.{key}"
    reordered = dict(reversed(list(resolved().items())))
    assert config_hash(reordered) == base


def test_config_hash_does_not_tell_5_from_5_point_0():
    # The default train_years is the int 5; the JSON dump writes 5.0, a YAML file may say 5.
    cfg = PloutosConfig(dataset_path="data/demo")
    assert config_hash(cfg.model_dump()) == config_hash(cfg.model_dump(mode="json"))
    assert config_hash({"a": 5, "b": (1, 2)}) == config_hash({"a": 5.0, "b": [1.0, 2.0]})
    assert config_hash({"a": 5.5}) != config_hash({"a": 5})


def test_config_hash_refuses_what_json_cannot_hold():
    with pytest.raises(TypeError):
        config_hash({"features": {"path": Path("x")}})


# ------------------------------------------------------------------------------ fold files


def test_fold_trials_round_trip(tmp_path):
    ft = fold_trials(3, 10, 20, [0, 2, 4])
    path = tmp_path / "results" / "fold_03_trials.npz"
    ft.save(path)
    back = FoldTrials.load(path)
    assert back.fold == 3
    for name in ("timestamps", "returns", "seeds", "members"):
        np.testing.assert_array_equal(getattr(back, name), getattr(ft, name))
    assert back.timestamps.dtype == np.int64 and back.returns.dtype == np.float64
    assert back.seeds.dtype == np.int64 and back.members.dtype == np.int64
    assert back.returns.shape == (3, 10)
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary left behind


def truncated(path):
    path.write_bytes(path.read_bytes()[:-200])


def garbage(path):
    path.write_bytes(b"not an npz file at all\n")


def empty(path):
    path.write_bytes(b"")


def flipped(path):
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF  # inside a stored array: the zip CRC no longer matches
    path.write_bytes(bytes(data))


def without_members(path):
    ft = FoldTrials.load(path)
    with open(path, "wb") as fh:
        np.savez(fh, fold=np.int64(0), timestamps=ft.timestamps, returns=ft.returns, seeds=ft.seeds)


def wrong_shape(path):
    ft = FoldTrials.load(path)
    with open(path, "wb") as fh:
        np.savez(
            fh,
            fold=np.int64(0),
            timestamps=ft.timestamps,
            returns=ft.returns[:, :-1],
            seeds=ft.seeds,
            members=ft.members,
        )


def missing(path):
    path.unlink()


@pytest.mark.parametrize(
    "damage", [truncated, garbage, empty, flipped, without_members, wrong_shape, missing]
)
def test_a_damaged_trials_file_is_one_data_error_line_naming_it(tmp_path, damage):
    path = tmp_path / "fold_00_trials.npz"
    fold_trials(0, 0, 50, [0, 1, 2]).save(path)
    damage(path)
    with pytest.raises(DataError) as caught:
        FoldTrials.load(path)
    message = str(caught.value)
    assert "\n" not in message and message.startswith(f"{path}: ")


@pytest.mark.parametrize(
    "kwargs",
    [
        {"returns": np.zeros((2, 4))},  # M != 3
        {"returns": np.zeros((3, 5))},  # T != 4
        {"timestamps": bars(0, 4).astype(float)},  # float times
        {"timestamps": bars(0, 4)[::-1].copy()},  # not increasing
        {"members": np.array([0, 1, 1])},  # a member twice
        {"members": np.array([0, 1, -1])},
        {"seeds": np.array([1, 2])},
        {"returns": np.array([[0.0, np.nan, 0.0, 0.0]] * 3)},
        {"fold": -1},
        {"fold": 1.0},
    ],
)
def test_fold_trials_refuses_inconsistent_arrays(kwargs):
    good = {
        "fold": 0,
        "timestamps": bars(0, 4),
        "returns": np.zeros((3, 4)),
        "seeds": np.array([1, 2, 3]),
        "members": np.array([0, 1, 2]),
    }
    with pytest.raises(ValueError):
        FoldTrials(**{**good, **kwargs})


# ------------------------------------------------------------------------------ one run


def test_a_runs_trials_are_its_members_over_its_folds_in_time_order(tmp_path):
    # folds.json in index order, but fold 1's test window comes first in time; fold 2 is not
    # evaluated yet; member 2 was only in fold 0.
    folder = make_run(
        tmp_path,
        "run-a",
        folds=(0, 1, 2),
        trials=[fold_trials(0, 10, 15, [0, 1, 2]), fold_trials(1, 0, 5, [0, 1])],
    )
    got = run_trials(folder, "feedface00000000")
    assert [t.trial_id for t in got] == ["run-a/m00", "run-a/m01", "run-a/m02"]
    m0, m1, m2 = got
    np.testing.assert_array_equal(m0.timestamps, np.concatenate([bars(0, 5), bars(10, 15)]))
    np.testing.assert_allclose(
        m0.returns, [1.000, 1.001, 1.002, 1.003, 1.004, 0.010, 0.011, 0.012, 0.013, 0.014]
    )
    np.testing.assert_allclose(m1.returns[:2], [1.100, 1.101])
    assert m0.folds == (1, 0) and m0.seed == 100  # the earliest fold's seed
    assert m1.seed == 101 and m0.config_hash == "feedface00000000"
    assert m2.folds == (0,) and m2.seed == 2
    np.testing.assert_array_equal(m2.timestamps, bars(10, 15))


def test_overlapping_folds_keep_the_later_folds_value(tmp_path):
    folder = make_run(
        tmp_path,
        "run-a",
        folds=(0, 1),
        trials=[fold_trials(0, 0, 6, [0], value=-0.5), fold_trials(1, 4, 9, [0], value=0.5)],
    )
    (m0,) = run_trials(folder, "h")
    np.testing.assert_array_equal(m0.timestamps, bars(0, 9))
    np.testing.assert_array_equal(m0.returns, [-0.5] * 4 + [0.5] * 5)


def test_a_run_with_no_evaluated_fold_has_no_trials(tmp_path):
    assert run_trials(make_run(tmp_path, "run-a", folds=(0, 1)), "h") == []


def test_a_trials_file_under_another_folds_name_is_refused(tmp_path):
    folder = make_run(tmp_path, "run-a", folds=(0,))
    fold_trials(1, 0, 5, [0]).save(folder.fold_trials_path(0))
    with pytest.raises(DataError, match="holds fold 1, not fold 0"):
        run_trials(folder, "h")


# ------------------------------------------------------------------------------ the registry


@pytest.fixture
def runs_root(tmp_path):
    root = tmp_path / "runs"
    root.mkdir()
    make_run(root, "a1", folds=(0, 1), trials=[fold_trials(0, 0, 20, [0, 1])], chash="1" * 16)
    make_run(
        root,
        "a2",
        folds=(0, 1),
        trials=[fold_trials(0, 0, 20, [0, 1, 2]), fold_trials(1, 20, 30, [0, 1, 2])],
        chash="2" * 16,
    )
    make_run(root, "b1", folds=(0,), trials=[fold_trials(0, 0, 20, [0])], dataset=OTHER_DATASET)
    make_run(root, "old", folds=(0,), trials=[fold_trials(0, 0, 20, [0])], meta={"run_id": "old"})
    make_run(root, "garbled", folds=(0,), trials=[fold_trials(0, 0, 20, [0])])
    (root / "garbled" / "run.json").write_text('{"dataset_checksum": ')
    damaged = make_run(root, "damaged", folds=(0,), trials=[fold_trials(0, 0, 20, [0])])
    damaged.fold_trials_path(0).write_bytes(b"\x00" * 10)
    make_run(root, "nofolds", folds=(0,), trials=[fold_trials(0, 0, 20, [0])])
    (root / "nofolds" / "folds.json").unlink()
    (root / "not-a-run").mkdir()  # no config.yaml: not listed at all
    return root


def test_the_registry_counts_every_member_of_every_run_on_the_dataset(runs_root):
    reg = TrialRegistry.scan(runs_root, DATASET)
    assert reg.dataset_checksum == DATASET
    assert reg.n_trials == 5
    assert sorted(reg.trial_ids) == ["a1/m00", "a1/m01", "a2/m00", "a2/m01", "a2/m02"]
    assert sorted(reg.runs) == ["a1", "a2"]
    # by most bars (a2: 30, a1: 20), then by trial id
    assert reg.trial_ids == ["a2/m00", "a2/m01", "a2/m02", "a1/m00", "a1/m01"]
    assert {t.config_hash for t in reg.trials if t.run_id == "a1"} == {"1" * 16}
    skipped = dict(reg.skipped)
    assert sorted(skipped) == ["damaged", "garbled", "nofolds", "old"]
    assert "dataset_checksum" in skipped["old"] and "damaged" in skipped["damaged"]
    assert all("\n" not in why for why in skipped.values())


def test_the_registry_on_the_other_dataset_sees_only_its_run(runs_root):
    reg = TrialRegistry.scan(runs_root, OTHER_DATASET)
    assert reg.trial_ids == ["b1/m00"] and reg.runs == ("b1",)


def test_a_registry_of_no_runs_is_empty(tmp_path):
    reg = TrialRegistry.scan(tmp_path / "nowhere", DATASET)
    assert reg.n_trials == 0 and reg.runs == () and reg.skipped == ()
    ts, returns, ids = reg.aligned()
    assert ts.shape == (0,) and returns.shape == (0, 0) and ids == []
    assert reg.sharpes().shape == (0,)


def test_included_trials_replace_their_copies_on_disk(runs_root):
    current = [trial("a1", 0, 0, 20), trial("a1", 1, 0, 20), trial("live", 0, 0, 20)]
    reg = TrialRegistry.scan(runs_root, DATASET, include=current)
    assert reg.n_trials == 6  # a1's two members once, plus the live run's one
    assert reg.trial_ids[:3] == ["a1/m00", "a1/m01", "live/m00"]  # include first, in its order
    assert reg.trials[0] is current[0] and reg.trials[2] is current[2]
    assert reg.runs == ("a1", "live", "a2")


def test_aligned_returns_are_the_trials_on_their_common_bars():
    t1 = trial("r", 0, 0, 10)
    t2 = trial("r", 1, 3, 13)
    ts, returns, ids = TrialRegistry((t1, t2), DATASET, ("r",)).aligned()
    np.testing.assert_array_equal(ts, bars(3, 10))
    assert ts.dtype == np.int64 and returns.shape == (7, 2) and ids == ["r/m00", "r/m01"]
    np.testing.assert_array_equal(returns[:, 0], t1.returns[3:10])
    np.testing.assert_array_equal(returns[:, 1], t2.returns[0:7])


def test_a_trial_that_would_leave_too_few_common_bars_is_dropped_not_everyone_shrunk():
    long_ = trial("r", 0, 0, 10)
    late = trial("r", 1, 3, 13)  # shares 7 bars with long_
    apart = trial("r", 2, 20, 26)  # shares none
    reg = TrialRegistry((long_, late, apart), DATASET, ("r",))
    ts, returns, ids = reg.aligned(min_bars=1)
    assert ids == ["r/m00", "r/m01"] and ts.size == 7
    assert reg.aligned(min_bars=7)[2] == ["r/m00", "r/m01"]  # exactly min_bars: kept
    ts, returns, ids = reg.aligned(min_bars=8)
    assert ids == ["r/m00"] and ts.size == 10 and returns.shape == (10, 1)
    # greedy in trial order: the first trial is kept, and decides
    ts, _, ids = TrialRegistry((apart, long_, late), DATASET, ("r",)).aligned(min_bars=1)
    assert ids == ["r/m02"] and ts.size == 6
    assert TrialRegistry((apart,), DATASET, ("r",)).aligned(min_bars=7)[2] == []
    with pytest.raises(ValueError, match="min_bars"):
        reg.aligned(min_bars=0)


def test_sharpe_of_a_trial_matches_a_hand_computed_value():
    # mean 0.005; squared deviations 2.5e-5 + 6.25e-4 + 6.25e-4 + 2.5e-5 = 1.3e-3;
    # ddof-1 variance 1.3e-3 / 3; Sharpe 0.005 / sqrt(4.3333e-4) = 0.2401922...
    hand = trial("r", 0, 0, 4, [0.01, -0.02, 0.03, 0.00])
    flat = trial("r", 1, 0, 5, [0.001] * 5)
    single = trial("r", 2, 0, 1, [0.02])
    reg = TrialRegistry((hand, flat, single), DATASET, ("r",))
    np.testing.assert_allclose(reg.sharpes(), [0.2401922307, 0.0, 0.0], rtol=1e-9)


def test_sharpes_of_noise_trials_spread_as_one_over_root_bars_and_an_edge_shows():
    # Per-bar Sharpe of T iid bars has standard error ~ 1/sqrt(T): the V[SR] of the deflated
    # Sharpe ratio under the null. A planted edge of 0.2 std per bar shows as Sharpe ~0.2.
    rng = np.random.default_rng(20240601)
    n_bars, n_trials = 400, 300
    noise = [trial("noise", m, 0, n_bars, rng.normal(0, 0.01, n_bars)) for m in range(n_trials)]
    edge = trial("edge", 0, 0, n_bars, rng.normal(0.002, 0.01, n_bars))
    sharpes = TrialRegistry((*noise, edge), DATASET, ("noise", "edge")).sharpes()
    null = sharpes[:-1]
    assert abs(null.mean()) < 3 / np.sqrt(n_bars * n_trials)
    assert 0.7 < null.var(ddof=1) * n_bars < 1.3  # measured 1.14; relative SE ~0.08
    assert 0.2 - 3 / np.sqrt(n_bars) < sharpes[-1] < 0.2 + 3 / np.sqrt(n_bars)
    assert sharpes[-1] > np.quantile(null, 0.99)


def test_trial_refuses_mismatched_series():
    with pytest.raises(ValueError):
        Trial("r", "h", 0, 0, (0,), bars(0, 3), np.zeros(4))
    with pytest.raises(ValueError):
        Trial("r", "h", 0, 0, (0,), bars(0, 3)[::-1].copy(), np.zeros(3))
    assert trial("20260101-x", 7, 0, 2).trial_id == "20260101-x/m07"


# ------------------------------------------------------------------------------ reproducibility

KEY_FIELDS = {
    "dataset_checksum",
    "feature_key",
    "config_hash",
    "seeds",
    "python",
    "machine",
    "ploutos",
    "feature_code_version",
    "git_commit",
    "git_dirty",
    "versions",
}
PACKAGES = {
    "numpy",
    "pandas",
    "torch",
    "stable-baselines3",
    "sb3-contrib",
    "gymnasium",
    "scipy",
    "arch",
}


def key(**overrides):
    kwargs = {"dataset_checksum": DATASET, "feature_key": "f" * 16, "config_hash": "c" * 16}
    return reproducibility_key(**{**kwargs, "seeds": [3, np.int64(4)], **overrides})


def test_reproducibility_key_records_what_a_result_depends_on():
    from engine.features.compute import FEATURE_CODE_VERSION

    got = key()
    assert set(got) == KEY_FIELDS and set(got["versions"]) == PACKAGES
    assert got["dataset_checksum"] == DATASET and got["seeds"] == [3, 4]
    assert got["python"] == ".".join(map(str, sys.version_info[:3]))
    assert got["feature_code_version"] == FEATURE_CODE_VERSION
    assert got["versions"]["numpy"] == np.__version__ and got["ploutos"]
    commit = got["git_commit"]
    assert commit is None or (len(commit) == 40 and int(commit, 16) >= 0)
    assert (got["git_dirty"] is None) if commit is None else isinstance(got["git_dirty"], bool)
    json.dumps(got)  # JSON-safe


def test_reproducibility_key_without_git_on_the_path(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    got = key(feature_key=None, dataset_checksum=None, seeds=["not a seed"])
    assert got["git_commit"] is None and got["git_dirty"] is None
    assert got["feature_key"] is None and got["dataset_checksum"] is None
    assert got["seeds"] is None


@pytest.mark.parametrize("script", ["exit 1", "echo not-a-commit", "exec sleep 5"])
def test_reproducibility_key_survives_a_broken_or_hanging_git(tmp_path, monkeypatch, script):
    fake = tmp_path / "git"
    fake.write_text(f"#!/bin/sh\n{script}\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(trials_module, "GIT_TIMEOUT_S", 0.2)
    got = key()
    assert got["git_commit"] is None and got["git_dirty"] is None


def test_reproducibility_key_survives_broken_package_metadata(monkeypatch):
    def broken(name):
        raise RuntimeError("metadata damaged")

    monkeypatch.setattr(trials_module.importlib.metadata, "version", broken)
    assert key()["versions"] == dict.fromkeys(PACKAGES)


@pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")
def test_git_state_names_the_work_tree_and_not_an_ignored_folder_inside_it(tmp_path, monkeypatch):
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))
    assert trials_module._git_state(tmp_path) == (None, None)  # no repository
    repo = tmp_path / "repo"
    (repo / "venv" / "pkg").mkdir(parents=True)
    (repo / ".gitignore").write_text("venv/\n")

    def git(*args):
        command = ["git", "-c", "user.name=t", "-c", "user.email=t@example.invalid", *args]
        subprocess.run(command, cwd=repo, check=True, capture_output=True)

    git("init", "-q")
    git("add", ".gitignore")
    git("commit", "-q", "-m", "first")
    commit, dirty = trials_module._git_state(repo)
    assert commit is not None and len(commit) == 40 and dirty is False
    (repo / "new.py").write_text("x = 1\n")
    assert trials_module._git_state(repo)[1] is True
    assert trials_module._git_state(repo / "venv" / "pkg") == (None, None)
