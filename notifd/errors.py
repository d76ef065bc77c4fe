"""One line for an error, as every message of notifd's shows it."""
from __future__ import annotations


def first_line(error: BaseException) -> str:
    """The first line of `error`'s message, or its class name when it has none.

    For a database error, the driver's own message: SQLAlchemy's wraps it in a prefix naming
    the driver's class and a second line pointing at its web site, which say nothing to an
    operator.
    """
    original = getattr(error, "orig", None) or error
    text = str(original).strip()
    return text.splitlines()[0] if text else type(original).__name__
