"""Dispatch `python -m espnet_ot.bench NAME [options]` to `espnet_ot.bench.NAME.main`."""

import importlib
import sys

BENCHMARKS = ("solvers", "train_step", "inference")


def main(argv=None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in BENCHMARKS:
        sys.exit(f"usage: python -m espnet_ot.bench {{{','.join(BENCHMARKS)}}} [options]  (see NAME --help)")
    importlib.import_module(f"espnet_ot.bench.{argv[0]}").main(argv[1:])


if __name__ == "__main__":
    main()
