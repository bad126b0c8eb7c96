"""AUNet parameters and FLOPs against the paper (section V-F) and the published code's counts.

The paper prints "~12.11M parameters with ~13.97G flops" for the frozen FAN and "~2.66M with
~3.84G" (AUNet) / "~1.86M with ~3.02G" (AU-FAN) for the trainable part; its "flops" are
multiply-adds (MACs) of ONE FAN pass and of the predictor. The authors' own classes give
(original-checkpoints/aunet_fan.tsv, aunet_tdn_12au.tsv): FAN 12,106,504 params, 27.8473 GFLOPs =
13.9236 GMACs per 256 x 256 frame; predictor 2,657,036 params, 7.6583 GFLOPs = 3.8292 GMACs on
three 768 x 64 x 64 bases; the whole AU_NET (3 FAN passes) 91.2002 GFLOPs.

    PYTHONPATH=src python benchmarks/aunet_complexity.py [--size 256]
"""
from __future__ import annotations

import argparse

import torch

PAPER = {"fan": (12.11e6, 13.97e9), "aunet": (2.66e6, 3.84e9), "aunet_fan": (1.86e6, 3.02e9)}
CODE = {"fan": (12_106_504, 27_847_294_976), "aunet": (2_657_036, 7_658_343_424), "total": 91_200_228_352}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--num-aus", type=int, default=12)
    args = ap.parse_args()

    from torch.utils.flop_counter import FlopCounterMode

    from audet.complexity import count_flops, count_parameters
    from audet.models import create_model

    def flops(fn) -> int:
        with torch.no_grad(), FlopCounterMode(display=False) as fc:
            fn()
        return fc.get_total_flops()

    s, q = args.size, args.size // 4
    rows = []
    for name in ("aunet_fan", "aunet"):
        m = create_model(name, num_aus=args.num_aus, img_size=s).eval()
        basis = torch.rand(1, 768, q, q)
        pred = flops(lambda: m.predictor(basis, basis, basis) if m.temporal else m.predictor(basis))
        fan = flops(lambda: m.fan.forward_features(torch.rand(1, 3, s, s)))
        whole = count_flops(m, s)["flops"]
        rows.append((name, count_parameters(m.predictor), pred, count_parameters(m.fan), fan, whole))

    print(f"input {s} x {s}; FLOPs = 2 x MACs (torch FlopCounterMode); the paper prints MACs")
    print(f"{'part':<28}{'params':>14}{'GMACs':>10}   paper (params / G)   published code")
    for name, p_train, pred, _p_fan, _fan, _whole in rows:
        pp, pf = PAPER[name]
        code = CODE.get(name)
        code_s = f"{code[0]:,} / {code[1] / 2e9:.4f}" if code else "-"
        print(f"{name + ' predictor':<28}{p_train:>14,}{pred / 2e9:>10.4f}   {pp / 1e6:.2f}M / {pf / 1e9:.2f}G"
              f"        {code_s}")
    name, _, _, p_fan, fan, whole = rows[-1]
    print(f"{'frozen FAN (one frame)':<28}{p_fan:>14,}{fan / 2e9:>10.4f}   {PAPER['fan'][0] / 1e6:.2f}M / "
          f"{PAPER['fan'][1] / 1e9:.2f}G       {CODE['fan'][0]:,} / {CODE['fan'][1] / 2e9:.4f}")
    print(f"{'aunet whole (3 FAN passes)':<28}{'':>14}{whole / 2e9:>10.4f}   -                    "
          f"{CODE['total'] / 2e9:.4f}")


if __name__ == "__main__":
    main()
