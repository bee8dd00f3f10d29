"""Named faults on the primary, shared by the fault tests and the benchmarks.

Each scenario injects one fault on ``host``; ``restore`` undoes whatever is left (heal, then
boot a node whose agent is gone) so the pair can form again.
"""

from __future__ import annotations

import signal
from collections.abc import Callable

from esc.lab import faults
from esc.lab.lab import Lab

Inject = Callable[[Lab, str], object]

SCENARIOS: dict[str, Inject] = {
    # every process of the node at once, as a power cut (its kernel, here its namespace, stays)
    "kill-node": lambda lab, h: faults.signal_component(lab, h, "all", signal.SIGKILL),
    "kill-keepalived": lambda lab, h: faults.signal_component(lab, h, "keepalived", signal.SIGKILL),
    "kill-postgres": lambda lab, h: faults.signal_component(lab, h, "postgres", signal.SIGKILL),
    "kill-manager": lambda lab, h: faults.signal_component(lab, h, "manager", signal.SIGKILL),
    "link-down": lambda lab, h: faults.link(lab, h, lab.topology().sync_network, up=False),
    "pause-node": lambda lab, h: faults.signal_component(lab, h, "all", signal.SIGSTOP),
}


def restore(lab: Lab, host: str) -> None:
    faults.heal(lab)
    if not lab.agent_alive(host):
        faults.reboot(lab, host)
