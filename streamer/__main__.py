"""``python -m streamer``: same as the ``streamer`` console script."""

from streamer.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
