"""The project's one exception tree.

    EscError                      anything the project raises on purpose
    ├── ConfigError               bad config file, flag or value; names the field
    ├── IllegalTransition         a state change the table in core/table.py forbids
    ├── LabError                  the lab could not do what was asked
    └── DriverError               a component below us failed (translated at the driver edge)
        ├── CommandError          an external command exited non-zero
        ├── VrrpError             keepalived
        ├── DbError               PostgreSQL (psycopg errors are translated into this)
        ├── BgpError              ExaBGP
        ├── QuorumError           etcd (quorum mode): no member answered, or it refused
        └── ServiceError          escmanager's control socket (activate/deactivate/status)

Lower-library exceptions never leave a driver untranslated: ``raise DbError(...) from exc``.
"""

from __future__ import annotations


class EscError(Exception):
    """Base of every error the project raises on purpose."""


class ConfigError(EscError):
    """A config value is invalid. ``field`` names it (a flag, a dotted key, an API field)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class IllegalTransition(EscError):
    """The state machine was asked for an edge its table does not allow."""

    def __init__(self, current: object, wanted: object, reason: str = "") -> None:
        text = f"illegal transition {current} -> {wanted}"
        if reason:
            text += f" ({reason})"
        super().__init__(text)
        self.current = current
        self.wanted = wanted


class LabError(EscError):
    """The lab could not be built, inspected or changed."""


class DriverError(EscError):
    """A component below the agent failed."""


class CommandError(DriverError):
    """An external command exited non-zero."""

    def __init__(self, argv: list[str], returncode: int, stderr: str) -> None:
        tail = stderr.strip().splitlines()[-3:]
        super().__init__(f"{' '.join(argv)} exited {returncode}: {' | '.join(tail)}")
        self.argv = argv
        self.returncode = returncode
        self.stderr = stderr


class VrrpError(DriverError):
    """keepalived failed or could not be controlled."""


class DbError(DriverError):
    """PostgreSQL failed or could not be controlled."""


class BgpError(DriverError):
    """ExaBGP failed or could not be controlled."""


class QuorumError(DriverError):
    """etcd could not be reached (no member of the quorum answered in time) or refused."""


class ServiceError(DriverError):
    """escmanager could not be reached or refused a control request."""
