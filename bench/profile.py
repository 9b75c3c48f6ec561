"""Summarise a py-spy profile in collapsed-stack form (``py-spy record --format raw``).

    python -m bench.profile bench/results/runs/<run>/profile.txt [--top 30]

Prints the functions with the most samples on top of the stack (self) and anywhere in the
stack (total), as percentages of all samples. ``python -m bench.run --profile`` records one
such file per streamer run.
"""

from __future__ import annotations

import argparse
from collections import Counter
from pathlib import Path

__all__ = ["summarise"]


def summarise(text: str, top: int = 30) -> str:
    """The two tables for collapsed stacks ``text``."""
    own: Counter[str] = Counter()
    total: Counter[str] = Counter()
    samples = 0
    for line in text.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        samples += count
        frames = [_short(frame) for frame in stack.split(";")]
        own[frames[-1]] += count
        for frame in set(frames):
            total[frame] += count
    if not samples:
        return "no samples"
    lines = [f"{samples} samples", "", "self %   function"]
    lines += [f"{100 * n / samples:6.1f}   {name}" for name, n in own.most_common(top)]
    lines += ["", "total %  function"]
    lines += [f"{100 * n / samples:6.1f}   {name}" for name, n in total.most_common(top)]
    return "\n".join(lines)


def _short(frame: str) -> str:
    """``function (path/to/module.py:123)`` -> ``function (module.py)``."""
    name, _, where = frame.partition(" (")
    path = where.rsplit(":", 1)[0]
    return f"{name} ({path.rsplit('/', 1)[-1]})" if path else name


def main() -> None:
    """Print the summary of one profile file."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("path", type=Path)
    parser.add_argument("--top", type=int, default=30)
    args = parser.parse_args()
    print(summarise(args.path.read_text(), args.top))


if __name__ == "__main__":
    main()
