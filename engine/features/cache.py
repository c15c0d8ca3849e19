"""Features built once per dataset and configuration, cached on disk, memory-mapped by everyone.

The seed's lesson 5: 256 environments each computing RSI, MACD... for 15 tickers x 50,000 bars kept
the CPUs at 100 % for minutes. Here the main process builds ``float32[time, ticker, feature]`` once
(:func:`engine.features.compute.build_feature_set`), writes it under ``<dataset>/.features/<key>/``
as raw ``.npy`` files, and every later process attaches to them with ``np.load(mmap_mode="r")``
(:func:`open_features`): no recompute, no copy, read-only pages shared through the OS page cache.

Cache key = sha256 of (the sha256 of every Parquet file read, as hashed on disk and verified
against the manifest; feature config without normalisation;
:data:`engine.features.compute.FEATURE_CODE_VERSION`; tickers). A file swapped after the build is
refused before anything is built or attached, and features are never cached under the key of bytes
they were not computed from.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from engine import atomic
from engine.errors import DataError
from engine.features.compute import FEATURE_CODE_VERSION, FeatureSet, build_feature_set
from engine.features.schema import FeatureConfig, parse_feature_config
from engine.timeutil import utc_now

__all__ = [
    "CACHE_DIRNAME",
    "cache_dir",
    "feature_key",
    "inputs_checksum",
    "load_or_build_features",
    "open_features",
]

CACHE_DIRNAME = ".features"
_ARRAYS = ("features", "prices", "timestamps", "tradable", "opens", "vwaps")
_META = "meta.json"


def inputs_checksum(hashes: Mapping[str, str]) -> str:
    """One digest of ``{"bars:<T>" | "macro:<S>": sha256}``: the files a feature set is built from."""
    digest = hashlib.sha256()
    for name in sorted(hashes):
        digest.update(f"{name}:{hashes[name]}\n".encode())
    return digest.hexdigest()


def feature_key(dataset_checksum: str, cfg: FeatureConfig, tickers: Sequence[str]) -> str:
    """The cache key: 24 hex digits of sha256(inputs, config, code version, tickers).

    ``dataset_checksum``: :func:`inputs_checksum` of the files read (verified against the manifest).
    """
    payload = {
        "dataset": dataset_checksum,
        "config": cfg.cache_identity(),
        "code_version": FEATURE_CODE_VERSION,
        "tickers": list(tickers),
    }
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def cache_dir(dataset_root: str | Path, key: str) -> Path:
    """``<dataset>/.features/<key>``: where one feature set lives."""
    return Path(dataset_root) / CACHE_DIRNAME / key


def open_features(path: str | Path) -> FeatureSet:
    """Attach to a cached feature set: arrays are read-only memory maps, nothing is computed.

    This is what worker processes call with the path the main process hands them.
    """
    path = Path(path)
    meta_path = path / _META
    if not meta_path.exists():
        raise DataError(
            f"{path}: not a feature cache (no {_META}); build it with load_or_build_features"
        )
    meta = _read_meta(meta_path)
    arrays = {}
    for name in _ARRAYS:
        try:
            arrays[name] = np.load(path / f"{name}.npy", mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError) as err:
            raise DataError(
                f"{path / (name + '.npy')}: unreadable ({err}); delete {path}"
            ) from None
    shape = arrays["features"].shape
    if (
        any(arrays[name].shape != shape[:2] for name in ("prices", "tradable", "opens", "vwaps"))
        or arrays["timestamps"].shape != shape[:1]
        or shape[1] != len(meta["tickers"])
        or shape[2] != len(meta["feature_names"])
    ):
        raise DataError(f"{path}: arrays and {_META} disagree on shapes; delete {path} to rebuild")
    return FeatureSet(
        features=arrays["features"],
        prices=arrays["prices"],
        timestamps=arrays["timestamps"],
        tradable=arrays["tradable"],
        opens=arrays["opens"],
        vwaps=arrays["vwaps"],
        tickers=tuple(meta["tickers"]),
        feature_names=tuple(meta["feature_names"]),
        path=path,
        meta=meta,
    )


def _read_meta(meta_path: Path) -> dict[str, Any]:
    """``meta.json`` of a cache folder, or a one-line ``DataError`` if it is not what we write."""
    folder = meta_path.parent
    try:
        meta = json.loads(meta_path.read_bytes())
    except (OSError, ValueError) as err:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        detail = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
        raise DataError(f"{meta_path}: unreadable ({detail}); delete {folder} to rebuild") from None
    ok = (
        isinstance(meta, dict)
        and isinstance(meta.get("tickers"), list)
        and isinstance(meta.get("feature_names"), list)
        and all(isinstance(x, str) for x in (*meta["tickers"], *meta["feature_names"]))
    )
    if not ok:
        raise DataError(
            f"{meta_path}: not a feature-cache description (tickers, feature_names); "
            f"delete {folder} to rebuild"
        )
    return meta


def _write_cache(fs: FeatureSet, final: Path, meta: dict[str, Any]) -> Path:
    """Write ``fs`` into a temporary folder, then rename it to ``final`` in one step.

    A reader therefore sees either no folder or a complete one. If another process renamed its
    own copy first, ours is discarded and theirs is used (they hold the same bytes).
    """
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.parent / f".tmp-{final.name}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        for name in _ARRAYS:
            target = tmp / f"{name}.npy"
            with open(target, "wb") as fh:
                np.save(fh, np.ascontiguousarray(getattr(fs, name)), allow_pickle=False)
                fh.flush()
                os.fsync(fh.fileno())
        atomic.write_json(tmp / _META, meta)
        try:
            os.rename(tmp, final)
        except OSError:
            if (final / _META).exists():  # another process won the race: keep theirs
                shutil.rmtree(tmp, ignore_errors=True)
                return final
            raise
        atomic._fsync_dir(final.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


@contextlib.contextmanager
def _build_lock(folder: Path, key: str) -> Iterator[None]:
    """Exclusive per-key lock, so concurrent cold starts build once and the others wait.

    ``flock`` is released by the kernel if the holder dies. Where it is not available the lock is
    skipped: the atomic rename still keeps readers safe, only the work may be duplicated.
    """
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        yield
        return
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / f".{key}.lock", "a+b") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def load_or_build_features(
    dataset_root: str | Path,
    cfg: FeatureConfig | Mapping[str, Any] | None = None,
    tickers: Sequence[str] | None = None,
    *,
    workers: int | None = None,
    rebuild: bool = False,
) -> FeatureSet:
    """The dataset's feature set for ``cfg``: memory-mapped from the cache, built there if missing.

    ``tickers``: a subset (in that order) of the dataset's tickers; default all of them. The cache
    folder is ``<dataset>/.features/<key>/`` (:func:`feature_key`); the returned set's ``path`` is
    what worker processes pass to :func:`open_features`. ``rebuild=True`` recomputes even when the
    cache exists (it replaces the folder atomically for new readers); a damaged cache folder (bad
    ``meta.json``, unreadable arrays) is rebuilt the same way. Every file used is verified against
    the manifest's sha256 first: a replaced or changed file is a ``DataError`` naming it.
    """
    from engine.data.store import Dataset, read_series

    cfg = parse_feature_config(cfg)
    dataset = Dataset(dataset_root)
    names = list(dataset.tickers) if tickers is None else list(dict.fromkeys(tickers))
    unknown = [t for t in names if t not in dataset.manifest.tickers]
    if unknown:
        raise DataError(
            f"{dataset.root}: no ticker(s) {', '.join(unknown)} in the dataset; have "
            f"{', '.join(dataset.tickers)}"
        )
    if not names:
        raise DataError(f"{dataset.root}: the dataset has no tickers; build it first")
    macro = list(dataset.macro_symbols) if cfg.macro is None else list(cfg.macro)
    missing = [m for m in macro if m not in dataset.manifest.macro]
    if missing:
        raise DataError(
            f"{dataset.root}: no macro series {', '.join(missing)} (features.macro); have "
            f"{', '.join(dataset.macro_symbols) or 'none'}"
        )
    # Hash the files as they are now (~0.05 s for 15 x 50k bars) and refuse any that differ from
    # the manifest; the key is built from these hashes, and the workers re-check the bytes they
    # parse against them, so a cache is never keyed on data it was not computed from.
    hashes = dataset.verified_hashes(names, macro)
    checksum = inputs_checksum(hashes)
    key = feature_key(checksum, cfg, names)
    final = cache_dir(dataset.root, key)
    if not rebuild and (final / _META).exists():
        with contextlib.suppress(DataError):  # a damaged cache is stale: rebuilt below
            return open_features(final)
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise DataError(
            f"{final.parent}: cannot create the feature cache ({err.strerror}); "
            "make the dataset folder writable"
        ) from None
    with _build_lock(final.parent, key):
        if not rebuild and (final / _META).exists():  # built while we waited for the lock
            with contextlib.suppress(DataError):
                return open_features(final)
        started = time.perf_counter()
        fs = build_feature_set(
            {t: str(dataset.root) for t in names},
            lambda: {
                m: read_series(dataset.root, m, "macro", expected_sha256=hashes[f"macro:{m}"])
                for m in macro
            },
            cfg,
            macro_interval=dataset.manifest.macro_interval,
            ticker_bar=dataset.manifest.timeframe,
            workers=workers,
            expected_sha256={t: hashes[f"bars:{t}"] for t in names},
        )
        meta = dict(fs.meta)
        meta.update(
            key=key,
            dataset_checksum=checksum,
            inputs=hashes,
            dataset_root=str(dataset.root),
            created_utc=str(utc_now()),
            total_build_s=round(time.perf_counter() - started, 4),
        )
        if final.exists():
            # Asked to rebuild, or the folder is damaged (no or bad meta.json): move it aside
            # first (readers that mapped it keep their pages).
            old = final.parent / f".old-{key}-{uuid.uuid4().hex[:8]}"
            os.rename(final, old)
            shutil.rmtree(old, ignore_errors=True)
        for leftover in final.parent.glob(f".tmp-{key}-*"):
            # A crashed build's temporary folder; we hold the key's lock, so nobody writes it.
            shutil.rmtree(leftover, ignore_errors=True)
        return open_features(_write_cache(fs, final, meta))
