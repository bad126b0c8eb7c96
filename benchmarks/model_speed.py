"""Speed of every registered model: the faithful reference path against the fast path, one run.

For each model, two builds with the same weights are timed INTERLEAVED (ref, fast, [fast+bf16],
ref, fast, ... ; medians over ``--iters`` rounds), so that a shared machine's load affects every
path alike and the ratios stay meaningful:

- ``ref``: the model built with its registry's ``reference_args`` (AC2D: ``branch_impl="loop"``,
  the per-AU branches one after another) and inference through ``model(x).logits`` (the full
  forward with its auxiliary outputs: what evaluation ran before the logits-only path);
- ``fast``: the default build, inference through ``forward_logits`` (``--channels-last`` adds
  ``memory_format=torch.channels_last`` for model and input);
- ``bf16`` (``--bf16``): the fast path under ``torch.autocast(dtype=torch.bfloat16)``;
- ``compiled`` (``--compile``, inference only): ``torch.compile(fast.forward_logits)`` (inductor;
  its compile time is printed, not counted).

A model without ``reference_args`` has no separate reference computation (ref = fast): it is timed
once, as ``fast``, and its ``x ref`` column reads 1.00 by definition.

Modes: inference (eval, ``torch.inference_mode``) at each of ``--batches``; a training step at
``--train-batch`` (train mode: forward, backward of ``logits.sum()`` plus the mean of every
auxiliary output that carries a gradient, AdamW step).

FLOPs per image come from :func:`audet.complexity.count_flops` (a forward) and, for the training
step, :func:`audet.complexity.count_training_flops` (forward + backward as autograd runs them: a
frozen part such as AUNet's FAN gets no backward). The machine's peak is measured in the same run, before and after the models (the larger
of the two measurements): an fp32 square matmul, an fp32 3x3 convolution and, with ``--bf16``, a
bf16 matmul. ``% peak`` is the achieved rate over the larger fp32 peak (over the bf16 matmul peak
for the bf16 path).

    python benchmarks/model_speed.py --models ac2d --iters 5
    python benchmarks/model_speed.py --small --iters 3            # every model, small configs
    python benchmarks/model_speed.py --device cuda --bf16          # on a GPU
    python benchmarks/model_speed.py --models 'aar*,aunet*' --batches 1,4 --train-batch 2 --csv aar.csv
"""
from __future__ import annotations

import argparse
import contextlib
import fnmatch
import json
import statistics
import time

import torch


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _best_rate(fn, flops: float, device: torch.device, repeat: int) -> float:
    fn()
    _sync(device)
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        _sync(device)
        best = min(best, time.perf_counter() - t)
    return flops / best / 1e9


def measure_peaks(device: torch.device, bf16: bool, repeat: int = 5) -> dict[str, float]:
    """GFLOP/s of an n x n fp32 matmul, an fp32 3x3 convolution and (``bf16``) a bf16 matmul."""
    n = 2048 if device.type == "cpu" else 8192
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    out = {"matmul_fp32": _best_rate(lambda: a @ b, 2 * n**3, device, repeat)}
    B, C, S = (8, 64, 56) if device.type == "cpu" else (64, 256, 56)
    x = torch.randn(B, C, S, S, device=device)
    w = torch.randn(C, C, 3, 3, device=device)
    conv = torch.nn.functional.conv2d
    out["conv_fp32"] = _best_rate(lambda: conv(x, w, padding=1), 2 * B * C * C * 9 * S * S, device, repeat)
    if bf16:
        ab, bb = a.bfloat16(), b.bfloat16()
        out["matmul_bf16"] = _best_rate(lambda: ab @ bb, 2 * n**3, device, repeat)
    return out


def _loss(out) -> torch.Tensor:
    loss = out.logits.float().sum()
    for v in out.aux.values():
        if isinstance(v, torch.Tensor) and v.requires_grad:
            loss = loss + v.float().mean()
    return loss


