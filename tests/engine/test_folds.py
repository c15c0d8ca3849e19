import numpy as np
import pandas as pd
import pytest

from engine.errors import ConfigError
from engine.train.folds import Fold, format_folds, make_folds


def hourly(start: str, end: str) -> np.ndarray:
    idx = pd.date_range(start, end, freq="1h", tz="UTC", inclusive="left")
    idx = idx[(idx.day_of_week < 5) & (idx.hour >= 14) & (idx.hour < 21)]
    return (idx.as_unit("us").asi8).astype(np.int64)


TS = hourly("2018-01-01", "2025-01-01")


def test_rolling_folds_step_forward_with_an_embargo_and_never_overlap_their_test():
    folds = make_folds(TS, train_years=2, embargo_days=5, test_months=6, step_months=6)
    assert len(folds) == 9
    for f in folds:
        assert f.train_rows[0] < f.train_rows[1] <= f.test_rows[0] < f.test_rows[1] <= len(TS)
        gap = pd.Timestamp(f.test_start) - pd.Timestamp(f.train_end)
        assert gap == pd.Timedelta(days=5)
        # the embargo really drops bars between train end and test start
        assert TS[f.test_rows[0]] - TS[f.train_rows[1] - 1] > 4 * 86_400 * 10**6
    starts = [pd.Timestamp(f.train_start) for f in folds]
    assert all((b - a).days in range(180, 185) for a, b in zip(starts, starts[1:], strict=False))
    tests = [(f.test_rows[0], f.test_rows[1]) for f in folds]
    assert all(a[1] <= b[0] for a, b in zip(tests, tests[1:], strict=False))


def test_expanding_folds_keep_the_first_train_bar():
    folds = make_folds(
        TS, train_years=2, embargo_days=0, test_months=6, step_months=6, expanding=True
    )
    assert {f.train_rows[0] for f in folds} == {0}
    sizes = [f.train_rows[1] for f in folds]
    assert sizes == sorted(sizes) and len(set(sizes)) == len(sizes)


def test_max_folds_keeps_the_most_recent_and_renumbers_them():
    every = make_folds(TS, train_years=2, embargo_days=5, test_months=6, step_months=6)
    last = make_folds(TS, train_years=2, embargo_days=5, test_months=6, step_months=6, max_folds=2)
    assert [f.index for f in last] == [0, 1]
    assert [f.test_rows for f in last] == [f.test_rows for f in every[-2:]]


def test_the_last_test_window_ends_with_the_data_and_the_first_train_window_fits_in_it():
    folds = make_folds(TS, train_years=2, embargo_days=5, test_months=6, step_months=6)
    assert folds[-1].test_end == "2025-01-01" and folds[-1].test_rows[1] == len(TS)
    assert pd.Timestamp(folds[0].train_start) >= pd.Timestamp("2018-01-01")


def test_a_train_window_longer_than_the_data_names_the_file_and_key():
    with pytest.raises(ConfigError, match=r"demo\.yaml: key 'walk_forward\.train_years'") as err:
        make_folds(
            TS, train_years=9, embargo_days=5, test_months=6, step_months=6, source="demo.yaml"
        )
    assert "\n" not in str(err.value)


def test_fold_round_trips_through_a_dict_and_prints():
    fold = make_folds(TS, train_years=2, embargo_days=5, test_months=6, step_months=6)[0]
    assert Fold.from_dict(fold.to_dict()) == fold
    assert fold.name in format_folds([fold])


def test_overlapping_test_windows_are_refused_naming_the_key_unless_opted_in():
    from engine.config import WalkForwardConfig
    from engine.train.folds import walk_forward_folds

    overlapping = WalkForwardConfig(train_years=2, test_months=6, step_months=3)
    with pytest.raises(ConfigError, match=r"demo.yaml: key 'walk_forward.step_months': 3 < test"):
        walk_forward_folds(TS, overlapping, "demo.yaml")
    allowed = overlapping.model_copy(update={"allow_overlapping_tests": True})
    folds = walk_forward_folds(TS, allowed, "demo.yaml")
    assert len(folds) >= 2 and folds[0].test_rows[1] > folds[1].test_rows[0]
    assert walk_forward_folds(TS, WalkForwardConfig(train_years=2), "demo.yaml")
