"""The progress bars of the package's commands and long calls (tqdm)."""

from __future__ import annotations

import sys
from typing import Optional


def progress_bar(total: Optional[int], enabled: bool = True, **kwargs):
    """A tqdm bar on stderr, or None when ``enabled`` is False or tqdm is not
    installed. The bar draws only where stderr is a terminal (or in a
    notebook): tqdm's ``disable=None``, so a captured log gets no stream of
    carriage returns. ``kwargs`` go to tqdm (``desc``, ``unit``, ...)."""
    if not enabled:
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return None
    return tqdm(total=total, file=sys.stderr, leave=False, disable=None, **kwargs)


def progress_counter(total: Optional[int], enabled: bool = True, **kwargs):
    """:func:`progress_bar` and a callable that advances it (its ``update``),
    or ``(None, None)`` where there is no bar: the callable is what the
    training loops take as ``progress``."""
    bar = progress_bar(total, enabled, **kwargs)
    return (bar, bar.update) if bar is not None else (None, None)
