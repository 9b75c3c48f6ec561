"""MkDocs hook: links from docs/ to files outside it (``../examples/...``, ``../deploy/...``)
work when the Markdown is read in the repository; on the site they become the file's path in
code, since the site holds only docs/. Links between pages are left for MkDocs to check."""

from __future__ import annotations

import re
from typing import Any

_OUTSIDE = re.compile(r"\[([^\]]+)\]\(\.\./([^)#\s]+)(#[^)\s]*)?\)")


def on_page_markdown(markdown: str, **_: Any) -> str:
    """Replace each link out of docs/ by its text and the path it points to."""

    def plain(match: re.Match[str]) -> str:
        text, path = match.group(1), match.group(2)
        return text if text.strip("`") == path else f"{text} (`{path}` in the repository)"

    return _OUTSIDE.sub(plain, markdown)
