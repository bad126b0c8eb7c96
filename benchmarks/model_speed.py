"""Training and inference speed of a registered model on this machine's CPU.

Prints images per second at batch 1 and 32 (forward in eval mode; forward + backward + AdamW step
in train mode), the achieved multiply-add rate (from the FLOP count of one forward, 1x forward
for inference and ~3x for training), and that rate as a fraction of the machine's measured fp32
matrix-multiply peak (a large square matmul timed here, same thread count).

    python benchmarks/model_speed.py --model ac2d --num-aus 12 --size 176
"""
from __future__ import annotations

import argparse
import time

import torch


def measure_matmul_peak(n: int = 2048, repeat: int = 10) -> float:
    """fp32 GFLOP/s of an n x n matmul (2 n^3 FLOPs), best of ``repeat``."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best / 1e9


def _time(fn, warmup: int, iters: int) -> float:
    for _ in range(warmup):
        fn()
    t = time.perf_counter()
    for _ in range(iters):
        fn()
    return (time.perf_counter() - t) / iters


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="ac2d")
    ap.add_argument("--num-aus", type=int, default=12)
    ap.add_argument("--size", type=int, default=176)
    ap.add_argument("--batches", default="1,32")
    ap.add_argument("--iters", type=int, default=3)
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    from audet.complexity import count_flops
    from audet.models import create_model

    from audet.models import model_info

    kw = {}
    if model_info(args.model).get("needs_subjects"):  # e.g. CISNet: a dictionary of 27 placeholder subjects
        from audet.models.base import DataInfo

        kw["data"] = DataInfo(aus=list(range(args.num_aus)), subjects=[f"subject_{i:02d}" for i in range(27)])
    model = create_model(args.model, num_aus=args.num_aus, **kw)
    flops = count_flops(model, args.size)["flops"]
    peak = measure_matmul_peak()
    print(f"model {args.model}  A={args.num_aus}  input {args.size}x{args.size}  threads {args.threads}")
    print(f"forward FLOPs/img {flops / 1e9:.2f} G ({flops / 2e9:.2f} GMAC); matmul peak {peak:.0f} GFLOP/s")
    print(f"{'mode':<6}{'batch':>6}{'img/s':>10}{'GFLOP/s':>10}{'% peak':>8}")
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    for bs in [int(b) for b in args.batches.split(",")]:
        x = torch.randn(bs, 3, args.size, args.size)
        model.eval()

        def infer():
            with torch.inference_mode():
                model(x)

        dt = _time(infer, 1, args.iters)
        rate = bs * flops / dt / 1e9
        print(f"{'infer':<6}{bs:>6}{bs / dt:>10.1f}{rate:>10.0f}{100 * rate / peak:>7.1f}%")
        model.train()

        def train():
            opt.zero_grad(set_to_none=True)
            model(x).logits.float().sum().backward()
            opt.step()

        dt = _time(train, 1, args.iters)
        rate = 3 * bs * flops / dt / 1e9
        print(f"{'train':<6}{bs:>6}{bs / dt:>10.1f}{rate:>10.0f}{100 * rate / peak:>7.1f}%")


if __name__ == "__main__":
    main()
