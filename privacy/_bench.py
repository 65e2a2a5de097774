"""Encode/decode speed of the encoder against a plain-numpy version of the same pipeline,
measured in the same run (the ``python -m privacy bench`` command and ``benchmarks/``)."""

from __future__ import annotations

import math
import os
import platform
import statistics
import sys
import time
from typing import Any, Callable

import numpy as np
from tqdm import tqdm

from .encoding import Encoder, plan_encoding, rotation_signs
from .noise import NoiseKind
from .randomness import RandomSource


def _plain_fwht(x: np.ndarray) -> np.ndarray:
    # Textbook in-place butterflies, one level at a time, normalised at the end.
    a = x.copy()
    h, n = 1, a.size
    while h < n:
        v = a.reshape(-1, 2, h)
        left = v[:, 0, :].copy()
        v[:, 0, :] += v[:, 1, :]
        v[:, 1, :] = left - v[:, 1, :]
        h *= 2
    return a / math.sqrt(n)


def plain_numpy_encode(x: np.ndarray, *, signs: np.ndarray, clip_norm: float, scale: float,
                       bits: int, local_variance: float, rng: np.random.Generator) -> np.ndarray:
    """The same pipeline written the obvious way (the bench's baseline)."""
    d = signs.size
    y = np.zeros(d)
    y[: x.size] = x
    y = _plain_fwht(y * signs)
    norm = np.linalg.norm(y)
    if norm > clip_norm:
        y = y * (clip_norm / norm)
    y = y * scale
    low = np.floor(y)
    z = (low + (rng.random(d) < (y - low))).astype(np.int64)
    z = z + rng.poisson(local_variance / 2, d) - rng.poisson(local_variance / 2, d)
    return np.mod(z, 2 ** bits).astype(np.uint32 if bits <= 32 else np.uint64)


def plain_numpy_decode(agg: np.ndarray, *, signs: np.ndarray, scale: float, bits: int,
                       dim: int) -> np.ndarray:
    s = agg.astype(np.int64)
    s = np.where(s >= 2 ** (bits - 1), s - 2 ** bits, s).astype(np.float64) / scale
    return (_plain_fwht(s) * signs)[:dim]


def _time(fn: Callable[[], Any], repeats: int, bar: tqdm) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
        bar.update(1)
    return statistics.median(times)


def run_bench(*, dim: int = 1 << 20, bits: int = 16, clients: int = 100, repeats: int = 7,
              progress: bool = True) -> dict[str, Any]:
    """Median seconds of encode and decode (Skellam noise) for ours and the plain version."""
    local_stddev = 0.01 / math.sqrt(clients)
    cfg = plan_encoding(dim=dim, clip_norm=1.0, expected_clients=clients,
                        local_stddev=local_stddev, noise=NoiseKind.SKELLAM, bits=bits)
    seed = os.urandom(32)
    enc = Encoder(cfg, rotation_seed=seed)
    signs = rotation_signs(seed, cfg.padded_dim)
    x = np.random.default_rng(0).standard_normal(dim) / math.sqrt(dim)
    source = RandomSource.secure()
    plain_rng = np.random.Generator(np.random.Philox())
    ours_out = enc.encode(x, randomness=source)  # warm-up (BLAS, caches)
    plain_out = plain_numpy_encode(x, signs=signs, clip_norm=cfg.clip_norm, scale=cfg.scale,
                                   bits=bits, local_variance=cfg.local_variance, rng=plain_rng)
    with tqdm(total=4 * repeats, desc="privacy bench", disable=not progress, file=sys.stderr) as bar:
        enc_s = _time(lambda: enc.encode(x, randomness=source), repeats, bar)
        plain_enc_s = _time(lambda: plain_numpy_encode(
            x, signs=signs, clip_norm=cfg.clip_norm, scale=cfg.scale, bits=bits,
            local_variance=cfg.local_variance, rng=plain_rng), repeats, bar)
        dec_s = _time(lambda: enc.decode(ours_out), repeats, bar)
        plain_dec_s = _time(lambda: plain_numpy_decode(plain_out, signs=signs, scale=cfg.scale,
                                                       bits=bits, dim=dim), repeats, bar)
    # Both pipelines decode each other's output to the same vector (up to float rounding).
    agreement = float(np.max(np.abs(enc.decode(plain_out) - plain_numpy_decode(
        plain_out, signs=signs, scale=cfg.scale, bits=bits, dim=dim))))
    return {
        "dim": dim, "padded_dim": cfg.padded_dim, "bits": bits, "clients": clients,
        "noise": cfg.noise.value, "scale": cfg.scale, "local_variance": cfg.local_variance,
        "encode_seconds": enc_s, "decode_seconds": dec_s,
        "plain_encode_seconds": plain_enc_s, "plain_decode_seconds": plain_dec_s,
        "encode_ratio": enc_s / plain_enc_s, "decode_ratio": dec_s / plain_dec_s,
        "encode_mcoords_per_second": dim / enc_s / 1e6,
        "decode_agreement_max_abs": agreement, "repeats": repeats,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "numpy": np.__version__},
    }
