"""A config change as the operator reviews it: a unified diff of two file
sets as escaped HTML (pure; the dashboard inserts it as HTML, so every line
is escaped here)."""

from __future__ import annotations

import difflib
import html

__all__ = ["diff_html"]


def diff_html(old: dict[str, str], new: dict[str, str]) -> str:
    """A unified diff of two file sets as escaped HTML, one span per line (pure)."""
    chunks: list[str] = []
    for name in sorted(set(old) | set(new)):
        a, b = old.get(name), new.get(name)
        if a == b:
            continue
        lines = difflib.unified_diff(
            (a or "").splitlines(), (b or "").splitlines(),
            fromfile=f"a/{name}" if a is not None else "/dev/null",
            tofile=f"b/{name}" if b is not None else "/dev/null", lineterm="",
        )
        for line in lines:
            cls = ("file" if line.startswith(("---", "+++")) else "hunk" if line.startswith("@@")
                   else "add" if line.startswith("+") else "del" if line.startswith("-") else "ctx")
            chunks.append(f'<span class="diff-{cls}">{html.escape(line)}</span>')
    if not chunks:
        return '<pre class="diff"><span class="diff-ctx">(no changes)</span></pre>'
    return '<pre class="diff">' + "\n".join(chunks) + "</pre>"
