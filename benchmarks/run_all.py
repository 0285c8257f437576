"""Run every benchmark in one process and print the measured ratios.

Each benchmark measures its own baseline in the same run (this machine is noisy), prints
``name: ratio (goal)`` lines and returns a list of result dicts; nothing here asserts on
time. Usage: ``make bench`` or ``python benchmarks/run_all.py [--only grads curvature ...]``.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import json
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
BENCHMARKS = ("grads", "curvature", "train", "noise")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", choices=BENCHMARKS, default=list(BENCHMARKS))
    parser.add_argument("--json", type=Path, help="also write all results to this JSON file")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(HERE))
    results: dict[str, object] = {}
    for name in args.only:
        print(f"\n=== bench_{name} ===", flush=True)
        start = time.perf_counter()
        module = importlib.import_module(f"bench_{name}")
        takes_argv = bool(inspect.signature(module.main).parameters)
        results[name] = module.main([]) if takes_argv else module.main()
        print(f"(bench_{name} took {time.perf_counter() - start:.0f} s)", flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
