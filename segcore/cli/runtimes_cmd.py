"""``python -m segcore runtimes``: what runs the network here, and the accuracy gate's figures.

Prints the CPU and its flags, each runtime with whether it can run here, and — for the model —
the gate record of this CPU (built with ``--prepare``: converts, quantises and gates now, so
the app and the commands find everything ready) and the runtime ``auto`` picks. ``--ship``
puts the gated int8 runtime and Keras's gate masks into the bundle's ``prepared/`` folder
(:mod:`segcore.bundles.prepared`), so a fresh clone opens it without TensorFlow.
"""

from __future__ import annotations

import argparse
import sys


def add_runtimes(commands) -> None:
    """Registers ``runtimes``."""
    sub = commands.add_parser(
        "runtimes",
        help="list the runtimes, their accuracy checks, auto's pick",
        description="What can run the network on this CPU: each runtime (keras; OpenVINO "
        "float32, bf16 and int8) and whether it can run here, the accuracy check of the "
        "converted model against keras, and the runtime --runtime auto picks. --prepare "
        "converts and checks now, so later commands and the app find everything ready.",
    )
    sub.add_argument("--model", default="default", help="bundle (default: weights/default)")
    sub.add_argument(
        "--prepare",
        action="store_true",
        help="convert, quantise and gate now when no valid record exists (about 30 s on 2 cores)",
    )
    sub.add_argument(
        "--ship",
        action="store_true",
        help="prepare and gate int8 here, then put it and Keras's gate masks into the bundle's "
        "prepared/ folder (recorded in its card), so a fresh copy needs no TensorFlow to start",
    )
    sub.set_defaults(func=cmd_runtimes)


def cmd_runtimes(args: argparse.Namespace) -> int:
    from segcore.bundles.loading import load_bundle
    from segcore.bundles.runtime_cache import bundle_runtime_cache
    from segcore.errors import ConfigError
    from segcore.inference.runtimes import selection
    from segcore.inference.runtimes.base import RUNTIMES
    from segcore.inference.runtimes.cpu import cpu_info

    print(f"CPU: {cpu_info().describe()}")
    for name in RUNTIMES:
        why = selection.why_unavailable(name)
        print(f"  {name:14s} {'available' if why is None else why}")
    bundle = load_bundle(args.model)
    cache = bundle_runtime_cache(bundle)
    if cache is None:
        raise ConfigError(f"{args.model}: the classical baseline has no network to run")

    def report(line: str) -> None:
        print(line, file=sys.stderr)

    if args.ship:
        from segcore.bundles.prepared import PREPARED_DIR, prepare_runtime

        entry = prepare_runtime(bundle, cache, report)
        size = sum((bundle.path / PREPARED_DIR / name).stat().st_size for name in entry["files"])
        print(
            f"shipped {entry['runtime']} in {bundle.path / PREPARED_DIR} ({size / 1e6:.1f} MB, "
            f"{', '.join(f'{k} {v}' for k, v in entry['versions'].items())}); card updated"
        )
    record = cache.gate_record()
    if record is None and args.prepare and selection.auto_candidates():
        record = cache.run_gate(report)
    print(f"model: {bundle.card.name} (cache {cache.folder})")
    if record is None:
        print("  no gate record on this CPU yet: auto will build one on first use (or --prepare)")
        return 0
    print(f"  {'runtime':14s} {'gate':6s} {'ms/tile':>8s} {'× keras':>8s}  figures")
    for result in record["results"]:
        print(
            f"  {result['runtime']:14s} {'pass' if result['passed'] else 'FAIL':6s} "
            f"{result['ms_per_tile']:8.1f} {result['time_ratio']:8.2f}  {result['reason']}"
        )
    for name, why in record.get("failed", {}).items():
        print(f"  {name:14s} did not build: {why}")
    if record.get("keras_reference"):
        print(f"  gated without Keras, against {record['keras_reference']}")
    print(f"auto: {selection.choose(record)}")
    return 0
