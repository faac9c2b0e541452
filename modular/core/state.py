"""Seeding a `PipelineState` for a loop, and reading one back.

Seeding rule (deterministic, documented in the README): every value the loop reads before step 0
(`compat.seeded_inputs`) is taken from, in this order of precedence,
  1. the values given on the loop node and on the block nodes that declare that input — all of them
     must agree, else a `ConfigError` lists each node and its value;
  2. the incoming state (a previous loop's result);
  3. the declared `default`.
A value given for an input that the loop produces itself before any block reads it (an
intermediate output of an earlier block) is not seeded; it is returned as a note.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

from . import compat
from .errors import ConfigError
from .params import check_value, to_state_value


@dataclass(frozen=True)
class ValueSource:
    """Values given by one node: `label` names it in messages; `params` are its InputParams; `node` is the
    host's id of the block node (None for the loop's own values)."""

    label: str
    params: list
    values: dict
    node: str | None = None


def copy_state(state) -> "compat.PipelineState":
    """A copy whose values can be changed in place without touching `state` (node outputs are cached)."""
    return compat.map_state(state, copy_value)


def copy_value(value):
    """A copy of one state value that can be changed without touching the original."""
    if hasattr(value, "clone") and hasattr(value, "detach"):
        return value.detach().clone()
    if hasattr(value, "get_state") and hasattr(value, "manual_seed"):  # a torch.Generator: the same stream, apart
        import torch

        generator = torch.Generator(device=value.device)
        generator.set_state(value.get_state())
        return generator
    try:
        return copy.deepcopy(value)  # a scheduler or guider a state carries, too: the copy steps on alone
    except Exception:
        return value


def _same(a, b) -> bool:
    if a is b:
        return True
    if hasattr(a, "shape") or hasattr(b, "shape"):
        try:
            import torch

            return torch.is_tensor(a) and torch.is_tensor(b) and a.shape == b.shape and bool(torch.equal(a, b))
        except Exception:
            return False
    try:
        return type(a) is type(b) and bool(a == b)
    except Exception:
        return False


def seed_state(wrapper, sources: list[ValueSource], initial=None, loop_label="loop", host_values=None):
    """-> (state, notes). Raises ConfigError for conflicts, missing required inputs and wrong types.
    `host_values` (the host's own) are set as they are, above every other source."""
    state = copy_state(initial)
    params = compat.seeded_inputs(wrapper)
    seeded = {p.name: p for p in params}
    notes = []
    host_values = dict(host_values or {})
    for source in sources:
        clash = sorted(set(source.values) & set(host_values))
        if clash:
            raise ConfigError(
                f"{loop_label}: {', '.join(repr(n) for n in clash)} on {source.label} is provided by the loop's host "
                f"(the sampler) and cannot be given on a node; disconnect it", block_node=source.node
            )
    for name, value in host_values.items():
        state.set(name, value)

    for name, param in seeded.items():
        given = [(s.label, s.values[name]) for s in sources if name in s.values]
        if not given:
            continue
        first_label, first = given[0]
        disagree = [(label, v) for label, v in given[1:] if not _same(v, first)]
        if disagree:
            listing = "; ".join(f"{label}: {v!r}" for label, v in given)
            raise ConfigError(
                f"{loop_label}: blocks that declare the input '{name}' share one value in the block state, "
                f"but they were given different values ({listing}). Give them the same value, or give it on one "
                f"node and leave the others empty."
            )
        state.set(name, to_state_value(name, first), param.kwargs_type)

    for source in sources:
        for name in source.values:
            if name not in seeded:
                notes.append(
                    f"{loop_label}: '{name}' on {source.label} is produced inside the loop by an earlier block; "
                    f"the given value is not used"
                )

    for name, param in seeded.items():
        value = state.get(name)
        if value is None and param.default is not None:
            continue  # the block applies its declared default itself (get_block_state)
        if value is None and param.required:
            who = ", ".join(s.label for s in sources if any(p.name == name for p in s.params))
            raise ConfigError(
                f"{loop_label}: required input '{name}' is missing: give it on {who or 'the loop'} "
                f"or in the incoming state"
            )
        if not any(name in s.values for s in sources):
            continue  # a value from the incoming state: what an earlier step wrote, as diffusers hands it on
        for source in sources:
            for p in source.params:
                if p.name == name:
                    reason = check_value(p, value)
                    if reason:
                        raise ConfigError(f"{loop_label}: input '{name}' of {source.label}: {reason}",
                                              block_node=source.node)
    return state, notes


def describe(state) -> list[tuple[str, str, str]]:
    """(key, type, detail) for each value: dtype / shape / device for tensors, a short repr otherwise."""
    rows = []
    for key, value in compat.state_values(state).items():
        if hasattr(value, "shape") and hasattr(value, "dtype"):
            detail = f"shape={tuple(value.shape)} dtype={value.dtype}"
            if hasattr(value, "device"):
                detail += f" device={value.device}"
            rows.append((key, type(value).__name__, detail))
        else:
            text = repr(value)
            rows.append((key, type(value).__name__, text if len(text) <= 80 else text[:77] + "..."))
    return rows
