"""Optional compiled speedups for the kline core, from the same source (mypyc).

``pip install`` compiles the modules in :data:`COMPILED` with mypyc when it can: mypy is a build
requirement and a C compiler works. Otherwise, or with ``STREAMER_PURE_PYTHON=1`` set, the same
package installs as pure Python and behaves identically (``tests/test_compiled.py`` holds the
two to byte-identical output). Everything else is configured in ``pyproject.toml``.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path
from typing import Any

from setuptools import setup

# The hot path: parsing a trade frame and aggregating it (see bench/ and docs/performance.md).
COMPILED = [
    "streamer/numbers.py",
    "streamer/trade_ids.py",
    "streamer/intervals.py",
    "streamer/spans.py",
    "streamer/bar.py",
    "streamer/aggregator.py",
    "streamer/clock.py",
    "streamer/pipeline.py",
    "streamer/exchanges/ranges.py",
    "streamer/exchanges/binance/parser.py",
]


def _say(message: str) -> None:
    print(f"streamer setup: {message}", file=sys.stderr)


def _compiler_works() -> bool:
    """Whether a C compiler can build an extension here (without one: pure Python)."""
    from setuptools._distutils.ccompiler import new_compiler
    from setuptools._distutils.sysconfig import customize_compiler

    compiler = new_compiler()
    customize_compiler(compiler)
    with tempfile.TemporaryDirectory() as tmp:
        source = Path(tmp) / "probe.c"
        source.write_text("int main(void) { return 0; }\n")
        try:
            compiler.compile([str(source)], output_dir=tmp)
        except Exception as exc:
            _say(f"no working C compiler ({exc})")
            return False
    return True


def _ext_modules() -> list[Any]:
    if os.environ.get("STREAMER_PURE_PYTHON"):
        _say("STREAMER_PURE_PYTHON is set: installing pure Python")
        return []
    try:
        from mypyc.build import mypycify
    except ImportError:
        _say("mypyc is not available: installing pure Python")
        return []
    if not _compiler_works():
        _say("installing pure Python")
        return []
    # The build environment holds mypy, not the runtime dependencies: their types are unknown
    # there (Any), which costs the compiled code nothing it relies on. The project's strict
    # configuration is for `make typecheck`, not for the build.
    options = ["--config-file", os.devnull, "--ignore-missing-imports"]
    try:
        # One runtime library for the group, inside the package (streamer/core__mypyc...):
        # an editable install only maps the package, not a top-level module beside it.
        return mypycify([*options, *COMPILED], opt_level="3", group_name="streamer.core")
    except (Exception, SystemExit) as exc:  # mypyc exits on what it cannot compile
        _say(f"mypyc failed ({exc!r}): installing pure Python")
        return []


setup(ext_modules=_ext_modules())
