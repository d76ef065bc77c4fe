"""The `classified` item type: short ads, read oldest first, one per query."""
from notifd import ItemType, Pick, hookimpl


@hookimpl
def register_item_types(register):
    register(ItemType(name="classified", pick=Pick.OLDEST))
