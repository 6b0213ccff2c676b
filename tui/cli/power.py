"""``llmtui power``: before you run, the smallest accuracy difference a paired comparison on N items can
detect, or the items needed for a difference (normal approximation to McNemar's test)."""

from __future__ import annotations

from tui.cli.common import add_workspace_arg, console, fail, print_json, workspace_from


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "power", help="the smallest detectable accuracy difference on N items, or the items a difference needs",
        description="Power of a paired comparison of two models' accuracy on the same items (normal "
                    "approximation to McNemar's test). D, the share of items on which the two models "
                    "disagree, is estimated from the predictions of evaluated parent → child pairs "
                    "(of --models, else of the whole workspace) unless given.")
    add_workspace_arg(parser)
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--items", type=int, metavar="N", help="items in the test set")
    target.add_argument("--difference", type=float, metavar="X", help="accuracy difference to detect (e.g. 0.02)")
    parser.add_argument("--discordance", type=float, metavar="D",
                        help="expected share of items where exactly one model is right (default: estimated)")
    parser.add_argument("--alpha", type=float, default=0.05, help="significance level (default 0.05)")
    parser.add_argument("--power", type=float, default=0.8, help="wanted power (default 0.8)")
    parser.add_argument("--models", nargs="+", metavar="NAME",
                        help="estimate D from these models' parent → child pairs (nearest evaluated pair above each)")
    parser.add_argument("--dataset", metavar="NAME", help="estimate D on this test set only")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.set_defaults(func=run)


def run(args) -> int:
    from engine.results.lineage import DiscordanceEstimate, estimate_discordance
    from engine.results.stats import detectable_difference, items_needed

    if args.discordance is not None:
        estimate = DiscordanceEstimate(args.discordance, 0, [], estimated=False)
        source = f"D = {args.discordance:g} (given)"
    else:
        estimate = estimate_discordance(workspace_from(args), args.models, args.dataset)
        source = estimate.describe()
    d = estimate.discordance
    try:
        if args.items is not None:
            difference = detectable_difference(args.items, d, alpha=args.alpha, power=args.power)
            items = args.items
        else:
            items = items_needed(args.difference, d, alpha=args.alpha, power=args.power)
            difference = args.difference
    except ValueError as exc:
        fail(str(exc))
    if args.json:
        print_json({"items": items, "difference": difference, "discordance": d, "alpha": args.alpha,
                    "power": args.power, "discordance_source": source, "pairs": estimate.pairs})
        return 0
    settings = f"two-sided α = {args.alpha:g}, power {args.power:.0%}, {source}"
    if args.items is not None:
        if difference is None:
            console.print(f"{items} items: no accuracy difference up to D = {d:g} is detectable ({settings})",
                          highlight=False, soft_wrap=True)
        else:
            console.print(f"{items} items: minimum detectable accuracy difference {difference:.4f} "
                          f"({difference * 100:.2f} points; {settings})", highlight=False, soft_wrap=True)
    else:
        console.print(f"an accuracy difference of {difference:g} needs {items} items ({settings})", highlight=False,
                      soft_wrap=True)
    return 0
