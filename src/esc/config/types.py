"""The schema's value types: address kinds, interface names, bounded integers, and the error a
rule over several fields raises (:class:`RuleError`, naming its field as data).

Addresses: any unicast address is accepted. Each kind of address setting has its own type
(``NodeIp``, ``VipIp``, ...) refusing only what can never work there (``esc.addresses``).
"""

from __future__ import annotations

import ipaddress
import re
from typing import Annotated

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    PlainSerializer,
    ValidationError,
)

from esc.addresses import IPAddress, Use, check_address, check_ifname, parse_ip

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
# ASCII digits only: int() and str.isdigit() also take other scripts' digits (U+0663 is 3,
# U+FF11 is 1) and spaces around; superscript two passes isdigit() and then fails int().
# Twenty digits hold every integer the schema allows.
_DIGITS = re.compile(r"[0-9]{1,20}")
_SECONDS = re.compile(r"[0-9]{1,9}(\.[0-9]{1,9})?")


class RuleError(ValueError):
    """A rule over several fields of one model, about ``field`` (dotted, relative to the model):
    :func:`esc.config.load.config_error` joins it to the model's location (``ha.kad_vip``)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


class Model(BaseModel):
    """Every section of the schema: frozen, an unknown key is an error naming it, and strict:
    a value of another type is refused, never converted (``http_port = true`` is not port 1,
    ``name = 3`` is not ``"3"``, ``kad_vri = "7"`` is not 7). An int is taken for a float.
    Text becomes an address, an interface or a VIP only through that type's own parser (a
    ``BeforeValidator``), and a TOML array a tuple through :data:`TUPLE`. escadm's flags are
    text: ``config_flags.section_values`` turns the numeric ones into numbers first, with
    :func:`decimal_int` / :func:`decimal_seconds`."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)


def decimal_int(text: str, *, signed: bool = False) -> int:
    """``text`` as an integer written in ASCII decimal digits (a leading '-' only if
    ``signed``): no sign otherwise, no spaces, no '0x', no other script's digits. The one
    parser of integers typed by an operator (escadm's flags, the seed forms' prefix length)."""
    body = text[1:] if signed and text.startswith("-") else text
    if not _DIGITS.fullmatch(body):
        sign = "an optional '-' and " if signed else ""
        raise ValueError(f"{text!r} is not a decimal integer ({sign}1-20 ASCII digits 0-9)")
    return int(text)


def decimal_seconds(text: str) -> float:
    """``text`` as non-negative seconds in ASCII decimal (``30``, ``0.25``): no exponent, sign,
    spaces, ``nan`` or ``inf``, which ``float()`` takes."""
    if not _SECONDS.fullmatch(text):
        raise ValueError(f"{text!r} is not a number of seconds (ASCII digits, as 30 or 0.25)")
    return float(text)


def _as_tuple(value: object) -> object:
    return tuple(value) if isinstance(value, list) else value


# a TOML array (a list) for a tuple field: strict mode takes a tuple only
TUPLE = BeforeValidator(_as_tuple)


def _text(value: object) -> str:
    if not isinstance(value, str):
        raise ValueError(f"must be a string, not {type(value).__name__}")
    return no_control(value)


def no_control(text: str) -> str:
    """Refuse control characters: values end up in generated config and ExaBGP commands."""
    if _CONTROL.search(text):
        raise ValueError("must not contain control characters (newline, tab, ...)")
    return text


def first_message(exc: ValidationError) -> str:
    """The first error's message, for a value parsed from text inside another field."""
    first = exc.errors()[0]
    cause = first.get("ctx", {}).get("error")
    if isinstance(cause, RuleError):
        return cause.message
    return str(first["msg"]).removeprefix("Value error, ")


def _ip(value: object) -> IPAddress:
    if isinstance(value, ipaddress.IPv4Address | ipaddress.IPv6Address):
        return value
    if not isinstance(value, str):
        raise ValueError("must be an IP address string")
    return parse_ip(no_control(value))


_NO_ZONE = "it is usable only with an interface (a zone), which this setting cannot carry"
_UNROUTED = "routers never forward link-local addresses, so other networks cannot reach it"

