"""`pedvit plans`: what each split plan sends, computes, and guarantees, with its edge/worker FLOP shares."""

from __future__ import annotations

import argparse
import json
from typing import Any

import torch

from pedvit.models.registry import ENCODERS, build_sam
from pedvit.partition.detectors import CLASSES, detector_names, parse_keep_local

from pedvit.plans.flops import decoder_flops_per_prompt, plan_flops
from pedvit.edge.build import build_plan
from pedvit.plans.plans import PLANS, SplitPlan

#: the model each plan is described with when --model is not given
DEFAULT_MODEL = {"tinyvit-isolated": "mobile_sam", "vit-isolated": "vit_b", "vit-exact": "vit_b"}


def _meta_model(name: str):  # noqa: ANN202 - a Sam on the meta device (structure only, no weights)
    if name not in ENCODERS:
        raise SystemExit(f"unknown model {name!r}; choose one of {', '.join(ENCODERS)}")
    with torch.device("meta"):
        return build_sam(name, ENCODERS[name]())


def describe(plan: SplitPlan, model_name: str) -> dict[str, Any]:
    """One plan's description plus its FLOP split on `model_name` (JSON-ready)."""
    model = _meta_model(model_name)
    info = plan.info(model)
    flops = plan_flops(plan, model)
    return {
        "plan": plan.name,
        "halo_px": plan.halo_px,
        "models": info.models,
        "rounds": info.rounds,
        "worker_receives": info.worker_receives,
        "edge_computes": info.edge_computes,
        "exact": info.exact,
        "isolated": info.isolated,
        "notes": info.notes,
        "flops_model": model_name,
        "worker_gflops": flops.worker_flops / 1e9,
        "edge_gflops": flops.edge_flops / 1e9,
        "edge_share": flops.edge_share,
        "decoder_gflops_per_prompt": decoder_flops_per_prompt(model) / 1e9,
        **keep_local_info(),
    }


def keep_local_info(classes: str | None = None) -> dict[str, Any]:
    """Which sensitive-content detectors the ``semantic`` scheme runs (``--keep-local``; None: the default)."""
    active = parse_keep_local(classes)
    return {"keep_local_classes": list(active), "keep_local_detectors": {c: list(detector_names([c])) for c in active},
            "keep_local_available": {c: list(d) for c, d in CLASSES.items()}}


def _print(rows: list[dict[str, Any]]) -> None:
    for row in rows:
        print(f"{row['plan']}" + (f" (halo {row['halo_px']} px)" if row["plan"] == "tinyvit-isolated" else ""))
        print(f"  models:          {row['models']}")
        print(f"  rounds:          {row['rounds']}")
        print(f"  worker receives: {row['worker_receives']}")
        print(f"  edge computes:   {row['edge_computes']}")
        print(f"  exact:           {'yes' if row['exact'] else 'no (approximate)'}")
        isolated = "yes: a worker's inputs depend only on its own windows' pixels" if row["isolated"] else (
            "NO: after a global block a worker's tokens carry context from every window of the image")
        print(f"  isolated:        {isolated}")
        if row["notes"]:
            print(f"  notes:           {row['notes']}")
        print(
            f"  encoder FLOPs on {row['flops_model']} (square image, 25 windows): workers {row['worker_gflops']:.1f} G, "
            f"edge {row['edge_gflops']:.1f} G incl. neck and any fusion -> edge share {100 * row['edge_share']:.1f} %"
        )
        print(f"  (not included: prompt encoder + mask decoder on the edge, {row['decoder_gflops_per_prompt']:.2f} G per prompt)")
        active = ", ".join(f"{c} ({'+'.join(d)})" for c, d in row["keep_local_detectors"].items()) or "none"
        print(f"  semantic scheme: windows with {active} stay on the edge (--keep-local; available: "
              + ", ".join(f"{c} ({'+'.join(d)})" for c, d in row["keep_local_available"].items()) + ")")
        print()


def _main(args: argparse.Namespace) -> int:
    names = [args.plan] if args.plan else list(PLANS)
    rows = []
    for name in names:
        model_name = args.model or DEFAULT_MODEL[name]
        halos = [args.halo] if args.halo is not None else ([0, 112] if name == "tinyvit-isolated" else [0])
        for halo in halos:
            # As the predictor builds it: tinyvit-isolated with the shipped fusion (and its context pass).
            plan = build_plan(name, model_name, halo_px=halo, fusion="off" if args.no_fusion else "auto")
            try:
                row = describe(plan, model_name)
                row.update(keep_local_info(args.keep_local))
                rows.append(row)
            except ValueError as error:  # plan/model mismatch, e.g. --model mobile_sam with a ViT plan
                print(f"{name}: skipped on {model_name}: {error}")
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        _print(rows)
    return 0


def register(subparsers: Any) -> None:
    """Add `pedvit plans`."""
    parser = subparsers.add_parser("plans", help="describe the split plans (rounds, what workers see, isolation, FLOP shares)")
    parser.add_argument("--plan", choices=list(PLANS), default=None, help="only this plan (default: all)")
    parser.add_argument("--model", choices=list(ENCODERS), default=None, help="model for the FLOP split (default: each plan's model)")
    parser.add_argument("--halo", type=int, default=None, help="halo in px for tinyvit-isolated (default: 0 and 112)")
    parser.add_argument("--no-fusion", action="store_true", help="tinyvit-isolated without its learned edge fusion (on by default)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")
    parser.add_argument("--keep-local", default=None, metavar="CLASSES",
                        help="semantic scheme's sensitive classes to describe (default faces,text)")
    parser.set_defaults(func=_main)
