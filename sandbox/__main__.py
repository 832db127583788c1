"""``python -m sandbox serve --seed FILE`` and ``python -m sandbox generate``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from sandbox.model import SeedError, read_seed_file


def _read_faults(path: str | None) -> tuple[list[dict[str, object]], int | None]:
    if not path:
        return [], None
    data = read_seed_file(path)
    return list(data.get("rules") or []), data.get("seed")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sandbox", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="start every sandboxed system and print their URLs as JSON")
    serve.add_argument("--seed", required=True, help="YAML seed file (see sandbox/demo_seed.yaml)")
    serve.add_argument("--state-dir", default=".sandbox", help="where the CA, certs and endpoints.json go")
    serve.add_argument("--port-base", type=int, default=None, help="first port; default: ephemeral ports")
    serve.add_argument("--faults", default=None, help="YAML file with {seed: N, rules: [...]} to start with")
    serve.add_argument("--fault-seed", type=int, default=None, help="random seed for fault decisions")

    gen = sub.add_parser("generate", help="write a large generated seed as YAML")
    gen.add_argument("--users", type=int, default=100_000)
    gen.add_argument("--groups", type=int, default=50)
    gen.add_argument("--seed", type=int, default=1)
    gen.add_argument("--out", required=True)

    args = parser.parse_args(argv)
    if args.command == "generate":
        from sandbox.generator import write_generated_seed

        write_generated_seed(args.out, users=args.users, groups=args.groups, seed=args.seed)
        return 0

    try:
        seed = read_seed_file(args.seed)
        file_rules, file_seed = _read_faults(args.faults)
    except (OSError, SeedError) as exc:
        print(f"sandbox: {exc}", file=sys.stderr)
        return 2
    seed_faults = seed.get("faults") or {}
    rules = list(seed_faults.get("rules") or []) + file_rules
    fault_seed = args.fault_seed
    if fault_seed is None:
        fault_seed = file_seed if file_seed is not None else int(seed_faults.get("seed", 0))

    from sandbox.server import run

    try:
        run(seed, Path(args.state_dir), port_base=args.port_base, fault_rules=rules, fault_seed=fault_seed)
    except (SeedError, ValueError, OSError) as exc:
        print(f"sandbox: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
