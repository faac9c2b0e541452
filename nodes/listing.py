"""What ComfyUI lists of diffusers' nodes (each node's INPUT_TYPES and DESCRIPTION), kept with diffusers' other
declarations (`modular.pipelines.declarations`): made once per installed diffusers (that imports its classes:
seconds), so that the next starts and the page's first node list import none. A node that runs still reads its
class's live declarations; a listing is kept only where it comes back from the file equal to the live one."""

from __future__ import annotations

import json

from .widgets import ANY

SECTION = "nodes"


def encoded(input_types: dict) -> dict:
    return json.loads(json.dumps(input_types))


def decoded(data: dict) -> dict:
    """INPUT_TYPES as a node returns them: each input's spec a tuple, an any-type socket ComfyUI's "*" type."""
    return {group: {name: (tuple([ANY if spec[0] == "*" else spec[0], *spec[1:]]) if isinstance(spec, list) else spec)
                    for name, spec in inputs.items()} if isinstance(inputs, dict) else inputs
            for group, inputs in data.items()}


def listing_of(cls) -> dict | None:
    """{"input_types", "description"} of a node class (its declarations read now), or None where they cannot be
    read or do not come back from JSON as they are (then the node keeps reading them live)."""
    try:
        types, description = cls.INPUT_TYPES(), cls.DESCRIPTION
        data = {"input_types": encoded(types), "description": description}
    except Exception:
        return None
    return data if decoded(data["input_types"]) == types and isinstance(description, str) else None


def install(cls, listed: dict):
    cls.INPUT_TYPES = classmethod(lambda c: decoded(listed["input_types"]))
    cls.DESCRIPTION = listed["description"]


def keep(classes: dict, cache) -> int:
    """Give each of `classes` ({node id: class}) its kept listing, making (and keeping) those not kept yet. -> how
    many were made now."""
    kept, listing, made = cache.section(SECTION), {}, 0
    for nid, cls in classes.items():
        listed = kept.get(nid)
        if listed is None:
            listed = listing_of(cls)
            made += 1
            if listed is None:
                continue
        listing[nid] = listed
        install(cls, listed)
    cache.put(SECTION, listing)
    return made
