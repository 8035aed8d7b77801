"""`python -m autoshuffle_ext.models`: parameters and multiply-adds of every named model."""

from __future__ import annotations

import argparse

from ..modules import DGConv2d, GroupsConfig, ShuffleConfig, structures
from .complexity import input_resolution, measure
from .registry import MODEL_NAMES, build_model
from .stem import STEMS


def main(argv: list[str] | None = None) -> None:
    """Prints one Markdown table row per model: params, learned shuffle params, MFLOPs."""
    parser = argparse.ArgumentParser(
        prog="python -m autoshuffle_ext.models",
        description="Parameters and FLOPs (multiply-adds, conv + fc) of the ShuffleNet models.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("models", nargs="*", default=list(MODEL_NAMES), help="model names")
    parser.add_argument("--stem", choices=STEMS, default="imagenet", help="input stem")
    parser.add_argument("--num-classes", type=int, default=1000, help="classifier outputs")
    parser.add_argument(
        "--groups",
        choices=("fixed", "learned"),
        default="fixed",
        help="learned: v1 pointwise convs as DGConv2d; also lists each one's group count and their "
        "cost as a fraction of dense pointwise convs (the --budget that matches the fixed model)",
    )
    args = parser.parse_args(argv)
    side = input_resolution(args.stem)
    print(f"input 3x{side}x{side}, {args.num_classes} classes; FLOPs = multiply-adds")
    print(
        "| model | params | learned structure params (training) | MFLOPs "
        "| shuffle mixing MFLOPs (training) |"
    )
    print("| --- | ---: | ---: | ---: | ---: |")
    for name in args.models:
        try:
            # A budget of 1 never binds; it gives the model its GroupBudget to read the cost from.
            budget = 1.0 if args.groups == "learned" else None
            configs = [ShuffleConfig("learned")]
            if args.groups == "learned":
                configs.append(GroupsConfig("learned", budget=budget))
            model = build_model(name, args.num_classes, args.stem, configs)
        except ValueError as error:
            parser.error(str(error))
        c = measure(model, (3, side, side))
        print(
            f"| {name} | {c.params:,} | {c.shuffle_params:,} | {c.macs / 1e6:.1f} "
            f"| {c.shuffle_macs / 1e6:.1f} |"
        )
        groups = [m.num_groups() for _, m in structures(model, DGConv2d)]
        if groups:
            cost = model.group_budget.report()["cost"]
            print(f"|   pointwise groups, in order | {' '.join(map(str, groups))} | | | |")
            print(f"|   pointwise cost / dense (matching --budget) | {cost:.4f} | | | |")


if __name__ == "__main__":
    main()
