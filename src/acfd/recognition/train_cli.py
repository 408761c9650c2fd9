"""``python -m acfd.recognition.train_cli --config FILE [--resume PATH|auto] [key=value ...]``."""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence

from acfd.recognition.train import load_recognition_config, train_recognition


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--config", default=None)
    parser.add_argument("--resume", default=None)
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    print(train_recognition(load_recognition_config(args.config, args.overrides), resume=args.resume))


if __name__ == "__main__":
    main()