def build_pair(name: str, num_aus: int, small: bool, extra: dict | None = None):
    """(reference model or None when the model has no separate reference path, fast model with
    the same weights, note); ``extra``: more constructor arguments for every model."""
    from audet.models import create_model, model_info

    info = model_info(name)
    args, note = dict(extra or {}), (", ".join(f"{k}={v}" for k, v in (extra or {}).items()))
    if info.get("needs_subjects"):  # e.g. CISNet: a dictionary of 27 placeholder subjects
        from audet.facs import default_aus
        from audet.models.base import DataInfo

        args["data"] = DataInfo(aus=default_aus(num_aus), subjects=[f"subject_{i:02d}" for i in range(27)])
    if small:
        args, note = {**args, **dict(info.get("small_config") or {})}, "small config" + (f"; {note}" if note else "")
    try:
        fast = create_model(name, num_aus=num_aus, **args)
    except ValueError:  # e.g. an ensemble needs members: its registry's small config
        args, note = {**args, **dict(info.get("small_config") or {})}, "small config (the default needs arguments)"
        fast = create_model(name, num_aus=num_aus, **args)
    if not info.get("reference_args"):  # one computation: time it once
        return None, fast, note
    ref = create_model(name, num_aus=num_aus, **{**args, **dict(info.get("reference_args") or {})})
    ref.load_state_dict(fast.state_dict())
    return ref, fast, note


def time_paths(paths: dict, iters: int, device: torch.device) -> dict[str, float]:
    """Median seconds of each path, timed round-robin (one warm-up call each)."""
    times: dict[str, list[float]] = {k: [] for k in paths}
    for fn in paths.values():
        fn()
    _sync(device)
    for _ in range(iters):
        for k, fn in paths.items():
            t = time.perf_counter()
            fn()
            _sync(device)
            times[k].append(time.perf_counter() - t)
    return {k: statistics.median(v) for k, v in times.items()}


