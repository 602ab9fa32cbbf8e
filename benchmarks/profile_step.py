"""Where one MSPT training step and one streaming inference spend their time, by kind of operation.

    python benchmarks/profile_step.py                         # 16k, 65k and 262k points
    python benchmarks/profile_step.py --sizes 16384 --top 15  # and the 15 costliest operators

The default network (width 128, 8 heads, 4 blocks, whole cloud: ``anchors: null``) on one cloud of
uniform random points with the pipeline's 11 input and 8 output channels, under ``torch.profiler``
after one warm-up. Operators are grouped into: attention kernels (flash attention forward and
backward), matrix products (the linear layers and their gradients), gathers and copies (index_select
and its index_add backward, cat, copy, fill), element-wise (GELU, LayerNorm, adds, the log-sum-exp
merge) and the rest. Self CPU time: each second is counted once.
"""

from __future__ import annotations

import argparse
import datetime
import os
from collections import defaultdict

import torch
from torch.profiler import ProfilerActivity, profile

from msptcli.model import MSPT, ModelConfig, build_layout

GROUPS = {
    "attention kernels": ("scaled_dot_product", "flash_attention"),
    "matrix products": ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm", "aten::linear"),
    "gathers and copies": ("index_select", "index_add", "scatter", "aten::cat", "aten::copy_", "aten::fill_",
                           "aten::zero_", "aten::index", "contiguous", "aten::clone"),
    "element-wise": ("gelu", "layer_norm", "aten::add", "aten::mul", "aten::sub", "aten::div", "aten::exp",
                     "logaddexp", "aten::sum", "aten::mean", "aten::pow", "aten::square", "aten::where"),
}  # fmt: skip


def group(name: str) -> str:
    for label, keys in GROUPS.items():
        if any(k in name for k in keys):
            return label
    return "other"


def profiled(fn) -> tuple[dict[str, float], list[tuple[str, float]]]:  # type: ignore[no-untyped-def]
    fn()  # warm-up
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    totals: dict[str, float] = defaultdict(float)
    ops = []
    for e in prof.key_averages():
        if e.key.startswith(("autograd::", "ProfilerStep", "[memory]")):
            continue
        seconds = e.self_cpu_time_total / 1e6
        totals[group(e.key)] += seconds
        ops.append((e.key, seconds))
    return dict(totals), sorted(ops, key=lambda o: -o[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[16384, 65536, 262144])
    parser.add_argument("--chunk-points", type=int, default=1 << 16)
    parser.add_argument("--top", type=int, default=0, help="also list this many costliest operators per row")
    args = parser.parse_args()
    print(f"# profile of the default MSPT, {datetime.date.today().isoformat()}, CPU, {os.cpu_count()} cores, "
          f"torch {torch.__version__}")  # fmt: skip
    print()
    labels = [*GROUPS, "other"]
    print("| N | run | total s | " + " | ".join(labels) + " |")
    print("|---:|---|---:|" + "---:|" * len(labels))
    tops = []
    for n in args.sizes:
        torch.manual_seed(0)
        cfg = ModelConfig(anchors=None)
        model = MSPT(cfg, in_features=11, out_features=8)
        layout = build_layout([n], cfg)
        x = torch.randn(n, 11)

        def train(model=model, x=x, layout=layout) -> None:  # type: ignore[no-untyped-def]
            model(x, layout).square().mean().backward()

        def stream(model=model, x=x, layout=layout) -> None:  # type: ignore[no-untyped-def]
            with torch.no_grad():
                model(x, layout, chunk_points=args.chunk_points)

        for label, fn in (("forward + backward", train), (f"streaming, chunks of {args.chunk_points:,}", stream)):
            totals, ops = profiled(fn)
            total = sum(totals.values())
            cells = " | ".join(f"{totals.get(g, 0.0):.2f} ({100 * totals.get(g, 0.0) / total:.0f}%)" for g in labels)
            print(f"| {n:,} | {label} | {total:.2f} | {cells} |", flush=True)
            tops.append((n, label, ops[: args.top]))
    for n, label, ops in tops if args.top else ():
        print(f"\n{n:,} points, {label}:")
        for name, seconds in ops:
            print(f"  {seconds:8.3f} s  {name}")


if __name__ == "__main__":
    main()
