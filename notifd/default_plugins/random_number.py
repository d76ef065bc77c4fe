"""The `random` item type: integers; a query returns the newest unread one, or draws a fresh one."""
import random
import re

from notifd import InvalidItem, ItemType, Pick, hookimpl

# A pseudo-random generator seeded from the OS at start: the numbers are a demo's, not
# secrets, and SystemRandom cost a getrandom() system call per `random?`.
_draw = random.Random()
UPPER = 10**12  # fresh draws are in [0, UPPER): as long as the tutorial's numbers


_INTEGER = re.compile(r"[+-]?[0-9]+\Z")  # ASCII only: int() alone would take "1_000" or "١٢"


def validate(text: str) -> str:
    text = text.strip()
    if not _INTEGER.match(text):
        raise InvalidItem("random value must be a decimal integer")
    try:
        return str(int(text))  # normalised: "+007" is stored as "7"
    except ValueError:  # more digits than Python converts
        raise InvalidItem("random value has too many digits") from None


def fresh() -> str:
    return str(_draw.randrange(UPPER))


@hookimpl
def register_item_types(register):
    register(ItemType(name="random", validate=validate, pick=Pick.NEWEST, fresh=fresh))
