"""The ESC install guide's argument forms for ``escadm ha set`` and ``escadm bgp set``.

The guide prints ``--ha_node_list=<IP1> <IP2>``, ``--kad_vip= <ip>`` and ``--kad_vif= <if>``:
a value attached with ``=`` and a second one as the next word, or an ``=`` with nothing after
it and the value as the next word. argparse takes neither, so :func:`guide_argv` rewrites them
before argparse sees them:

- ``--opt=`` + ``WORD`` -> ``--opt WORD`` (every option of the two commands);
- ``--ha_node_list=A`` (+ ``B``) -> ``--ha_node_list A`` (+ ``B``): argparse then takes the
  following words as the option's further values, as for ``--ha_node_list A B``.

Everything else is left as it is, so the forms argparse already takes keep working. An ``=``
followed by nothing or by another option (``--kad_vip= --kad_vif eth0``) is an error naming the
option: the next option is never taken as the value.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from esc.cli.config_flags import BGP_FLAGS, HA_FLAGS
from esc.errors import ConfigError

# command words -> (its options, those taking several values)
GUIDE_COMMANDS: Mapping[tuple[str, str], tuple[Sequence[str], frozenset[str]]] = {
    ("ha", "set"): (HA_FLAGS, frozenset({"ha_node_list"})),
    ("bgp", "set"): (BGP_FLAGS, frozenset()),
}


def guide_argv(argv: Sequence[str]) -> list[str]:
    """escadm's whole argv with the guide's forms of ``ha set`` / ``bgp set`` rewritten."""
    spec = GUIDE_COMMANDS.get((argv[0], argv[1])) if len(argv) >= 2 else None
    if spec is None:
        return list(argv)
    return [*argv[:2], *normalise(argv[2:], *spec)]


def _is_option(word: str) -> bool:
    """An option word (``-h``, ``--kad_vif``), not a value such as ``-1``."""
    return word.startswith("-") and not word[1:2].isdigit()


def normalise(args: Sequence[str], options: Sequence[str], multi: frozenset[str]) -> list[str]:
    """``args`` (after the command words) with ``--opt= WORD`` and ``--multi=A B`` rewritten;
    raises :class:`ConfigError` naming the option when an ``=`` has no value."""
    out: list[str] = []
    i = 0
    while i < len(args):
        word = args[i]
        name, eq, value = word.removeprefix("--").partition("=")
        if not (word.startswith("--") and eq and name in options):
            out.append(word)
        elif value:
            out += [word] if name not in multi else [f"--{name}", value]
        else:
            nxt = args[i + 1] if i + 1 < len(args) else None
            if nxt is None or _is_option(nxt):
                raise ConfigError(
                    f"--{name}", f"'=' with no value: give it as --{name} VALUE or --{name}=VALUE"
                )
            out += [f"--{name}", nxt]
            i += 1
        i += 1
    return out
