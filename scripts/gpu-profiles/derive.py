#!/usr/bin/env python3
"""Derive the simulator's GPU engine profiles from measured operator timings.

Pure standard library (Python >= 3.9). From the repository root:

    python3 scripts/gpu-profiles/derive.py            # print the tables
    python3 scripts/gpu-profiles/derive.py --write    # also regenerate the profiles:
        crates/sim/profiles/<name>.toml     one per shipped GPU profile
        crates/sim/profiles/gpu-profiles.json  the numbers the Rust tests check
                                            (TTFT of a 2k prompt, batch-1 TPOT)
        docs/profiles.md                    method, numbers, comparison, sources

Inputs (datasets/gpu-profiles/, measured by Microsoft's Vidur, MIT licence; see the
README there for the upstream commit and path of every file):
  vidur/compute/<gpu>/meta-llama/<model>/mlp.csv.gz   per-layer operator times (ms) by
                                                      tokens in the batch and TP degree
  vidur/a100/attention.csv.gz                         FlashAttention prefill / paged
                                                      decode kernel times on A100
  vidur/network/<gpu>_dgx/all_reduce.csv.gz           NCCL all-reduce times

Everything the profiles contain is computed here from those files, the model shapes
(Hugging Face config.json values), public GPU specifications and the assumptions
listed under ASSUMPTIONS below. The comparison with published measurements is
computed from the PUBLISHED table (each row: source, URL, the number as published).
"""
from __future__ import annotations

import argparse
import bisect
import csv
import gzip
import json
import math
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "datasets" / "gpu-profiles" / "vidur"
PROFILE_DIR = ROOT / "crates" / "sim" / "profiles"
EXPECTED_JSON = PROFILE_DIR / "gpu-profiles.json"
DOC = ROOT / "docs" / "profiles.md"
SCRIPT = "scripts/gpu-profiles/derive.py"
GiB = 1024 ** 3

OPS = ["input_layernorm", "attn_pre_proj", "attn_rope", "attn_post_proj",
       "post_attention_layernorm", "mlp_up_proj", "mlp_act", "mlp_down_proj", "add"]
GEMM_OPS = {"attn_pre_proj", "attn_post_proj", "mlp_up_proj", "mlp_down_proj"}

# ======================================================================================
# Hardware (public specification sheets). mem_gib = total memory as CUDA reports it
# (vLLM multiplies it by --gpu-memory-utilization); bw = peak memory bandwidth, B/s;
# flops = dense BF16 tensor throughput with FP32 accumulate.
# ======================================================================================
GPUS = {
    "A100-SXM4-80GB": dict(mem_gib=79.15, bw=2.039e12, flops=312e12, data="a100"),
    "H100-SXM5-80GB": dict(mem_gib=79.11, bw=3.35e12, flops=989e12, data="h100"),
    # RTX 5080: 16 GB GDDR7, 256-bit at 30 Gbps = 960 GB/s; dense BF16 with FP32
    # accumulate 112.6 TFLOP/s (GeForce parts run FP32 accumulate at half the FP16 rate).
    "RTX5080-16GB": dict(mem_gib=15.92, bw=0.960e12, flops=112.6e12, data=None),
    # T4, only to show why the seed's two instances do not fit on it (no BF16: fp16).
    "T4-16GB": dict(mem_gib=14.58, bw=0.320e12, flops=65e12, data=None),
}