def bench_model(name: str, a: argparse.Namespace, device: torch.device, peaks: dict) -> list[dict]:
    from audet.complexity import count_flops, count_training_flops, model_input_shape

    ref, fast, note = build_pair(name, a.num_aus, a.small, json.loads(a.model_args) if a.model_args else None)
    if ref is not None:
        ref.to(device)
    fast.to(device)
    flops = count_flops(fast, a.size)["flops"]
    shape = model_input_shape(fast, a.size)[1:]
    fmt = torch.channels_last if a.channels_last else torch.contiguous_format
    if a.channels_last:
        fast.to(memory_format=torch.channels_last)
    amp = (lambda: torch.autocast(device.type, dtype=torch.bfloat16)) if a.bf16 else None
    rows = []
    fp32_peak = max(peaks["matmul_fp32"], peaks["conv_fp32"])

    def add(mode, bs, secs, mult):
        base = secs.get("ref", secs["fast"])
        for k, s in secs.items():
            rate = mult * bs * flops / s / 1e9
            peak = peaks.get("matmul_bf16", fp32_peak) if k == "bf16" else fp32_peak
            rows.append(dict(model=name, mode=mode, batch=bs, path=k, ms=1e3 * s, img_s=bs / s,
                             speedup=base / s, gflops=rate, peak=100 * rate / peak, note=note))

    compiled = None
    for bs in [int(b) for b in a.batches.split(",") if b]:
        x = torch.randn(bs, *shape, device=device)
        xf = x.contiguous(memory_format=fmt) if x.ndim == 4 else x
        fast.eval()
        paths = {"fast": lambda: fast.forward_logits(xf)}
        if ref is not None:
            ref.eval()
            paths = {"ref": lambda: ref(x).logits, **paths}
        if amp:
            def bf16_infer():
                with amp():
                    return fast.forward_logits(xf)
            paths["bf16"] = bf16_infer
        if a.compile:
            if compiled is None:
                t0 = time.perf_counter()
                compiled = torch.compile(fast.forward_logits)
                with torch.inference_mode():
                    compiled(xf)
                note = (note + "; " if note else "") + f"compile {time.perf_counter() - t0:.0f} s"
            paths["compiled"] = lambda: compiled(xf)
        with torch.inference_mode():
            add("infer", bs, time_paths(paths, a.iters, device), 1)
    if a.train_batch > 0:
        bs = a.train_batch
        x = torch.randn(bs, *shape, device=device)
        xf = x.contiguous(memory_format=fmt) if x.ndim == 4 else x
        opts = {k: torch.optim.AdamW(m.parameters(), lr=1e-6) for k, m in (("ref", ref), ("fast", fast))
                if m is not None}

        def step(model, opt, inp, ctx=contextlib.nullcontext):
            opt.zero_grad(set_to_none=True)
            with ctx():
                loss = _loss(model(inp))
            loss.backward()
            opt.step()

        fast.train()
        paths = {"fast": lambda: step(fast, opts["fast"], xf)}
        if ref is not None:
            ref.train()
            paths = {"ref": lambda: step(ref, opts["ref"], x), **paths}
        if amp:
            paths["bf16"] = lambda: step(fast, opts["fast"], xf, amp)
        # per image, from a batch of 2 (BatchNorm on pooled features needs 2 samples in training)
        train_flops = count_training_flops(fast, loss_fn=_loss, inputs=torch.randn(2, *shape, device=device)) / 2
        fast.zero_grad(set_to_none=True)
        add("train", bs, time_paths(paths, a.iters, device), train_flops / flops)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="*", help="comma-separated names or fnmatch patterns (default: all)")
    ap.add_argument("--skip", default="", help="comma-separated names or patterns to leave out")
    ap.add_argument("--small", action="store_true", help="every model at its registry's small config (quick)")
    ap.add_argument("--num-aus", type=int, default=12)
    ap.add_argument("--size", type=int, default=None, help="input side (default: each model's own)")
    ap.add_argument("--batches", default="1,32", help="inference batch sizes (default: %(default)s)")
    ap.add_argument("--train-batch", type=int, default=8, help="training-step batch (0: no training)")
    ap.add_argument("--iters", type=int, default=5, help="interleaved rounds; medians are reported")
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N")
    ap.add_argument("--bf16", action="store_true", help="also time the fast path under bf16 autocast")
    ap.add_argument("--channels-last", action="store_true", help="fast path in channels_last memory format")
    ap.add_argument("--compile", action="store_true", help="also time torch.compile(forward_logits) (inference)")
    ap.add_argument("--model-args", default=None, metavar="JSON",
                    help='extra constructor arguments for every model, e.g. \'{"clip_length": 8}\' for AAR')
    ap.add_argument("--csv", default=None, help="also write the rows to this CSV file")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    device = torch.device(a.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device is available here; use --device cpu")

    from audet.models import list_models

    pats = [p for p in a.models.split(",") if p]
    skip = [p for p in a.skip.split(",") if p]
    names = [n for n in list_models() if any(fnmatch.fnmatch(n, p) for p in pats)
             and not any(fnmatch.fnmatch(n, s) for s in skip)]
    if not names:
        raise SystemExit(f"no registered model matches --models {a.models!r}; see `audet models`")
    before = measure_peaks(device, a.bf16)
    rows = []
    for n in names:
        rows += bench_model(n, a, device, before)
    after = measure_peaks(device, a.bf16)
    peaks = {k: max(before[k], after[k]) for k in before}
    fp32_peak = max(peaks["matmul_fp32"], peaks["conv_fp32"])
    for r in rows:  # re-express against the final (best) peaks
        r["peak"] = 100 * r["gflops"] / (peaks.get("matmul_bf16", fp32_peak) if r["path"] == "bf16" else fp32_peak)
    dev = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu, {a.threads} threads"
    print(f"device {dev}; torch {torch.__version__}; {a.iters} interleaved rounds, medians")
    print("measured peaks (GFLOP/s, best of before/after): "
          + ", ".join(f"{k} {v:.0f} (before {before[k]:.0f}, after {after[k]:.0f})" for k, v in peaks.items()))
    print(f"{'model':<17}{'mode':<6}{'batch':>6}{'path':>6}{'ms':>10}{'img/s':>9}{'x ref':>7}{'GFLOP/s':>9}{'% peak':>8}  note")
    if a.csv:
        import csv

        with open(a.csv, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)
    for r in rows:
        print(f"{r['model']:<17}{r['mode']:<6}{r['batch']:>6}{r['path']:>6}{r['ms']:>10.1f}{r['img_s']:>9.1f}"
              f"{r['speedup']:>7.2f}{r['gflops']:>9.0f}{r['peak']:>7.1f}%  {r['note']}")


if __name__ == "__main__":
    main()
