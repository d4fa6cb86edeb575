"""``python -m spinnray.data.keywords OUT_DIR [--per-word N] [--seed S] [--workers W]``."""

import argparse
import json
import sys
import time
from pathlib import Path

from spinnray.data.keywords import (
    DEFAULT_PER_WORD,
    MANIFEST,
    is_complete,
    ensure_keyword_dataset,
)
from spinnray.errors import ConfigError, DataError


def main(argv: list[str] | None = None) -> int:
    """``python -m spinnray.data.keywords OUT_DIR [--per-word N] [--seed S] [--workers W]``."""
    parser = argparse.ArgumentParser(prog="python -m spinnray.data.keywords",
                                     description="Write a Speech Commands v1-style keyword set spoken by espeak-ng.")
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--per-word", type=int, default=DEFAULT_PER_WORD,
                        help=f"clips per keyword (default {DEFAULT_PER_WORD}; each auxiliary word gets a quarter)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=None, help="parallel espeak-ng processes (default 2)")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    try:
        if is_complete(args.out_dir, args.per_word, args.seed):
            print(f"{args.out_dir}: already complete for --per-word {args.per_word} --seed {args.seed}")
            return 0
        root = ensure_keyword_dataset(args.out_dir, args.per_word, args.seed, progress=not args.no_progress,
                                      workers=args.workers)
    except (DataError, ConfigError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    clips = json.loads((root / MANIFEST).read_text())["clips"]
    print(f"{root}: {sum(clips.values())} clips ({', '.join(f'{k} {v}' for k, v in clips.items())}) "
          f"in {time.perf_counter() - start:.1f} s")
    return 0