@dataclass(frozen=True)
class ModelCfg:
    """Model shape (the model's Hugging Face config.json)."""
    name: str
    hf: str
    layers: int
    hidden: int
    heads: int
    kv_heads: int
    inter: int
    vocab: int
    params: float
    max_model_len: int
    head_dim: int = 128

    def kv_bytes_per_token(self, tp: int = 1) -> int:
        """K and V, every layer, this rank's kv heads, 2 bytes (bf16)."""
        return 2 * self.layers * (self.kv_heads // tp) * self.head_dim * 2


MODELS = {
    "llama3-8b": ModelCfg("llama3-8b", "meta-llama/Meta-Llama-3-8B", 32, 4096, 32, 8, 14336, 128256, 8.030e9, 8192),
    "llama2-7b": ModelCfg("llama2-7b", "meta-llama/Llama-2-7b-hf", 32, 4096, 32, 32, 11008, 32000, 6.738e9, 4096),
    "llama3-70b": ModelCfg("llama3-70b", "meta-llama/Meta-Llama-3-70B", 80, 8192, 64, 8, 28672, 128256, 70.554e9, 8192),
    "llama2-70b": ModelCfg("llama2-70b", "meta-llama/Llama-2-70b-hf", 80, 8192, 64, 8, 28672, 32000, 68.977e9, 4096),
    # Mistral-7B-v0.1 has Llama-3-8B's layers (32 x 4096, 32 q / 8 kv heads, 14336) and a
    # 32,000-token vocabulary: a comparison proxy only.
    "mistral-7b": ModelCfg("mistral-7b", "mistralai/Mistral-7B-v0.1", 32, 4096, 32, 8, 14336, 32000, 7.242e9, 8192),
    # Tied embedding: the LM head is the embedding matrix, read every step all the same.
    "llama3.2-3b": ModelCfg("llama3.2-3b", "meta-llama/Llama-3.2-3B-Instruct", 28, 3072, 24, 8, 8192, 128256, 3.2128e9, 131072),
}

# (Vidur GPU directory, model) -> Vidur model directory under compute/<gpu>/
VIDUR_MODEL_DIR = {
    ("a100", "llama3-8b"): "meta-llama/Meta-Llama-3-8B",
    ("a100", "llama2-7b"): "meta-llama/Llama-2-7b-hf",
    ("a100", "llama3-70b"): "meta-llama/Meta-Llama-3-70B",
    ("h100", "llama2-7b"): "meta-llama/Llama-2-7b-hf",
    ("h100", "llama2-70b"): "meta-llama/Llama-2-70b-hf",
}
ATTENTION_FILE = "a100/attention.csv.gz"

# ======================================================================================
# ASSUMPTIONS: what is not measured (each is stated in the profiles and docs/profiles.md).
# ======================================================================================
CPU_STEP_S = 0.5e-3        # vLLM V1 host time per step not hidden behind the GPU
CPU_PER_SEQ_S = 5e-6       # host time per scheduled sequence
H100_ATTN_FLOP_SPEEDUP = 2.0   # prefill attention kernel H100 vs A100 (FA2 ~1.7x, FA3 ~2.5x)
H100_ATTN_FLOOR = 0.8      # H100 attention kernel floor relative to A100's
GPU_UTIL = 0.90            # --gpu-memory-utilization of the single-instance profiles
BLOCK = 16                 # vLLM --block-size on CUDA
OTHER_GIB = 0.25           # non-torch memory (cuBLAS workspace, allocator slack)
NCCL_GIB = 0.25            # NCCL / custom all-reduce buffers when TP > 1
LM_HEAD_SLOPE_RANGE = (1, 256)   # sampled sequences over which lm_head_per_sampled_seq is a secant
SAMPLE_TPOT = (1024, 64)   # TPOT = mean decode step of a 1,024-token prompt over 64 output tokens

# Attention kernels were measured for a Llama-2-70B shard at TP2: 32 q heads, 4 kv heads,
# head dim 128 per GPU. Fits are rescaled by heads per GPU and by the device.
ATTN_REF_QHEADS, ATTN_REF_KVHEADS = 32, 4

FORWARD_TOL = 0.03         # the forward table's knots interpolate the measured curve within 3 %


# ======================================================================================
# helpers
# ======================================================================================
def interp(xs: list[float], ys: list[float], x: float) -> float:
    """Piecewise-linear through (xs, ys). Above the last point: the slope over the upper
    half of the range (the last rows alone are too noisy to give one)."""
    if x <= xs[0]:
        return ys[0]
    if x >= xs[-1]:
        j = min(bisect.bisect_left(xs, xs[-1] / 2), len(xs) - 2)
        s = (ys[-1] - ys[j]) / (xs[-1] - xs[j])
        return ys[-1] + s * (x - xs[-1])
    i = bisect.bisect_right(xs, x)
    x0, x1, y0, y1 = xs[i - 1], xs[i], ys[i - 1], ys[i]
    return y0 + (y1 - y0) * (x - x0) / (x1 - x0)


def solve(A: list[list[float]], b: list[float]) -> list[float]:
    n = len(b)
    M = [row[:] + [b[i]] for i, row in enumerate(A)]
    for i in range(n):
        p = max(range(i, n), key=lambda r: abs(M[r][i]))
        M[i], M[p] = M[p], M[i]
        for r in range(n):
            if r != i and M[r][i] != 0.0:
                f = M[r][i] / M[i][i]
                M[r] = [a - f * c for a, c in zip(M[r], M[i])]
    return [M[i][n] / M[i][i] for i in range(n)]


def wlstsq(X: list[list[float]], y: list[float], w: list[float]) -> list[float]:
    n = len(X[0])
    A = [[sum(w[k] * X[k][i] * X[k][j] for k in range(len(y))) for j in range(n)] for i in range(n)]
    b = [sum(w[k] * X[k][i] * y[k] for k in range(len(y))) for i in range(n)]
    return solve(A, b)


def quantiles(errs: list[float]) -> dict:
    e = sorted(abs(v) for v in errs)
    return dict(n=len(e), median=statistics.median(e), p90=e[min(len(e) - 1, int(0.9 * len(e)))], max=e[-1])


def isotonic(ys: list[float]) -> list[float]:
    """Least-squares non-decreasing fit on relative error (pool adjacent violators)."""
    blocks: list[list[float]] = []          # [sum w*y, sum w, count]
    for y in ys:
        blocks.append([y / y ** 2, 1 / y ** 2, 1])
        while len(blocks) > 1 and blocks[-2][0] / blocks[-2][1] > blocks[-1][0] / blocks[-1][1]:
            a = blocks.pop()
            for i in range(3):
                blocks[-1][i] += a[i]
    return [v for s, w, c in blocks for v in [s / w] * int(c)]


def simplify(xs: list[float], ys: list[float], tol: float) -> list[int]:
    """Indices of the points to keep so that linear interpolation between them stays within
    `tol` (relative) of every point (Douglas-Peucker)."""
    keep, todo = {0, len(xs) - 1}, [(0, len(xs) - 1)]
    while todo:
        i, j = todo.pop()
        worst, k = 0.0, None
        for m in range(i + 1, j):
            yh = ys[i] + (ys[j] - ys[i]) * (xs[m] - xs[i]) / (xs[j] - xs[i])
            if abs(yh / ys[m] - 1) > worst:
                worst, k = abs(yh / ys[m] - 1), m
        if k is not None and worst > tol:
            keep.add(k)
            todo += [(i, k), (k, j)]
    return sorted(keep)


def read_csv_gz(rel: str) -> list[dict]:
    with gzip.open(DATA / rel, "rt", newline="") as f:
        return list(csv.DictReader(f))


# ======================================================================================
# measured data
# ======================================================================================
def mlp_file(gpu_dir: str, model: str) -> str:
    return f"compute/{gpu_dir}/{VIDUR_MODEL_DIR[(gpu_dir, model)]}/mlp.csv.gz"


def load_mlp(gpu_dir: str, model: str) -> dict[int, tuple[list[int], dict[str, list[float]]]]:
    """{tp: (token counts, {op: per-layer ms})}: medians; repeated rows averaged."""
    acc: dict[tuple[int, int], dict[str, list[float]]] = {}
    for r in read_csv_gz(mlp_file(gpu_dir, model)):
        d = acc.setdefault((int(r["num_tensor_parallel_workers"]), int(r["num_tokens"])), {})
        for op in OPS + ["emb"]:
            d.setdefault(op, []).append(float(r[f"time_stats.{op}.median"]))
    out = {}
    for tp in sorted({k[0] for k in acc}):
        toks = sorted(n for (t, n) in acc if t == tp)
        out[tp] = (toks, {op: [statistics.fmean(acc[(tp, n)][op]) for n in toks] for op in OPS + ["emb"]})
    return out


def load_allreduce(gpu_dir: str) -> dict[int, tuple[list[float], list[float]]]:
    """{tp: (bytes, ms)}: NCCL all-reduce within one node (num_workers == devices_per_node)."""
    acc: dict[tuple[int, int], list[float]] = {}
    for r in read_csv_gz(f"network/{gpu_dir}_dgx/all_reduce.csv.gz"):
        if r.get("collective", "all_reduce") != "all_reduce" or r["num_workers"] != r["devices_per_node"]:
            continue
        acc.setdefault((int(r["num_workers"]), int(r["size"])), []).append(float(r["time_stats.all_reduce.median"]))
    out = {}
    for tp in sorted({k[0] for k in acc}):
        sizes = sorted(s for (t, s) in acc if t == tp)
        out[tp] = ([float(s) for s in sizes], [statistics.median(acc[(tp, s)]) for s in sizes])
    return out


def fit_attention() -> dict:
    """Fit the measured A100 attention kernels (per layer, ms):
    prefill a + b*n + c*pairs (pairs = n*(ctx + (n+1)/2), the simulator's definition),
    decode  a + c*sum(ctx); least squares on relative error."""
    P, D = [], []
    for r in read_csv_gz(ATTENTION_FILE):
        if r["is_prefill"] == "True":
            n, c = int(r["prefill_chunk_size"]), int(r["kv_cache_size"])
            P.append(([1.0, n, n * (c + (n + 1) / 2)], float(r["time_stats.attn_prefill.median"])))
        else:
            b, c = int(r["batch_size"]), int(r["kv_cache_size"])
            D.append(([1.0, b * c], float(r["time_stats.attn_decode.median"])))
    cp = wlstsq([x for x, _ in P], [y for _, y in P], [1 / y ** 2 for _, y in P])
    cd = wlstsq([x for x, _ in D], [y for _, y in D], [1 / y ** 2 for _, y in D])
    rel = lambda rows, co: quantiles([sum(a * b for a, b in zip(x, co)) / y - 1 for x, y in rows])
    return dict(prefill=tuple(cp), decode=(cd[0], cd[1]),
                prefill_err=rel(P, cp), decode_err=rel(D, cd),
                prefill_rows=len(P), decode_rows=len(D),
                prefill_pair_tflops=4 * ATTN_REF_QHEADS * 128 / (cp[2] * 1e-3) / 1e12,
                decode_eff_bw_gbs=2 * ATTN_REF_KVHEADS * 128 * 2 / (cd[1] * 1e-3) / 1e9)


ATTN = fit_attention()


# ======================================================================================
# The simulator's latency model, exactly as crates/sim/src/profile.rs computes it
# ======================================================================================
@dataclass
class Work:
    """StepWork: what one step computes."""
    prefill_tokens: int = 0
    prefill_attn_pairs: float = 0.0
    decode_seqs: int = 0
    decode_ctx_tokens: int = 0
    sampled_seqs: int = 0

    def add_prefill(self, n: int, ctx: int, samples: bool) -> "Work":
        self.prefill_tokens += n
        self.prefill_attn_pairs += n * (ctx + (n + 1) / 2)
        self.sampled_seqs += 1 if samples else 0
        return self

    def add_decode(self, ctx: int) -> "Work":
        self.decode_seqs += 1
        self.decode_ctx_tokens += ctx
        self.sampled_seqs += 1
        return self


@dataclass
class Latency:
    """LatencyModel (seconds)."""
    step_overhead: float
    prefill_per_token: float
    prefill_per_attn_token: float
    decode_per_seq: float
    decode_per_ctx_token: float
    lm_head_per_sampled_seq: float
    forward: list[tuple[int, float]]

    def forward_secs(self, tokens: int) -> float:
        t = self.forward
        if not t or tokens == 0:
            return 0.0
        x = float(tokens)
        if x <= t[0][0]:
            return t[0][1]
        for i, (k, _) in enumerate(t):
            if k >= x:
                (x0, y0), (x1, y1) = t[i - 1], t[i]
                return y0 + (y1 - y0) * (x - x0) / (x1 - x0)
        last = t[-1]
        mid = next((k for k in reversed(t) if k[0] <= last[0] / 2.0), t[0])
        slope = (last[1] - mid[1]) / (last[0] - mid[0]) if last[0] > mid[0] else 0.0
        return last[1] + slope * (x - last[0])

    def step_secs(self, w: Work) -> float:
        return (self.forward_secs(w.prefill_tokens + w.decode_seqs)
                + self.lm_head_per_sampled_seq * w.sampled_seqs
                + self.step_overhead
                + self.prefill_per_token * w.prefill_tokens
                + self.prefill_per_attn_token * w.prefill_attn_pairs
                + self.decode_per_seq * w.decode_seqs
                + self.decode_per_ctx_token * w.decode_ctx_tokens)

    # ---- a lone request (or identical ones), as the simulator's Engine schedules it ----
    def ttft(self, prompt: int, budget: int) -> float:
        """Prompt alone, chunked by `budget` tokens per step (vLLM V1 chunked prefill)."""
        t, done = 0.0, 0
        while done < prompt:
            n = min(budget, prompt - done)
            t += self.step_secs(Work().add_prefill(n, done, done + n == prompt))
            done += n
        return t

    def tpot(self, prompt: int, out: int, batch: int = 1) -> float:
        """Mean decode step while `batch` requests of `prompt` tokens produce `out` tokens."""
        steps = []
        for k in range(1, out):
            w = Work()
            for _ in range(batch):
                w.add_decode(prompt + k)
            steps.append(self.step_secs(w))
        return statistics.fmean(steps)

    def step(self, prefill=(), decode=(), completes: int | None = None) -> float:
        """A step of prefill chunks (n, ctx) and decodes (context lengths)."""
        prefill = list(prefill)
        completes = len(prefill) if completes is None else completes
        w = Work()
        for i, (n, ctx) in enumerate(prefill):
            w.add_prefill(n, ctx, i < completes)
        for ctx in decode:
            w.add_decode(ctx)
        return self.step_secs(w)


# ======================================================================================
# The derivation: a component model of one vLLM V1 step from the measured timings
# ======================================================================================
@dataclass
class Derived:
    key: str
    gpu: str
    model: ModelCfg
    tp: int
    toks: list[int]                # token counts with measurements
    layer_ms: list[float]          # sum of the measured per-layer ops at toks (ms)
    emb_ms: list[float]
    up_ms: list[float]             # fused gate/up GEMM per layer (for the LM head)
    allreduce: tuple[list[float], list[float]] | None
    attn_prefill_scale: float      # multiplies the A100 32-q-head prefill fit
    attn_decode_scale: float       # multiplies the A100 4-kv-head per-context-token term
    attn_floor_scale: float
    sources: dict                  # term -> where it comes from (text)
    kind: str = "measured"         # measured | ratio | transferred | proxy
    gpu_util: float = GPU_UTIL
    instances_per_gpu: int = 1
    max_num_batched_tokens: int = 2048
    max_num_seqs: int = 256
    shipped: bool = True
    stands_for: str | None = None  # proxies: the shipped profile they check

    # ---- components (seconds) ----
    def t_fwd(self, n: float) -> float:
        """Linear layers, norms, activations, rope, embedding [+ 2 all-reduces per layer]."""
        L = self.model.layers
        ms = L * interp(self.toks, self.layer_ms, n) + interp(self.toks, self.emb_ms, n)
        if self.tp > 1 and self.allreduce:
            ms += 2 * L * interp(*self.allreduce, n * self.model.hidden * 2)
        return ms * 1e-3

    def t_lmhead(self, seqs: int) -> float:
        """LM head [seqs x hidden] x [hidden x vocab/tp]: same K as the fused gate/up GEMM
        [hidden x 2*inter/tp], so its measured time is scaled by the output width."""
        if seqs <= 0:
            return 0.0
        return self.model.vocab / (2 * self.model.inter) * interp(self.toks, self.up_ms, seqs) * 1e-3

    def attn_prefill_terms(self) -> tuple[float, float, float]:
        """(floor per step, per new token, per attended pair), seconds, all layers."""
        a, b, c = ATTN["prefill"]
        L = self.model.layers * 1e-3
        return L * a * self.attn_floor_scale, L * b * self.attn_prefill_scale, L * c * self.attn_prefill_scale

    def attn_decode_terms(self) -> tuple[float, float]:
        """(floor per step, per context token), seconds, all layers."""
        a, c = ATTN["decode"]
        L = self.model.layers * 1e-3
        return L * a * self.attn_floor_scale, L * c * self.attn_decode_scale

    def step(self, prefill=(), decode=(), completes: int | None = None) -> float:
        """The full component model of one step."""
        prefill, decode = list(prefill), list(decode)
        n = sum(p[0] for p in prefill) + len(decode)
        sampled = len(decode) + (len(prefill) if completes is None else completes)
        t = CPU_STEP_S + CPU_PER_SEQ_S * (len(prefill) + len(decode)) + self.t_fwd(n) + self.t_lmhead(sampled)
        if prefill:
            fp, bp, cp = self.attn_prefill_terms()
            t += fp + sum(bp * m + cp * m * (ctx + (m + 1) / 2) for m, ctx in prefill)
        if decode:
            fd, cd = self.attn_decode_terms()
            t += fd + cd * sum(decode)
        return t

    # ---- the simulator's format ----
    def lm_head_split(self) -> tuple[float, float]:
        """(weight read paid once per step, cost per sampled sequence): the secant of the
        measured curve over LM_HEAD_SLOPE_RANGE sampled sequences."""
        lo, hi = LM_HEAD_SLOPE_RANGE
        slope = (self.t_lmhead(hi) - self.t_lmhead(lo)) / (hi - lo)
        return self.t_lmhead(lo) - slope * lo, slope

    def forward_table(self) -> list[tuple[int, float]]:
        """T_fwd at the measured token counts, made non-decreasing (the simulator requires
        it; the measurements dip in places where cuBLAS picks another kernel) by isotonic
        regression on relative error, then thinned to the knots that keep linear
        interpolation within FORWARD_TOL of that curve."""
        xs = self.toks
        iso = isotonic([self.t_fwd(n) for n in xs])
        return [(xs[i], iso[i]) for i in simplify(xs, iso, FORWARD_TOL)]

    def forward_error(self) -> dict:
        """The forward table against every measured row (relative)."""
        kx, ky = zip(*self.forward_table())
        return quantiles([interp(list(kx), list(ky), n) / self.t_fwd(n) - 1 for n in self.toks])

    def latency(self) -> Latency:
        """The profile's LatencyModel, as written to its TOML file (6 significant digits)."""
        return rounded(self.exact_latency())

    def exact_latency(self) -> Latency:
        lm_fixed, lm_slope = self.lm_head_split()
        floor_d, ctx_d = self.attn_decode_terms()
        _, per_tok_p, pair_p = self.attn_prefill_terms()
        return Latency(step_overhead=CPU_STEP_S + lm_fixed + floor_d,
                       prefill_per_token=per_tok_p, prefill_per_attn_token=pair_p,
                       decode_per_seq=CPU_PER_SEQ_S, decode_per_ctx_token=ctx_d,
                       lm_head_per_sampled_seq=lm_slope, forward=self.forward_table())

    # ---- memory ----
    def kv_capacity(self) -> dict:
        """vLLM V1: KV = utilisation x memory - weights - activation peak of the profiling
        run - other. Activation peak = max(dummy forward at max_num_batched_tokens: fused
        gate/up output + two hidden-size buffers, x1.5 for temporaries; dummy sampler:
        max_num_seqs x vocab fp32 logits, x2). CUDA graphs come out of the 1 - utilisation
        headroom. Uncertainty of the overheads: about +-0.3 GiB."""
        m, g = self.model, GPUS[self.gpu]
        budget = g["mem_gib"] * self.gpu_util
        weights = m.params * 2 / GiB / self.tp
        fwd_peak = 1.5 * self.max_num_batched_tokens * (2 * m.inter / self.tp + 2 * m.hidden) * 2 / GiB
        sampler_peak = 2 * self.max_num_seqs * m.vocab / self.tp * 4 / GiB
        act = max(fwd_peak, sampler_peak)
        other = OTHER_GIB + (NCCL_GIB if self.tp > 1 else 0.0)
        kv = budget - weights - act - other
        per_tok = m.kv_bytes_per_token(self.tp)
        tokens = max(0, int(kv * GiB // per_tok))
        return dict(budget_gib=budget, weights_gib=weights, activation_gib=act, other_gib=other,
                    kv_gib=kv, kv_bytes_per_token=per_tok, kv_tokens=tokens, num_blocks=tokens // BLOCK)

    def max_model_len(self) -> int:
        """The model's context (capped as deployed), or the largest power of two the KV
        cache holds (vLLM refuses to start if one max_model_len sequence does not fit)."""
        tokens = self.kv_capacity()["num_blocks"] * BLOCK
        if tokens >= self.model.max_model_len:
            return self.model.max_model_len
        return 2 ** int(math.log2(tokens)) if tokens > 0 else 0


# ======================================================================================
# building the profiles
# ======================================================================================
def measured(key: str, gpu: str, mname: str, tp: int, layers_from: str | None = None, **kw) -> Derived:
    """Linear layers measured for this model (or one with identical layers) on this GPU."""
    g, model = GPUS[gpu], MODELS[mname]
    vmodel = layers_from or mname
    toks, ops = load_mlp(g["data"], vmodel)[tp]
    layer = [sum(ops[o][i] for o in OPS) for i in range(len(toks))]
    ar = load_allreduce(g["data"]).get(tp) if tp > 1 else None
    h100 = g["data"] == "h100"
    src = f"datasets/gpu-profiles/vidur/{mlp_file(g['data'], vmodel)}"
    sources = {
        "forward": f"Vidur-measured per-layer operator times ({src}, TP{tp}) x {model.layers} layers + embedding"
                   + (f" + 2 x {model.layers} NCCL all-reduces (network/{g['data']}_dgx/all_reduce.csv.gz)" if ar else ""),
        "lm_head": f"the measured fused gate/up GEMM at the same rows x vocab/(2 x intermediate) = {model.vocab}/{2 * model.inter}",
        "attention": "Vidur-measured A100 FlashAttention kernels (a100/attention.csv.gz) scaled by heads per GPU"
                     + (f"; H100: prefill / {H100_ATTN_FLOP_SPEEDUP:g} (assumed), decode x bandwidth ratio, floor x {H100_ATTN_FLOOR:g} (assumed)" if h100 else ""),
    }
    if layers_from:
        sources["forward"] += f" ({MODELS[layers_from].hf} layers have the same shapes as {model.hf})"
    return Derived(key, gpu, model, tp, toks, layer, ops["emb"], ops["mlp_up_proj"], ar,
                   attn_prefill_scale=model.heads / tp / ATTN_REF_QHEADS / (H100_ATTN_FLOP_SPEEDUP if h100 else 1.0),
                   attn_decode_scale=model.kv_heads / tp / ATTN_REF_KVHEADS * GPUS["A100-SXM4-80GB"]["bw"] / g["bw"],
                   attn_floor_scale=H100_ATTN_FLOOR if h100 else 1.0, sources=sources, **kw)


def op_cost(model: ModelCfg, op: str, n: float) -> tuple[float, float]:
    """(bytes moved, FLOPs) of one layer op at n tokens, TP1, 2-byte weights/activations."""
    d, hd = model.hidden, model.head_dim
    qkv_out = (model.heads + 2 * model.kv_heads) * hd
    shapes = {"attn_pre_proj": (d, qkv_out), "attn_post_proj": (model.heads * hd, d),
              "mlp_up_proj": (d, 2 * model.inter), "mlp_down_proj": (model.inter, d)}
    if op in shapes:
        k, m = shapes[op]
        return 2.0 * (k * m + n * (k + m)), 2.0 * n * k * m
    width = {"mlp_act": 3 * model.inter, "attn_rope": 2 * qkv_out}.get(op, 3 * d)
    return 2.0 * n * width, 0.0


def transferred(key: str, src: Derived, gpu: str, mname: str, **kw) -> Derived:
    """No measurement exists for this GPU/model: per op and token count, keep the measured
    efficiency eta = roofline(source)/measured(source) and apply it to the target's roofline
    max(bytes/BW, FLOPs/peak). Elementwise ops keep the source's launch floor. Attention:
    the A100 fit x heads, x FLOP ratio (prefill), x bandwidth ratio (decode)."""
    gs, gt = GPUS[src.gpu], GPUS[gpu]
    ms, mt = src.model, MODELS[mname]
    toks, ops = load_mlp(gs["data"], ms.name)[1]
    floor = {op: min(ops[op]) for op in OPS}
    layer, up = [], []
    for i, n in enumerate(toks):
        tot = 0.0
        for op in OPS:
            bs, fs = op_cost(ms, op, n)
            bt, ft = op_cost(mt, op, n)
            eta = max(bs / gs["bw"], fs / gs["flops"]) * 1e3 / ops[op][i]
            t = max(bt / gt["bw"], ft / gt["flops"]) * 1e3 / eta
            t = t if op in GEMM_OPS else max(t, floor[op])
            tot += t
            if op == "mlp_up_proj":
                up.append(t)
        layer.append(tot)
    emb = [e * (mt.hidden / ms.hidden) * (gs["bw"] / gt["bw"]) for e in ops["emb"]]
    sources = {
        "forward": f"no measurement for {mt.hf} on {gpu}: Vidur's A100 {ms.hf} per-op times "
                   f"({mlp_file(gs['data'], ms.name)}) transferred op by op at each token count with the "
                   f"measured fraction of the A100 roofline applied to the {gpu} roofline (spec-sheet "
                   f"{gt['bw'] / 1e9:.0f} GB/s, {gt['flops'] / 1e12:.1f} TFLOP/s) and the 3B shapes",
        "lm_head": f"the transferred gate/up GEMM x vocab/(2 x intermediate) = {mt.vocab}/{2 * mt.inter} (tied embedding, read every step)",
        "attention": f"Vidur-measured A100 FlashAttention kernels x heads, x A100/{gpu} FLOP ratio (prefill) and bandwidth ratio (decode)",
    }
    return Derived(key, gpu, mt, 1, toks, layer, emb, up, None,
                   attn_prefill_scale=(mt.heads / ATTN_REF_QHEADS) * (gs["flops"] / gt["flops"]),
                   attn_decode_scale=(mt.kv_heads / ATTN_REF_KVHEADS) * (gs["bw"] / gt["bw"]),
                   attn_floor_scale=1.0, sources=sources, kind="transferred", **kw)


def ratio(key: str, base: Derived, num: Derived, den: Derived) -> Derived:
    """base x (num/den) per token count: H100 Llama-2-7B x (A100 Llama-3-8B / A100 Llama-2-7B)."""
    toks = [n for n in base.toks if n <= den.toks[-1]]
    f = lambda e, n: interp(e.toks, e.layer_ms, n)
    g = lambda e, n: interp(e.toks, e.up_ms, n)
    sources = {
        "forward": f"RATIO PROFILE: no {num.model.hf} measurement on {base.gpu}; Vidur-measured H100 "
                   f"{base.model.hf} per-layer times x the measured A100 ratio {num.model.hf} / "
                   f"{den.model.hf} at the same token count",
        "lm_head": f"the H100 gate/up GEMM x the same A100 ratio x vocab/(2 x intermediate) = {num.model.vocab}/{2 * num.model.inter}",
        "attention": base.sources["attention"] + f"; x {num.model.heads}/{base.model.heads} q heads, "
                     f"{num.model.kv_heads}/{base.model.kv_heads} kv heads",
    }
    return Derived(key, base.gpu, num.model, base.tp, toks, [f(base, n) * f(num, n) / f(den, n) for n in toks],
                   [interp(base.toks, base.emb_ms, n) for n in toks],
                   [g(base, n) * g(num, n) / g(den, n) for n in toks], base.allreduce,
                   attn_prefill_scale=base.attn_prefill_scale * num.model.heads / base.model.heads,
                   attn_decode_scale=base.attn_decode_scale * num.model.kv_heads / base.model.kv_heads,
                   attn_floor_scale=base.attn_floor_scale, sources=sources, kind="ratio",
                   max_num_batched_tokens=base.max_num_batched_tokens, max_num_seqs=base.max_num_seqs)


# The spec-sheet profile this derivation replaced (crates/sim/profiles/llama3.2-3b-rtx5080.toml
# before it was removed), for the comparison in docs/profiles.md.
OLD_SEED = Latency(0.0075, 0.00013, 6.9e-9, 0.0001, 1.2e-7, 0.0, [])
OLD_SEED_BLOCKS = 288

# vLLM V1 `vllm serve` defaults (EngineArgs.get_batch_defaults): >= 70 GiB and not an A100
# -> 8192 batched tokens / 1024 sequences; otherwise 2048 / 256.
H100_LIMITS = dict(max_num_batched_tokens=8192, max_num_seqs=1024)


def build() -> dict[str, Derived]:
    E: dict[str, Derived] = {}
    E["llama3-8b-a100"] = measured("llama3-8b-a100", "A100-SXM4-80GB", "llama3-8b", 1)
    E["llama2-7b-a100"] = measured("llama2-7b-a100", "A100-SXM4-80GB", "llama2-7b", 1)
    E["llama2-7b-h100"] = measured("llama2-7b-h100", "H100-SXM5-80GB", "llama2-7b", 1, **H100_LIMITS)
    E["llama3-70b-a100-tp4"] = measured("llama3-70b-a100-tp4", "A100-SXM4-80GB", "llama3-70b", 4)
    E["llama2-70b-h100-tp4"] = measured("llama2-70b-h100-tp4", "H100-SXM5-80GB", "llama2-70b", 4, **H100_LIMITS)
    E["llama3-8b-h100"] = ratio("llama3-8b-h100", E["llama2-7b-h100"], E["llama3-8b-a100"], E["llama2-7b-a100"])
    # The seed: Llama-3.2-3B, two vLLM instances on one 16 GB RTX 5080 at 45 % memory each.
    E["llama3.2-3b-rtx5080-x2"] = transferred("llama3.2-3b-rtx5080-x2", E["llama3-8b-a100"], "RTX5080-16GB",
                                              "llama3.2-3b", gpu_util=0.45, instances_per_gpu=2)
    # Comparison proxies (not shipped): identical layers measured, another vocabulary.
    E["llama2-70b-a100-tp4"] = measured("llama2-70b-a100-tp4", "A100-SXM4-80GB", "llama2-70b", 4,
                                        layers_from="llama3-70b", kind="proxy", shipped=False,
                                        stands_for="llama3-70b-a100-tp4")
    E["mistral7b-a100"] = measured("mistral7b-a100", "A100-SXM4-80GB", "mistral-7b", 1, layers_from="llama3-8b",
                                   kind="proxy", shipped=False, stands_for="llama3-8b-a100")
    # Evidence only: the seed's setup on a T4 leaves almost no KV cache.
    E["llama3.2-3b-t4-x2"] = transferred("llama3.2-3b-t4-x2", E["llama3-8b-a100"], "T4-16GB", "llama3.2-3b",
                                         gpu_util=0.45, instances_per_gpu=2, shipped=False)
    return E


# ======================================================================================
# How far the simulator's format is from the full component model
# ======================================================================================
def step_grid(e: Derived) -> list[tuple[list, list]]:
    maxlen, budget = e.max_model_len(), e.max_num_batched_tokens
    cap = e.kv_capacity()["kv_tokens"]
    g = []
    for b in (1, 2, 4, 8, 16, 32, 64, 128, 256):
        for L in (128, 512, 1024, 2048, 4096, 8192):
            if L < maxlen and b * L <= cap and b <= e.max_num_seqs:
                g.append(([], [L] * b))
    for n in (16, 64, 128, 256, 512, 1024, 2048, 4096, 8192):
        if n > budget:
            continue
        for ctx in (0, 512, 2048, 6144):
            if n + ctx <= maxlen:
                g.append(([(n, ctx)], []))
                for b in (4, 32):
                    if n + b <= budget:
                        g.append(([(n, ctx)], [1024] * b))
    return g


def format_error(e: Derived) -> dict:
    lat = e.latency()
    return quantiles([lat.step(p, d) / e.step(p, d) - 1 for p, d in step_grid(e)])


# ======================================================================================
# Published measurements. Each row: the profile it checks, what was measured, the number
# exactly as published, how it becomes seconds, the source (title, URL) and how the
# profile predicts the same quantity. Only rows read from the source itself are here.
# ======================================================================================
TRT_V09 = ("TensorRT-LLM docs/source/performance.md, \"Low Latency\" tables, revision stating \"All data was "
           "generated using version 0.9.0\" (A100 GPUs (FP16); batch 1; 1st Token Latency (ms))",
           "https://github.com/NVIDIA/TensorRT-LLM/blob/v0.9.0/docs/source/performance.md")
TRT_V05 = ("TensorRT-LLM docs/source/performance.md, \"Low Latency\" tables, \"data is from TensorRT-LLM v0.5\" "
           "(batch 1; 1st Token Latency (ms))",
           "https://github.com/NVIDIA/TensorRT-LLM/blob/138f96d45f90b9667426f7c47297d8c06bafac73/docs/source/performance.md")
LMDEPLOY = ("LMDeploy docs/en/benchmark/a100_fp16.md, \"Static Inference Benchmark\" (lmdeploy v0.1.0a1, "
            "TurboMind, A100-80G, batch 1)",
            "https://github.com/InternLM/lmdeploy/blob/3e391df4673326f79363eebe030876861a9b7090/docs/en/benchmark/a100_fp16.md")
GPTFAST = ("gpt-fast README.md, Benchmarks (8xA100-80GB power-limited to 330 W, batch 1, 5-token prompt, "
           "bf16, torch.compile)",
           "https://github.com/pytorch-labs/gpt-fast/blob/0f925b5d4ce457b89a7ca6c9ce50f42bf2576945/README.md")
LAMBDA_A100 = ("LambdaLabsML vllm-benchmark results/prompt_10/1xA100-80GB-SXM/Meta-Llama-3-8B-Instruct_tp1_len2048.json "
               "(vLLM 0.6 benchmark_serving, 10 ShareGPT prompts at once; multi-step scheduling: one ITL = 10 tokens)",
               "https://github.com/LambdaLabsML/vllm-benchmark/blob/f093afe94aacfb282ac40fef31c94a0010b37e5e/"
               "results/prompt_10/1xA100-80GB-SXM/Meta-Llama-3-8B-Instruct_tp1_len2048.json")
LAMBDA_H100 = ("LambdaLabsML vllm-benchmark results/prompt_10/1xH100-80GB-SXM/Meta-Llama-3-8B-Instruct_tp1_len2048.json "
               "(same setup on H100)",
               "https://github.com/LambdaLabsML/vllm-benchmark/blob/a4f9f4371a1ccac781293837fce2bce0cc6d25cc/"
               "results/prompt_10/1xH100-80GB-SXM/Meta-Llama-3-8B-Instruct_tp1_len2048.json")
NIM = ("NVIDIA NIM docs, \"Llama 3.1 Nemotron Safety Guard Multilingual 8B V1 NIM Performance\" 1.10.1 (Llama-3.1-8B "
       "body; A100 80GB SXM, BF16, genai-perf, tab 500_10, concurrency 1; client-side, includes HTTP)",
       "https://docs.nvidia.com/nim/llama-3-1-nemotron-safety-guard-8b/1.10.1/performance.md")

# The Lambda runs: 10 ShareGPT prompts sent at once (input_lens / output_lens from the files).
LAMBDA_INPUTS = [13, 25, 27, 10, 329, 29, 399, 328, 4, 205]
LAMBDA_OUTPUTS = {"A100": [120, 507, 233, 194, 101, 741, 9, 3, 6, 31],
                  "H100": [120, 429, 233, 194, 101, 741, 9, 3, 6, 31]}
# itls[5] (the 741-token request) after the second-longest request finished: it runs alone.
# A100: itls[5][51:] (itls[1] has 51 entries); H100: itls[5][43:] (itls[1] has 43 entries).
LAMBDA_ALONE_ITLS = {
    "A100": [0.11359138786792755, 0.11417631804943085, 0.11477034911513329, 0.1138208843767643,
             0.11418779566884041, 0.11413628235459328, 0.11412829533219337, 0.11405498906970024,
             0.11385900154709816, 0.11438431963324547, 0.11419577151536942, 0.1141684390604496,
             0.1143205389380455, 0.11422174051404, 0.11386741697788239, 0.11432129889726639,
             0.11424051970243454, 0.11423359811306, 0.11416560783982277, 0.11414492875337601,
             0.11392625793814659, 0.11432396993041039, 0.11464139819145203],
    "H100": [0.0703186159953475, 0.07142963100341149, 0.0704713049926795, 0.07046392900520004,
             0.07049430199549533, 0.07084890000987798, 0.07058184099150822, 0.07049606200598646,
             0.07060661099967547, 0.07044627598952502, 0.07046544000331778, 0.07053173400345258,
             0.07047087399405427, 0.07089377001102548, 0.0702615549962502, 0.07056095100415405,
             0.07142202300019562, 0.07029617599619087, 0.07048715600103606, 0.0704166939976858,
             0.0705245150020346, 0.07057503599207848, 0.07065689000592101, 0.070419669005787,
             0.07055431298795156, 0.07048236401169561, 0.07054511598835234, 0.07050803401216399,
             0.07055284599482547, 0.07048603499424644, 0.07118895500025246],
}
# itls[k][0] of the 7 requests that produced more than one ITL: the first 10 steps, 7-10
# requests decoding together.
LAMBDA_FIRST_ITLS = {
    "A100": [0.11869699507951736, 0.11867262423038483, 0.11902950331568718, 0.119032122194767,
             0.11903095990419388, 0.11859270185232162, 0.11829518526792526],
    "H100": [0.0752504760021111, 0.07526854600291699, 0.07523674500407651, 0.07525899600295816,
             0.07538828899851069, 0.07534613499592524, 0.07505241699982435],
}
LAMBDA_MEAN_TTFT_MS = {"A100": 126.86908692121507, "H100": 62.426355000934564}


def lambda_first_chunk(gpu: str) -> Callable:
    def pred(lat: Latency) -> float:
        t = 0.0
        for s in range(1, 11):
            t += lat.step((), [i + s for i, o in zip(LAMBDA_INPUTS, LAMBDA_OUTPUTS[gpu]) if o > s])
        return t / 10
    return pred


def lambda_alone(first_token: int, last_token: int, prompt: int = 29) -> Callable:
    return lambda lat: statistics.fmean(lat.step((), [prompt + k]) for k in range(first_token, last_token))


def batch_prefill(lat: Latency) -> float:
    return lat.step([(n, 0) for n in LAMBDA_INPUTS], ())


@dataclass
class Published:
    profile: str
    metric: str
    setting: str
    quoted: str                    # the number(s) exactly as published
    seconds: float                 # what the profile is compared with
    derivation: str                # how `seconds` follows from `quoted`
    source: tuple[str, str]        # (title, URL)
    predict: Callable[[Latency, "Derived"], float]


def ttft(prompt: int) -> Callable:
    return lambda lat, e: lat.ttft(prompt, e.max_num_batched_tokens)


def tpot(prompt: int, out: int) -> Callable:
    return lambda lat, e: lat.tpot(prompt, out)


def on_lat(f: Callable) -> Callable:
    return lambda lat, e: f(lat)


PUBLISHED = [
    Published("llama2-7b-a100", "TTFT", "128-token prompt, batch 1", "LLaMA 7B, 128: 16.2", 16.2e-3, "ms", TRT_V09, ttft(128)),
    Published("llama2-7b-a100", "TTFT", "2048-token prompt, batch 1", "LLaMA 7B, 2048: 132.4", 132.4e-3, "ms", TRT_V09, ttft(2048)),
    Published("mistral7b-a100", "TTFT", "128-token prompt, batch 1", "Mistral 7B, 128: 16.3", 16.3e-3, "ms", TRT_V09, ttft(128)),
    Published("mistral7b-a100", "TTFT", "2048-token prompt, batch 1", "Mistral 7B, 2048: 139.6", 139.6e-3, "ms", TRT_V09, ttft(2048)),
    Published("llama2-70b-a100-tp4", "TTFT", "128-token prompt, batch 1", "LLaMA 70B, TP 4, 128: 45.6", 45.6e-3, "ms", TRT_V09, ttft(128)),
    Published("llama2-70b-a100-tp4", "TTFT", "2048-token prompt, batch 1", "LLaMA 70B, TP 4, 2048: 377", 377e-3, "ms", TRT_V05, ttft(2048)),
    Published("llama2-7b-a100", "TTFT", "128-token prompt, batch 1", "llama2-7b 1/1/128/128: FTL(ave) 0.022", 0.022, "s", LMDEPLOY, ttft(128)),
    Published("llama2-7b-a100", "TTFT", "2048-token prompt, batch 1", "llama2-7b 1/1/2048/128: FTL(ave) 0.139", 0.139, "s", LMDEPLOY, ttft(2048)),
    Published("llama2-7b-a100", "TPOT", "2048 in / 128 out, batch 1", "llama2-7b 1/1/2048/128: 50% 0.01", 0.01, "s (median token latency)", LMDEPLOY, tpot(2048, 128)),
    Published("llama2-7b-a100", "TPOT", "1 in / 128 out, batch 1", "llama2-7b 1/1/1/128: 100.02 out tok/s, FTL(ave) 0.011",
              (128 / 100.02 - 0.011) / 127, "(128 / 100.02 - 0.011) / 127", LMDEPLOY, tpot(1, 128)),
    Published("llama2-70b-a100-tp4", "TTFT", "128-token prompt, batch 1", "llama2-70b 1/4/128/128: FTL(ave) 0.074", 0.074, "s", LMDEPLOY, ttft(128)),
    Published("llama2-70b-a100-tp4", "TTFT", "2048-token prompt, batch 1", "llama2-70b 1/4/2048/128: FTL(ave) 0.402", 0.402, "s", LMDEPLOY, ttft(2048)),
    Published("llama2-70b-a100-tp4", "TPOT", "2048 in / 128 out, batch 1", "llama2-70b 1/4/2048/128: 50% 0.031", 0.031, "s (median token latency)", LMDEPLOY, tpot(2048, 128)),
    Published("llama2-7b-a100", "TPOT", "5-token prompt, batch 1", "Llama-2-7B Base: 104.9 tok/s", 1 / 104.9, "1 / 104.9", GPTFAST, tpot(5, 200)),
    Published("llama2-70b-a100-tp4", "TPOT", "5-token prompt, batch 1", "Llama-2-70B, 4 GPUs: 38.01 tok/s", 1 / 38.01, "1 / 38.01", GPTFAST, tpot(5, 200)),
    Published("llama3-8b-a100", "TPOT", "batch 1, context 540-770", "itls[5][51:] (23 values, 0.1136-0.1148 s)",
              statistics.fmean(LAMBDA_ALONE_ITLS["A100"]) / 10, "mean / 10 tokens per ITL", LAMBDA_A100, on_lat(lambda_alone(511, 741))),
    Published("llama3-8b-a100", "decode step", "7-10 requests, context 5-410", "itls[k][0], 7 requests (0.1183-0.1190 s)",
              statistics.fmean(LAMBDA_FIRST_ITLS["A100"]) / 10, "mean / 10 steps per ITL", LAMBDA_A100, on_lat(lambda_first_chunk("A100"))),
    Published("llama3-8b-a100", "TTFT", "10 prompts at once, 1,369 tokens", f"mean_ttft_ms {LAMBDA_MEAN_TTFT_MS['A100']}",
              LAMBDA_MEAN_TTFT_MS["A100"] * 1e-3, "ms; one batched prefill", LAMBDA_A100, on_lat(batch_prefill)),
    Published("llama3-8b-h100", "TPOT", "batch 1, context 460-770", "itls[5][43:] (31 values, 0.0703-0.0714 s)",
              statistics.fmean(LAMBDA_ALONE_ITLS["H100"]) / 10, "mean / 10 tokens per ITL", LAMBDA_H100, on_lat(lambda_alone(431, 741))),
    Published("llama3-8b-h100", "decode step", "7-10 requests, context 5-410", "itls[k][0], 7 requests (0.0751-0.0754 s)",
              statistics.fmean(LAMBDA_FIRST_ITLS["H100"]) / 10, "mean / 10 steps per ITL", LAMBDA_H100, on_lat(lambda_first_chunk("H100"))),
    Published("llama3-8b-h100", "TTFT", "10 prompts at once, 1,369 tokens", f"mean_ttft_ms {LAMBDA_MEAN_TTFT_MS['H100']}",
              LAMBDA_MEAN_TTFT_MS["H100"] * 1e-3, "ms; one batched prefill", LAMBDA_H100, on_lat(batch_prefill)),
    Published("llama3-8b-a100", "TTFT", "500-token prompt, concurrency 1", "Concurrency 1: TTFT (ms) 48.3 (digits after 48.3 not in the copy read)",
              48.3e-3, "ms", NIM, ttft(500)),
]

# H100 rows published only for FP8: an FP8 engine runs its GEMMs ~1.5-2x faster than BF16, so
# these are lower bounds for the BF16 profiles, not errors.
FP8_TRT_V09 = (TRT_V09[0].replace("A100 GPUs (FP16)", "H100 GPUs (FP8)"), TRT_V09[1])
FP8_TRT_V05 = TRT_V05
FP8_BOUNDS = [
    Published("llama2-7b-h100", "TTFT", "128-token prompt, batch 1, FP8", "LLaMA 7B, 128: 6.3", 6.3e-3, "ms", FP8_TRT_V09, ttft(128)),
    Published("llama2-7b-h100", "TTFT", "2048-token prompt, batch 1, FP8", "LLaMA 7B, 2048: 30.8", 30.8e-3, "ms", FP8_TRT_V09, ttft(2048)),
    Published("llama2-70b-h100-tp4", "TTFT", "128-token prompt, batch 1, FP8", "LLaMA 70B, TP 4, 128: 19.6", 19.6e-3, "ms", FP8_TRT_V09, ttft(128)),
    Published("llama2-70b-h100-tp4", "TTFT", "2048-token prompt, batch 1, FP8", "LLaMA 70B, TP 4, 2048: 109", 109e-3, "ms", FP8_TRT_V05, ttft(2048)),
]


def compare(E: dict[str, Derived], rows: list[Published]) -> list[dict]:
    out = []
    for r in rows:
        e = E[r.profile]
        pred = r.predict(e.latency(), e)
        out.append(dict(profile=r.profile, checks=e.stands_for or r.profile, metric=r.metric, setting=r.setting,
                        quoted=r.quoted, published_ms=r.seconds * 1e3, profile_ms=pred * 1e3,
                        error_pct=(pred / r.seconds - 1) * 100, source=r.source[0], url=r.source[1]))
    return out


def error_summary(rows: list[dict], key: str) -> dict:
    """|error| over the rows that check profile `key`: its own and its proxies'."""
    own = [abs(r["error_pct"]) for r in rows if r["profile"] == key]
    proxy = [abs(r["error_pct"]) for r in rows if r["checks"] == key and r["profile"] != key]
    s = lambda v: dict(n=len(v), median=statistics.median(v), max=max(v)) if v else None
    return dict(own=s(own), proxy=s(proxy), proxy_names=sorted({r["profile"] for r in rows if r["checks"] == key and r["profile"] != key}))


def error_text(s: dict, fp8: list[dict]) -> str:
    parts = []
    if s["own"]:
        o = s["own"]
        parts.append(f"{o['n']} published measurement{'s' if o['n'] > 1 else ''}, absolute error median {o['median']:.0f} %, max {o['max']:.0f} %")
    if s["proxy"]:
        p = s["proxy"]
        parts.append(f"{p['n']} {'more' if s['own'] else 'published measurements'} through {', '.join(s['proxy_names'])} (same layers, other vocabulary), "
                     f"absolute error median {p['median']:.0f} %, max {p['max']:.0f} %")
    if not parts:
        parts.append("no published measurement found")
        if fp8:
            ok = all(r["profile_ms"] >= r["published_ms"] for r in fp8)
            parts.append(f"{'above' if ok else 'NOT above'} all {len(fp8)} published FP8 lower bounds")
    return "; ".join(parts)


# ======================================================================================
# per-profile numbers
# ======================================================================================
def ttft_prompts(e: Derived) -> list[tuple[int, str]]:
    """1k / 2k / 4k, the last cut to max_model_len - 1 where 4k does not fit."""
    out = []
    for p, label in ((1024, "1k"), (2048, "2k"), (4096, "4k")):
        q = min(p, e.max_model_len() - 1)
        out.append((q, label if q == p else f"{label}*"))
    return out


def numbers(e: Derived) -> dict:
    lat, cap = e.latency(), e.kv_capacity()
    prompt, out = SAMPLE_TPOT
    lm_fixed, lm_slope = e.lm_head_split()
    floor_d, _ = e.attn_decode_terms()
    return dict(
        fwd_ms={n: lat.forward_secs(n) * 1e3 for n in (1, 128, 512, 2048)},
        ttft_ms={label: (p, lat.ttft(p, e.max_num_batched_tokens) * 1e3) for p, label in ttft_prompts(e)},
        ttft_2k_s=lat.ttft(2048, e.max_num_batched_tokens),
        tpot_b1_ms=lat.tpot(prompt, out) * 1e3, tpot_b32_ms=lat.tpot(prompt, out, 32) * 1e3,
        lm_head_1_ms=e.t_lmhead(1) * 1e3, lm_fixed_ms=lm_fixed * 1e3, lm_slope_us=lm_slope * 1e6,
        attn_floor_ms=floor_d * 1e3, kv=cap, max_model_len=e.max_model_len(),
        marginal_prefill_us=(lat.forward_secs(2048) - lat.forward_secs(1024)) / 1024 * 1e6,
        format_err=format_error(e), forward_err=e.forward_error())


# ======================================================================================
# output: TOML, JSON, markdown
# ======================================================================================
def fmt(v: float) -> str:
    return f"{v:.6g}"


def describe(e: Derived) -> str:
    return (f"{e.model.hf} (bf16) on {'one ' if e.tp == 1 else f'{e.tp} x '}{e.gpu}"
            + (f" (TP{e.tp})" if e.tp > 1 else "")
            + (f", {e.instances_per_gpu} instances sharing the GPU" if e.instances_per_gpu > 1 else "")
            + f", vLLM V1 defaults (block {BLOCK}, max_num_batched_tokens {e.max_num_batched_tokens}, "
              f"max_num_seqs {e.max_num_seqs}), --gpu-memory-utilization {e.gpu_util:g}")


def source_line(e: Derived, errs: str) -> str:
    gpu = e.gpu.split("-")[0]
    what = {"measured": f"Vidur-measured {gpu} operator timings ({e.model.hf.split('/')[1]}, TP{e.tp})",
            "ratio": "ratio profile: Vidur-measured H100 Llama-2-7B timings x measured A100 Llama-3-8B/Llama-2-7B ratio",
            "transferred": "no measurement exists: Vidur-measured A100 Llama-3-8B timings transferred by roofline to the "
                           "RTX 5080 and Llama-3.2-3B"}[e.kind]
    attn = "measured A100 attention kernels" + ("" if gpu == "A100" else " scaled")
    shared = (f"; {e.instances_per_gpu} instances share the GPU, which the simulator does not model"
              if e.instances_per_gpu > 1 else "")
    return f"{what}, {attn}, KV from GPU memory{shared}; vs published: {errs}; see docs/profiles.md"


def toml_profile(e: Derived, nums: dict, errs: str, rows: list[dict]) -> str:
    lat, cap, fe = e.latency(), nums["kv"], nums["format_err"]
    prompt, out = SAMPLE_TPOT
    lines = [
        f"# {e.key}: {describe(e)}.",
        f"# GENERATED by {SCRIPT} --write from datasets/gpu-profiles/ (measured by Vidur, MIT);",
        "# do not edit by hand. Method, assumptions and sources: docs/profiles.md.",
        "#",
        "# Where each number comes from:",
        f"# forward: {e.sources['forward']}.",
        f"#   [tokens in step, seconds] at measured token counts 1..{e.toks[-1]}, made non-decreasing (isotonic fit)",
        f"#   and thinned to knots within {FORWARD_TOL * 100:g} % of it: against all {nums['forward_err']['n']} measured rows"
        f" median {nums['forward_err']['median'] * 100:.1f} %, max {nums['forward_err']['max'] * 100:.1f} %.",
        f"# lm_head_per_sampled_seq: {e.sources['lm_head']}; the secant of that curve over"
        f" {LM_HEAD_SLOPE_RANGE[0]}..{LM_HEAD_SLOPE_RANGE[1]} sampled sequences ({nums['lm_slope_us']:.2f} us per sequence).",
        f"# step_overhead = host time per step {CPU_STEP_S * 1e3:g} ms (assumed) + the LM head's weight read"
        f" {nums['lm_fixed_ms']:.3f} ms (the same curve at 1 sequence minus one slope)",
        f"#   + the attention kernels' per-step floor {nums['attn_floor_ms']:.3f} ms (the measured decode-kernel floor x layers"
        + (f" x {e.attn_floor_scale:g}, assumed)." if e.attn_floor_scale != 1.0 else ")."),
        f"# prefill_per_token, prefill_per_attn_token: {e.sources['attention']};",
        f"#   A100 prefill fit per layer {ATTN['prefill'][1]:.4g} ms/token + {ATTN['prefill'][2]:.4g} ms/pair "
        f"(median |error| {ATTN['prefill_err']['median'] * 100:.0f} % over {ATTN['prefill_rows']} kernels).",
        f"# decode_per_ctx_token: the same kernels' decode fit {ATTN['decode'][1]:.4g} ms per context token per layer"
        f" (median |error| {ATTN['decode_err']['median'] * 100:.0f} % over {ATTN['decode_rows']} kernels) x kv heads x bandwidth.",
        f"# decode_per_seq: host time per sequence {CPU_PER_SEQ_S * 1e6:g} us (assumed).",
        f"# num_blocks: {cap['budget_gib']:.2f} GiB ({e.gpu_util:g} x {GPUS[e.gpu]['mem_gib']} GiB) - weights {cap['weights_gib']:.2f}"
        f" - activation peak {cap['activation_gib']:.2f} - other {cap['other_gib']:.2f} = {cap['kv_gib']:.2f} GiB",
        f"#   / {cap['kv_bytes_per_token']} B per token = {cap['kv_tokens']} tokens = {cap['num_blocks']} blocks of {BLOCK}.",
        f"# max_model_len: " + (f"the model's {e.model.max_model_len}." if nums['max_model_len'] == e.model.max_model_len
                                 else f"{nums['max_model_len']}, the largest power of two the KV cache holds (vLLM refuses a longer one)."),
        f"# The simulator's format vs the full component model over {fe['n']} steps: |difference| median"
        f" {fe['median'] * 100:.1f} %, max {fe['max'] * 100:.1f} %.",
        "#",
        "# Single request through this profile (engine time, no front end):",
        "#   TTFT " + ", ".join(f"{p} tokens {v:.1f} ms" for _, (p, v) in nums["ttft_ms"].items())
        + f"; TPOT batch 1 ({prompt} + {out}) {nums['tpot_b1_ms']:.2f} ms, batch 32 {nums['tpot_b32_ms']:.2f} ms.",
        f"# Against published measurements: {errs}.",
    ]
    for r in rows:
        lines.append(f"#   {r['metric']}, {r['setting']}: published {r['published_ms']:.2f} ms, profile "
                     f"{r['profile_ms']:.2f} ms ({r['error_pct']:+.0f} %){' via ' + r['profile'] if r['profile'] != e.key else ''}"
                     f" - {r['url']}")
    if e.instances_per_gpu > 1:
        lines += ["#",
                  f"# The {e.instances_per_gpu} instances time-share one GPU. The simulator does not model that yet:"
                  " each simulated",
                  "# instance has the whole GPU between its own steps, so a pair runs up to twice as fast as the real one."]
    if cap["kv_tokens"] < 2 * e.model.max_model_len:
        lines.append(f"# The KV cache holds {cap['kv_tokens']} tokens (about {cap['kv_tokens'] / nums['max_model_len']:.1f} max-length"
                     " sequences; +-0.3 GiB of overhead moves it by +-"
                     f"{int(0.3 * GiB / cap['kv_bytes_per_token'])} tokens): read the real number from vLLM's"
                     " \"GPU KV cache size\" log line.")
    lines += [
        f'name = "{e.key}"',
        f"source = {json.dumps(source_line(e, errs), ensure_ascii=False)}",
        f'model = "{e.model.hf}"',
        "",
        "[limits]",
        f"num_blocks = {cap['num_blocks']}",
        f"block_size = {BLOCK}",
        f"max_num_seqs = {e.max_num_seqs}",
        f"max_num_batched_tokens = {e.max_num_batched_tokens}",
        f"max_model_len = {nums['max_model_len']}",
        "chunked_prefill = true",
        "",
        "[latency]",
        f"step_overhead = {fmt(lat.step_overhead)}",
        f"prefill_per_token = {fmt(lat.prefill_per_token)}",
        f"prefill_per_attn_token = {fmt(lat.prefill_per_attn_token)}",
        f"decode_per_seq = {fmt(lat.decode_per_seq)}",
        f"decode_per_ctx_token = {fmt(lat.decode_per_ctx_token)}",
        f"lm_head_per_sampled_seq = {fmt(lat.lm_head_per_sampled_seq)}",
        "forward = [",
    ]
    lines += [f"    [{n}, {fmt(t)}]," for n, t in lat.forward]
    lines.append("]")
    return "\n".join(lines) + "\n"


def rounded(lat: Latency) -> Latency:
    """The model as written to TOML (6 significant digits), so every printed number is what
    the simulator computes from the file."""
    r = lambda v: float(fmt(v))
    return Latency(r(lat.step_overhead), r(lat.prefill_per_token), r(lat.prefill_per_attn_token),
                   r(lat.decode_per_seq), r(lat.decode_per_ctx_token), r(lat.lm_head_per_sampled_seq),
                   [(n, r(t)) for n, t in lat.forward])


def md_table(header: list[str], rows: list[list], align: str | None = None) -> str:
    align = align or "|".join("---" if i == 0 else "---:" for i in range(len(header)))
    out = ["| " + " | ".join(header) + " |", "|" + align + "|"]
    out += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(out)


def doc(E: dict[str, Derived], N: dict[str, dict], rows: list[dict], fp8: list[dict], errs: dict[str, str]) -> str:
    global CPU_STEP_S
    ship = [k for k, e in E.items() if e.shipped]
    prompt, out = SAMPLE_TPOT
    a = ATTN
    s = []

    def attention_share(e: Derived, p: int) -> float:
        lat = e.latency()
        no_attn = Latency(lat.step_overhead, 0.0, 0.0, lat.decode_per_seq, 0.0, lat.lm_head_per_sampled_seq, lat.forward)
        return 1 - no_attn.ttft(p, e.max_num_batched_tokens) / lat.ttft(p, e.max_num_batched_tokens)
    attn_share = max(attention_share(E[k], p) for k in ship for p, _ in ttft_prompts(E[k]))
    s.append(f"""# GPU engine profiles

<!-- GENERATED by `python3 {SCRIPT} --write`; edit the script, not this file. -->

The simulator's built-in GPU profiles (`crates/sim/profiles/*.toml`, loadable by name, e.g.
`sim run --profile llama3-8b-a100`) are derived from operator timings **measured on real A100
and H100 GPUs** and published with Microsoft's Vidur simulator (MIT licence; the copied files,
their upstream commits and the licence are in [`datasets/gpu-profiles/`](../datasets/gpu-profiles/README.md)).
No GPU was used to make them. `python3 {SCRIPT}` prints every number below; `--write`
regenerates the profiles, `crates/sim/profiles/gpu-profiles.json` (what the Rust test
`crates/sim/tests/gpu_profiles.rs` checks the simulator's engine against, to 1 %) and this page.

## Method

One vLLM V1 step with prefill chunks (nᵢ new tokens after ctxᵢ computed ones) and decoding
sequences (context Lⱼ), N = Σnᵢ + #decodes tokens and S sequences that sample a token:

```text
t = host time per step + per sequence                                   [assumed, below]
  + T_fwd(N)     L × Σ measured per-layer ops at N + embedding(N)
                 (+ 2L NCCL all-reduces of N × hidden × 2 B at TP > 1)   [measured]
  + T_lm(S)      LM head: the measured gate/up GEMM at S rows × vocab / (2 × intermediate)
  + prefill attention  L × (a_p + Σ b_p·nᵢ + c_p·nᵢ(ctxᵢ + (nᵢ+1)/2))     [measured kernels, fitted]
  + decode attention   L × (a_d + c_d·ΣLⱼ)                              [measured kernels, fitted]
```

* **T_fwd is a table**, read off the measured rows: the per-layer times of the QKV and output
  projections, the fused gate/up and down GEMMs, the two norms, rope, activation and residual
  add (Vidur's `mlp.csv`, median of repeated runs), times the layer count, plus the embedding.
  It is far from linear: a step re-reads every weight whatever its size, so on
  Llama-3-8B/A100 it costs {N['llama3-8b-a100']['fwd_ms'][1]:.2f} ms at 1 token,
  {N['llama3-8b-a100']['fwd_ms'][128]:.2f} ms at 128, {N['llama3-8b-a100']['fwd_ms'][512]:.2f} ms at 512 and
  {N['llama3-8b-a100']['fwd_ms'][2048]:.1f} ms at 2,048 ({N['llama3-8b-a100']['marginal_prefill_us']:.0f} µs per extra token there).
  It is also a staircase: a step of 136 tokens costs as much as one of 192, because the GEMMs work
  in tiles of rows (on Llama-3-8B/A100 {E['llama3-8b-a100'].t_fwd(128) * 1e3:.1f} ms at 128 tokens, {E['llama3-8b-a100'].t_fwd(136) * 1e3:.1f} ms at 136), and in
  places the measurements dip when cuBLAS switches kernels. The table keeps the measured token
  counts (1, 2, 4, then every 8 up to 1,024, coarser above), made non-decreasing by an
  isotonic fit (the simulator requires it) and thinned to the knots that interpolate that curve
  within {FORWARD_TOL * 100:g} %; column "fwd fit" below gives its error against every measured row. Above
  the last measured row the simulator extends it with the slope over the table's upper half.
* **Attention** comes from Vidur's measured A100 kernels (`a100/attention.csv.gz`: FlashAttention
  prefill, chunk 64…4,096 × cached context 0…4,032; paged-attention decode, batch 1…128 ×
  context 32…4,032; a Llama-2-70B shard at TP2 = 32 q heads, 4 kv heads, head dim 128), fitted
  per layer on relative error: prefill {a['prefill'][0]:.4g} + {a['prefill'][1]:.4g}·n + {a['prefill'][2]:.4g}·pairs ms
  (median |error| {a['prefill_err']['median'] * 100:.0f} %, p90 {a['prefill_err']['p90'] * 100:.0f} % over {a['prefill_rows']:,} kernels;
  the pair term is {a['prefill_pair_tflops']:.0f} TFLOP/s), decode {a['decode'][0]:.4g} + {a['decode'][1]:.4g}·ΣL ms
  (median {a['decode_err']['median'] * 100:.0f} %, p90 {a['decode_err']['p90'] * 100:.0f} % over {a['decode_rows']:,} kernels;
  {a['decode_eff_bw_gbs']:.0f} GB/s effective for 2 KiB of K+V per token and layer). Rescaled by
  q heads per GPU (prefill) and kv heads per GPU (decode), and to the H100 as stated below.
* **KV capacity** as vLLM V1 computes it: utilisation × GPU memory − weights − the activation
  peak of its profiling run (the larger of the dummy forward at `max_num_batched_tokens` and the
  dummy sampler over `max_num_seqs` × vocabulary logits) − other memory ({OTHER_GIB} GiB, + {NCCL_GIB}
  GiB of NCCL buffers at TP > 1); tokens = KV bytes / (2 × layers × kv heads per GPU × 128 × 2 B).
* **Scheduler limits** are vLLM V1's `vllm serve` defaults (`EngineArgs.get_batch_defaults`):
  on an H100 (≥ 70 GiB, not an A100) 8,192 batched tokens and 1,024 sequences, otherwise 2,048
  and 256; block size {BLOCK}; chunked prefill on. `max_model_len` is the model's context as
  usually deployed (8,192 for Llama-3, 4,096 for Llama-2) or, where the KV cache is smaller,
  the largest power of two it holds.

### In the simulator's format

`LatencyModel` (`crates/sim/src/profile.rs`) evaluates `step_overhead + forward(N) +
lm_head_per_sampled_seq·S + prefill_per_token·Σn + prefill_per_attn_token·pairs +
decode_per_seq·#decodes + decode_per_ctx_token·ΣL`. The derivation maps onto it as follows:

| field | holds |
|---|---|
| `forward` | T_fwd(N) at measured token counts (thinned, see above) |
| `step_overhead` | host time per step + the LM head's weight read (T_lm(1) minus one slope) + the decode-attention kernel floor L·a_d |
| `lm_head_per_sampled_seq` | the slope of T_lm over {LM_HEAD_SLOPE_RANGE[0]}…{LM_HEAD_SLOPE_RANGE[1]} sampled sequences |
| `prefill_per_token` | L·b_p (attention per new prefill token) |
| `prefill_per_attn_token` | L·c_p (attention per attended pair) |
| `decode_per_seq` | host time per decoding sequence |
| `decode_per_ctx_token` | L·c_d (KV read per context token) |

Two simplifications follow from the format. The LM head is memory-bound at small batches —
reading the vocabulary × hidden matrix costs the same for 1 or 100 sequences — so charging its
whole single-sequence time per sampled sequence would add {31 * E['llama3-8b-a100'].t_lmhead(1) * 1e3:.0f} ms to a 32-sequence
Llama-3-8B/A100 decode step of {N['llama3-8b-a100']['tpot_b32_ms']:.1f} ms; its weight read is therefore paid once per step (also in the rare
steps that sample nothing, a long prompt's middle chunks). And one step floor serves prefill
and decode although the measured prefill kernel floor (L·a_p) is smaller than the decode one.
The difference between the format and the full model, over each profile's grid of pure-decode
(batch 1…256 × context 128…8k within KV), pure-prefill (chunk 16…budget × cached 0…6k) and
mixed steps, is in the table below (column "format"); every number on this page is computed
through the format, i.e. is what the simulator does with the shipped file.

### Assumptions (not measured)

1. Host time not hidden behind the GPU: {CPU_STEP_S * 1e3:g} ms per step and {CPU_PER_SEQ_S * 1e6:g} µs per sequence
   (vLLM V1 with CUDA graphs). Sensitivity on llama3-8b-a100 below.
2. Vidur's kernel times are back-to-back device times; launch gaps are taken as hidden (CUDA
   graphs for decode, GPU-bound prefill).
3. H100 prefill attention = the A100 fit ÷ {H100_ATTN_FLOP_SPEEDUP:g} (between what FlashAttention-2 and
   FlashAttention-3 are reported to gain on an H100); decode attention scaled by memory bandwidth
   (3.35 / 2.039 TB/s), the kernel floor × {H100_ATTN_FLOOR:g}. Attention is at most {attn_share * 100:.0f} % of a shipped
   profile's single-request TTFT up to 4k prompts, so ±30 % on it moves TTFT by at most {attn_share * 30:.0f} %.
4. Specifications: A100-SXM4-80GB 2.039 TB/s, 312 TFLOP/s, 79.15 GiB; H100-SXM5-80GB 3.35 TB/s,
   989 TFLOP/s, 79.11 GiB; RTX 5080 0.96 TB/s, 112.6 TFLOP/s (BF16, FP32 accumulate), 15.92 GiB.
   They enter only the H100 attention scaling and the RTX 5080 transfer.
5. TP all-reduce: Vidur's NCCL measurements (A100 / H100 DGX, TP4). vLLM's custom all-reduce in
   CUDA graphs is probably faster for small messages (the H100 TP4 floor is
   {load_allreduce('h100')[4][1][0] * 1e3:.0f} µs per all-reduce, {2 * 80 * load_allreduce('h100')[4][1][0]:.1f} ms of a decode step):
   llama2-70b-h100-tp4's decode is the least certain number here.
6. `llama3-8b-h100` is a **ratio profile**: the measured H100 Llama-2-7B layer times × the
   measured A100 Llama-3-8B / Llama-2-7B ratio at the same token count (no Llama-3-8B
   measurement on H100 exists in Vidur's data).
7. `llama3.2-3b-rtx5080-x2` is **transferred**: no measurement exists for this GPU or model. Per op
   and token count, the measured A100 Llama-3-8B time gives an efficiency (roofline ÷ measured)
   that is applied to the RTX 5080's roofline with the 3B shapes; elementwise ops keep the A100's
   launch floor; attention × FLOP ratio (prefill) and bandwidth ratio (decode). At 1 token this
   predicts {N['llama3.2-3b-rtx5080-x2']['fwd_ms'][1]:.1f} ms for {MODELS['llama3.2-3b'].params * 2 / 1e9:.1f} GB of weights
   ({MODELS['llama3.2-3b'].params * 2 / (N['llama3.2-3b-rtx5080-x2']['fwd_ms'][1] * 1e-3) / 0.96e12 * 100:.0f} % of 960 GB/s).
""")
    e0 = E["llama3-8b-a100"]
    sens = []
    base = CPU_STEP_S
    for v in (0.2e-3, 0.5e-3, 1.0e-3):
        CPU_STEP_S = v
        lat = e0.latency()
        sens.append(f"{v * 1e3:g} ms → TPOT {lat.tpot(prompt, out) * 1e3:.2f} ms, TTFT(2k) {lat.ttft(2048, 2048) * 1e3:.1f} ms")
    CPU_STEP_S = base
    s.append("Sensitivity to the host time per step (llama3-8b-a100): " + "; ".join(sens) + ".\n")

    s.append("## Profiles\n")
    s.append(f"TTFT: one request alone, engine time (no front end), prefill chunked by the profile's "
             f"`max_num_batched_tokens`. TPOT: mean decode step of a {prompt}-token prompt over {out} "
             f"output tokens, alone (b1) or with 31 identical requests (b32). fwd(N): the forward table. "
             f"\"fwd fit\": the forward table against every measured row, |error| median / max. "
             f"\"format\": |difference| between the simulator's format and the full component model, "
             f"median / max over the step grid. All times in ms.\n")
    hdr = ["profile", "GPU, TP", "fwd(1)", "fwd(128)", "fwd(2048)", "TTFT 1k", "TTFT 2k", "TTFT 4k",
           "TPOT b1", "TPOT b32", "KV blocks", "max_model_len", "fwd fit", "format"]
    body = []
    for k in ship:
        e, n = E[k], N[k]
        t4p, t4 = n["ttft_ms"]["4k" if "4k" in n["ttft_ms"] else "4k*"]
        body.append([f"`{k}`", f"{e.gpu.split('-')[0]}, {e.tp}" + (f" ({e.gpu_util:g} of it)" if e.instances_per_gpu > 1 else ""),
                     f"{n['fwd_ms'][1]:.2f}", f"{n['fwd_ms'][128]:.2f}", f"{n['fwd_ms'][2048]:.1f}",
                     f"{n['ttft_ms']['1k'][1]:.1f}", f"{n['ttft_ms']['2k'][1]:.1f}",
                     f"{t4:.1f}" + ("" if t4p == 4096 else f" ({t4p}*)"),
                     f"{n['tpot_b1_ms']:.2f}", f"{n['tpot_b32_ms']:.2f}", f"{n['kv']['num_blocks']:,}",
                     f"{n['max_model_len']:,}",
                     f"{n['forward_err']['median'] * 100:.1f} / {n['forward_err']['max'] * 100:.0f} %",
                     f"{n['format_err']['median'] * 100:.1f} / {n['format_err']['max'] * 100:.0f} %"])
    s.append(md_table(hdr, body, "---|---|" + "|".join(["---:"] * (len(hdr) - 2))))
    s.append(f"\n\\* the prompt is cut to `max_model_len` − 1 where 4,096 + 1 tokens do not fit.\n")
    kinds = {"measured": "Linear layers measured on that GPU (and TP degree)", "ratio": "ratio profile (assumption 6)",
             "transferred": "transferred, no measurement exists (assumption 7)"}
    s.append("; ".join(f"{label}: " + ", ".join(f"`{k}`" for k in ship if E[k].kind == kind)
                       for kind, label in kinds.items()) + ".\n")

    s.append("The fields as shipped (seconds):\n")
    hdr = ["profile", "step_overhead", "prefill_per_token", "prefill_per_attn_token", "decode_per_seq",
           "decode_per_ctx_token", "lm_head_per_sampled_seq", "forward knots"]
    body = []
    for k in ship:
        lat = E[k].latency()
        body.append([f"`{k}`", fmt(lat.step_overhead), fmt(lat.prefill_per_token), fmt(lat.prefill_per_attn_token),
                     fmt(lat.decode_per_seq), fmt(lat.decode_per_ctx_token), fmt(lat.lm_head_per_sampled_seq),
                     f"{len(lat.forward)} (1…{lat.forward[-1][0]:,})"])
    s.append(md_table(hdr, body))

    s.append("\nKV capacity (GiB unless stated):\n")
    hdr = ["profile", "budget", "weights", "activation peak", "other", "KV", "bytes/token", "tokens", "blocks"]
    body = []
    for k in ship + ["llama3.2-3b-t4-x2"]:
        c = N[k]["kv"]
        body.append([f"`{k}`" + (" (not shipped)" if not E[k].shipped else ""), f"{c['budget_gib']:.2f}", f"{c['weights_gib']:.2f}",
                     f"{c['activation_gib']:.2f}", f"{c['other_gib']:.2f}", f"{c['kv_gib']:.2f}",
                     f"{c['kv_bytes_per_token']:,}", f"{c['kv_tokens']:,}", f"{c['num_blocks']:,}"])
    s.append(md_table(hdr, body))

    # ---- comparison ----
    s.append("\n## Against published measurements\n")
    s.append("Each row is computed by the script from the number as published (column \"as published\"); "
             "the profile's prediction goes through the simulator's format. Rows on `mistral7b-a100` and "
             "`llama2-70b-a100-tp4` check the measured Llama-3-8B and Llama-3-70B layers through models with the "
             "same layer shapes and a 32,000-token vocabulary (not shipped).\n")
    hdr = ["profile", "metric", "setting", "as published", "published ms", "profile ms", "error", "source"]
    srcs: dict[str, int] = {}
    body = []
    for r in rows:
        i = srcs.setdefault(r["url"], len(srcs) + 1)
        body.append([f"`{r['profile']}`", r["metric"], r["setting"], r["quoted"], f"{r['published_ms']:.2f}",
                     f"{r['profile_ms']:.2f}", f"{r['error_pct']:+.0f} %", f"[{i}]"])
    s.append(md_table(hdr, body, "---|---|---|---|---:|---:|---:|---"))
    allerr = [abs(r["error_pct"]) for r in rows]
    s.append(f"\nAbsolute error over all {len(rows)} comparisons: median {statistics.median(allerr):.1f} %, max {max(allerr):.0f} %.\n")
    s.append("Per shipped profile (its own rows, then its proxies'):\n")
    s.append(md_table(["profile", "vs published"], [[f"`{k}`", errs[k]] for k in ship], "---|---"))

    s.append("\nH100 rows are published only for FP8 (TensorRT-LLM), which runs the GEMMs about 1.5–2× faster "
             "than BF16: lower bounds for the BF16 profiles, not errors.\n")
    body = []
    for r in fp8:
        i = srcs.setdefault(r["url"], len(srcs) + 1)
        body.append([f"`{r['profile']}`", r["setting"], r["quoted"], f"{r['published_ms']:.1f}", f"{r['profile_ms']:.1f}",
                     "yes" if r["profile_ms"] >= r["published_ms"] else "**no**", f"[{i}]"])
    s.append(md_table(["profile", "setting", "as published", "FP8 ms", "profile ms", "profile slower", "source"], body,
                      "---|---|---|---:|---:|---|---"))

    def grp(pred) -> str:
        v = [r["error_pct"] for r in rows if pred(r)]
        return f"{min(v):+.0f}…{max(v):+.0f} % over {len(v)} rows" if v else "none"
    def gaps(pred) -> str:
        by: dict[str, list[float]] = {}
        for r in rows:
            if pred(r):
                by.setdefault(r["source"].split(" docs")[0].split(" README")[0].split(" vllm-benchmark")[0].split(",")[0],
                              []).append(r["published_ms"] - r["profile_ms"])
        return "; ".join(f"{k} {min(v):.0f}" + (f"–{max(v):.0f}" if len(v) > 1 and round(max(v)) != round(min(v)) else "") + " ms"
                         for k, v in by.items())
    lam = lambda r: r["metric"] in ("TPOT", "decode step") and "Lambda" in r["source"]
    decode = lambda r: r["metric"] in ("TPOT", "decode step")
    long_ttft = lambda r: r["metric"] == "TTFT" and "2048" in r["setting"]
    short_ttft = lambda r: r["metric"] == "TTFT" and "2048" not in r["setting"]
    s.append(f"""
Reading the errors:

* **Decode**: {grp(decode)}; against vLLM itself (Lambda, A100 and H100) {grp(lam)}. The
  positive errors against gpt-fast are expected, since torch.compile fuses what Vidur measured as
  separate kernels (and its A100s were power-limited).
* **TTFT of 2k prompts**: {grp(long_ttft)}, against TensorRT-LLM and LMDeploy, whose fused kernels
  beat the vLLM-era kernels Vidur profiled. No batch-1 long-prompt TTFT from vLLM was found.
* **Short or batched TTFT**: {grp(short_ttft)}. Published TTFTs include per-request costs that an
  engine step does not have (API server, tokenisation, scheduling, streaming the first token);
  published minus profile: {gaps(short_ttft)}. In the simulator they belong in the
  profile's `[frontend]` (none is set in these profiles: nothing published separates them for these
  stacks).
* Not found despite searching documentation, issues, code and web pages: a batch-1 BF16 TTFT or TPOT
  for Llama-2-7B or Llama-2-70B TP4 on H100, a batch-1 Llama-3-8B TTFT at 1k/2k/4k from vLLM, any
  Llama-3.2-3B or RTX 5080 measurement. The H100 profiles are checked only through the ratio profile's
  decode and the FP8 lower bounds, and the RTX 5080 profile not at all — calibrate it on the real box
  (`sim calibrate`, see [calibration.md](calibration.md)).

Sources:
""")
    for url, i in srcs.items():
        title = next(r["source"] for r in rows + fp8 if r["url"] == url)
        s.append(f"{i}. {title}. <{url}>")

    # ---- the seed ----
    sd, t4 = N["llama3.2-3b-rtx5080-x2"], N["llama3.2-3b-t4-x2"]
    s.append(f"""
## The seed's setup: `llama3.2-3b-rtx5080-x2`

Llama-3.2-3B-Instruct served by two vLLM instances on one 16 GB RTX 5080, each with
`--gpu-memory-utilization 0.45` (the seed proposal's setup). {sd['kv']['budget_gib']:.2f} GiB per instance − {sd['kv']['weights_gib']:.2f} GiB
of weights − {sd['kv']['activation_gib']:.2f} GiB activation peak (the sampler's dummy run over 256 × 128,256 logits) −
{sd['kv']['other_gib']:.2f} GiB leaves **{sd['kv']['kv_gib']:.2f} GiB = {sd['kv']['kv_tokens']:,} tokens = {sd['kv']['num_blocks']} blocks**
(±0.3 GiB of overhead: ±{int(0.3 * GiB / sd['kv']['kv_bytes_per_token']):,} tokens): about
{sd['kv']['kv_tokens'] / sd['max_model_len']:.1f} sequences of `max_model_len` {sd['max_model_len']:,}, so preemption and prefix-cache
eviction dominate. Read the real number from vLLM's `GPU KV cache size: N tokens` log line on the box.
A T4 would not do: the same arithmetic leaves {t4['kv']['kv_tokens']:,} tokens per instance.

It replaces the former spec-sheet profile `llama3.2-3b-rtx5080` (the name is still accepted as an
alias of this one), which assumed {OLD_SEED_BLOCKS} blocks, {OLD_SEED.step_overhead * 1e3:g} ms per step + {OLD_SEED.prefill_per_token * 1e3:g} ms per
prefill token (50 TFLOP/s) and no LM head: TTFT 1k / 2k {OLD_SEED.ttft(1024, 2048) * 1e3:.0f} / {OLD_SEED.ttft(2048, 2048) * 1e3:.0f} ms and TPOT b1
{OLD_SEED.tpot(prompt, out) * 1e3:.1f} ms, against {sd['ttft_ms']['1k'][1]:.0f} / {sd['ttft_ms']['2k'][1]:.0f} ms and {sd['tpot_b1_ms']:.1f} ms here: it over-stated prefill and
under-stated decode.

## Not modelled

* **GPU sharing.** The seed's two instances time-share one GPU; the simulator gives each simulated
  instance the whole GPU between its own steps, so a simulated pair has up to twice the real GPU.
  Results on `llama3.2-3b-rtx5080-x2` with both instances busy are optimistic until the simulator
  serialises (or stretches) steps of instances on the same GPU.
* Per-request front-end costs (see above), speculative decoding, quantisation (all profiles are
  BF16), CUDA-graph capture limits, vLLM's async scheduling and multi-step modes, KV offloading.
* Partial-prefill caps (`long_prefill_token_threshold`, `max_num_partial_prefills`): vLLM's defaults
  do not set them.
* Attention on the H100 and RTX 5080 is scaled, not measured; the RTX 5080's linear layers are
  transferred, not measured (assumptions 3 and 7).

## Data and attribution

The measured operator, attention and all-reduce timings are from **Vidur** (Microsoft,
<https://github.com/microsoft/vidur>, MIT licence, © Microsoft Corporation), copied unmodified
(gzipped) into [`datasets/gpu-profiles/`](../datasets/gpu-profiles/README.md) with the licence and the
upstream commit and path of every file. Vidur: Agrawal et al., "Vidur: A Large-Scale Simulation
Framework for LLM Inference", MLSys 2024.
""")
    return "\n".join(s)


def expected_json(E: dict[str, Derived]) -> str:
    prompt, out = SAMPLE_TPOT
    d = {"generated_by": f"{SCRIPT} --write",
         "what": "engine time of one request alone through each GPU profile, as the derivation computes it "
                 "(crates/sim/tests/gpu_profiles.rs checks the simulator's Engine against these to 1 %)",
         "ttft_prompt": 2048, "tpot_prompt": prompt, "tpot_output": out, "profiles": {}}
    for k, e in E.items():
        if e.shipped:
            lat = e.latency()
            d["profiles"][k] = {"ttft_secs": round(lat.ttft(2048, e.max_num_batched_tokens), 9),
                                "tpot_secs": round(lat.tpot(prompt, out), 9)}
    return json.dumps(d, indent=2) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--write", action="store_true", help="regenerate crates/sim/profiles/*.toml, gpu-profiles.json and docs/profiles.md")
    args = ap.parse_args()
    E = build()
    N = {k: numbers(e) for k, e in E.items()}
    rows, fp8 = compare(E, PUBLISHED), compare(E, FP8_BOUNDS)
    ship = [k for k, e in E.items() if e.shipped]
    errs = {k: error_text(error_summary(rows, k), [r for r in fp8 if r["profile"] == k]) for k in ship}

    print("## Attention kernel fits (A100, per layer, ms; 32 q / 4 kv heads per GPU)")
    print(f"prefill {ATTN['prefill']} median err {ATTN['prefill_err']['median']:.3f} over {ATTN['prefill_rows']}")
    print(f"decode  {ATTN['decode']} median err {ATTN['decode_err']['median']:.3f} over {ATTN['decode_rows']}")

    print("\n## Profiles (ms)")
    print(md_table(["profile", "kind", "fwd(1)", "fwd(128)", "fwd(512)", "fwd(2048)", "LM head(1)", "TTFT 1k", "TTFT 2k",
                    "TTFT 4k", "TPOT b1", "TPOT b32", "KV tokens", "blocks", "max_model_len", "format med/max"],
                   [[k, E[k].kind + ("" if E[k].shipped else " (not shipped)")] +
                    [f"{n['fwd_ms'][x]:.2f}" for x in (1, 128, 512, 2048)] + [f"{n['lm_head_1_ms']:.3f}"] +
                    [f"{v:.1f}" + ("" if lab[-1] != "*" else f" ({p})") for lab, (p, v) in n["ttft_ms"].items()] +
                    [f"{n['tpot_b1_ms']:.2f}", f"{n['tpot_b32_ms']:.2f}", n["kv"]["kv_tokens"], n["kv"]["num_blocks"],
                     n["max_model_len"], f"{n['format_err']['median'] * 100:.1f} / {n['format_err']['max'] * 100:.1f} %"]
                    for k, n in N.items()]))

    print("\n## Simulator fields (s)")
    for k in ship:
        lat = E[k].latency()
        print(f"{k}: step_overhead {fmt(lat.step_overhead)} prefill_per_token {fmt(lat.prefill_per_token)} "
              f"prefill_per_attn_token {fmt(lat.prefill_per_attn_token)} decode_per_seq {fmt(lat.decode_per_seq)} "
              f"decode_per_ctx_token {fmt(lat.decode_per_ctx_token)} lm_head_per_sampled_seq {fmt(lat.lm_head_per_sampled_seq)}")

    for title, rr in (("Against published measurements", rows), ("H100 FP8 lower bounds", fp8)):
        print(f"\n## {title}")
        print(md_table(["profile", "metric", "setting", "published ms", "profile ms", "error", "source"],
                       [[r["profile"], r["metric"], r["setting"], f"{r['published_ms']:.2f}", f"{r['profile_ms']:.2f}",
                         f"{r['error_pct']:+.1f} %", r["url"]] for r in rr]))
    allerr = [abs(r["error_pct"]) for r in rows]
    print(f"\n|error| over {len(rows)} comparisons: median {statistics.median(allerr):.1f} %, max {max(allerr):.1f} %")
    print("\n## Per profile")
    for k in ship:
        print(f"{k}: {errs[k]}")

    if args.write:
        for k in ship:
            own = [r for r in rows if r["checks"] == k]
            text = toml_profile(E[k], N[k], errs[k], own)
            (PROFILE_DIR / f"{k}.toml").write_text(text)
        EXPECTED_JSON.write_text(expected_json(E))
        DOC.write_text(doc(E, N, rows, fp8, errs))
        print(f"\nwrote {len(ship)} profiles to {PROFILE_DIR.relative_to(ROOT)}/, "
              f"{EXPECTED_JSON.relative_to(ROOT)}, {DOC.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