# One Use per kind of address setting; its reasons end up in the error messages. Link-local
# (see addresses.py for the general rule): the node addresses carry VRRP unicast, replication
# and the peer API between two hosts, which works over IPv4 link-local on one link but has no
# place for an IPv6 zone. The VIP and the anycast address are reached from other networks, so
# neither family's link-local can serve. The tracked gateway is pinged without an interface; a
# route's next hop names its interface, so both families work there. BGP over IPv4 link-local
# is common (cloud peering on 169.254.x.x/30); ExaBGP's neighbour has no zone for an IPv6 one.
NODE = Use(
    loopback="the other node can never reach it",
    link_local_v4=None,
    link_local_v6=f"for keepalived, replication and the peer API {_NO_ZONE}",
)
VIP = Use(
    loopback="clients on other hosts can never reach it",
    link_local_v4=f"{_UNROUTED}, and hosts there pick and defend their own (RFC 3927)",
    link_local_v6=f"{_UNROUTED}, and every client would need a zone",
)
ANYCAST = Use(
    loopback="announcing it attracts nothing",
    link_local_v4=_UNROUTED,
    link_local_v6=_UNROUTED,
)
GATEWAY = Use(
    loopback="pinging this host says nothing about reaching the gateway",
    link_local_v4=None,
    link_local_v6="the gateway probe pings it without an interface: give a global address",
)
NEXT_HOP = Use(
    loopback="a route cannot go via this host's loopback", link_local_v4=None, link_local_v6=None
)
BGP_PEER = Use(
    loopback="a BGP session with a router never runs over loopback",
    link_local_v4=None,
    link_local_v6=_NO_ZONE,
)
LISTEN = Use(loopback=None, link_local_v4=None, link_local_v6=_NO_ZONE, unspecified=None)


def _checked(use: Use) -> AfterValidator:
    return AfterValidator(lambda addr: check_address(addr, use))


_PARSE = BeforeValidator(_ip)
STR = PlainSerializer(str, return_type=str)
NodeIp = Annotated[IPAddress, _PARSE, _checked(NODE), STR]
VipIp = Annotated[IPAddress, _PARSE, _checked(VIP), STR]
AnycastIp = Annotated[IPAddress, _PARSE, _checked(ANYCAST), STR]
GatewayIp = Annotated[IPAddress, _PARSE, _checked(GATEWAY), STR]
NextHopIp = Annotated[IPAddress, _PARSE, _checked(NEXT_HOP), STR]
BgpPeerIp = Annotated[IPAddress, _PARSE, _checked(BGP_PEER), STR]
ListenIp = Annotated[IPAddress, _PARSE, _checked(LISTEN), STR]

IfName = Annotated[str, BeforeValidator(lambda v: check_ifname(_text(v)))]


def _router_id(value: object) -> ipaddress.IPv4Address:
    if isinstance(value, ipaddress.IPv4Address):
        address = value
    else:
        text = _text(value)
        try:
            address = ipaddress.IPv4Address(text)
        except ValueError:
            raise ValueError(f"{text!r} is not an IPv4 address (a router id is 32 bits)") from None
    if int(address) == 0:
        raise ValueError("a BGP router id must not be 0.0.0.0 (RFC 6286)")
    return address


RouterId = Annotated[ipaddress.IPv4Address, BeforeValidator(_router_id), STR]


def integer(low: int, high: int) -> BeforeValidator:
    """An integer from ``low`` to ``high``: never a boolean, a fraction or text (a flag's text
    is made a number by ``config_flags``, with :func:`decimal_int`)."""

    def check(value: object) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise ValueError(f"must be an integer {low}-{high}")
        return value

    return BeforeValidator(check)


VrId = Annotated[int, integer(1, 255)]
AsNumber = Annotated[int, integer(1, 4294967295)]


def absolute_path(value: str) -> str:
    """A path that does not depend on the working directory, without control characters."""
    if not no_control(value).startswith("/"):
        raise ValueError("must be an absolute path")
    return value
