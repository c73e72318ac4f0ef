"""Error messages that name their cause, whatever raised it."""

from __future__ import annotations


def reason(error: BaseException) -> str:
    """An exception as the reason in a message, never empty (a parser's bare StopIteration or IndexError
    would otherwise read "cannot read x ()")."""
    text = str(error).strip()
    return text or f"{type(error).__name__} with no message: the file may be empty, cut short or of another format"
