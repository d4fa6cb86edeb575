"""``python -m spinnray.data.keywords OUT_DIR [--per-word N] [--seed S] [--workers W]`` writes the keyword set;
``python -m spinnray.data.keywords spikes [--root DIR] [--audio-root DIR] ...`` encodes it as spike trains in
the SHD layout (:mod:`spinnray.data.keyword_spikes`)."""

import argparse
import json
import sys
import time
from pathlib import Path

from spinnray.config import from_dict
from spinnray.data.keyword_spikes import audio_path, encoder_params, ensure_keyword_spikes, spikes_path
from spinnray.data.keywords import (
    DEFAULT_PER_WORD,
    MANIFEST,
    is_complete,
    ensure_keyword_dataset,
)
from spinnray.data.shd import SHDConfig
from spinnray.errors import ConfigError, DataError


def main(argv: list[str] | None = None) -> int:
    """``python -m spinnray.data.keywords OUT_DIR [--per-word N] [--seed S] [--workers W]``, or ``... spikes ...``."""
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["spikes"]:
        return spikes_main(argv[1:])
    parser = argparse.ArgumentParser(prog="python -m spinnray.data.keywords",
                                     description="Write a Speech Commands v1-style keyword set spoken by espeak-ng "
                                                 "(or, with the first argument `spikes`, encode it as spike trains).")
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


def spikes_main(argv: list[str]) -> int:
    """``python -m spinnray.data.keywords spikes``: the options of ``data.name=keyword_spikes``."""
    d = SHDConfig(name="keyword_spikes")
    parser = argparse.ArgumentParser(prog="python -m spinnray.data.keywords spikes",
                                     description="Encode the espeak-ng keyword set as spike trains in the SHD HDF5 "
                                                 "layout (generating the keyword set first if needed).")
    parser.add_argument("--root", default=None, help="output directory (default ~/.cache/spinnray/keyword_spikes)")
    parser.add_argument("--audio-root", default=None, help="the keyword set (default ~/.cache/spinnray/keywords)")
    parser.add_argument("--per-word", type=int, default=d.per_word)
    parser.add_argument("--seed", type=int, default=d.data_seed)
    parser.add_argument("--bands", type=int, default=d.bands)
    parser.add_argument("--levels-db", type=float, nargs="+", default=list(d.levels_db))
    parser.add_argument("--hysteresis-db", type=float, default=d.hysteresis_db)
    parser.add_argument("--smooth-ms", type=float, default=d.smooth_ms)
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    try:
        cfg = from_dict(SHDConfig, {
            "name": "keyword_spikes", "root": args.root, "audio_root": args.audio_root, "per_word": args.per_word, "data_seed": args.seed,
            "bands": args.bands, "levels_db": args.levels_db, "hysteresis_db": args.hysteresis_db,
            "smooth_ms": args.smooth_ms}, "data")
        params = encoder_params(cfg)
        audio = ensure_keyword_dataset(audio_path(cfg), cfg.per_word, cfg.data_seed, progress=not args.no_progress)
        m = ensure_keyword_spikes(spikes_path(cfg), audio, params, progress=not args.no_progress)
    except (DataError, ConfigError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"{spikes_path(cfg)}: {m['channels']} channels; generated in {m['generation_s']} s")
    for split, s in m["stats"].items():
        print(f"  {split}: {s['samples']} samples, {s['spikes_per_sample']:.1f} spikes per sample, "
              f"{100 * s['silent_channels']:.1f} % of channels silent over the split, "
              f"{100 * s['silent_channels_per_sample']:.1f} % per sample")
    return 0
