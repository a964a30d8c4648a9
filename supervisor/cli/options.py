"""Option definitions shared between commands: ``server set`` takes every option of ``server add``."""

from __future__ import annotations

import argparse
import copy


def copy_options(source: argparse.ArgumentParser, target: argparse.ArgumentParser) -> list[str]:
    """Give ``target`` every optional argument of ``source`` (same flags, types, choices, help and mutually
    exclusive groups), none required and none with a default: an option that is not given is absent from the
    namespace, so a command can tell "not given" from any value. Returns the copied ``dest`` names.

    Called once ``source`` is complete, so options added to ``server add`` later apply to ``server set`` too.
    """
    groups: dict[int, argparse._MutuallyExclusiveGroup] = {}
    for group in source._mutually_exclusive_groups:
        twin = target.add_mutually_exclusive_group(required=False)
        for action in group._group_actions:
            groups[id(action)] = twin
    copied = []
    for action in source._actions:
        if not action.option_strings or isinstance(action, argparse._HelpAction):
            continue
        clone = copy.copy(action)
        clone.required = False
        clone.default = argparse.SUPPRESS
        groups.get(id(action), target)._add_action(clone)
        copied.append(clone.dest)
    return copied
