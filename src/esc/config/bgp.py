"""``[bgp]``: the seed's ``escadm bgp set`` arguments (the anycast announcement)."""

from __future__ import annotations

import re

from pydantic import Field, field_validator, model_validator

from esc.config.types import AnycastIp, AsNumber, BgpPeerIp, Model, RouterId, RuleError

# The TCP MD5 key (RFC 2385): Linux takes at most 80 bytes (TCP_MD5SIG_MAXKEYLEN). ExaBGP
# reads it as a quoted string whose line it unescapes first: a backslash escapes, and either
# quote ends (or switches) the string. ';' and braces end statements outside a string: refused
# too (as exabgp_conf does), and spaces, which routers' CLIs rarely take. Printable ASCII only:
# the router is given the same characters, and a key in another encoding is other bytes.
_MD5 = re.compile(r"[!#-&(-:<-\[\]-z|~]{1,80}")


class BgpConfig(Model):
    """The seed's ``escadm bgp set`` arguments."""

    local_ip: BgpPeerIp
    anycast_ip: AnycastIp
    remote_ip: BgpPeerIp
    local_as: AsNumber
    remote_as: AsNumber
    local_router_id: RouterId
    md5: str | None = Field(default=None, repr=False)
    hold_time: int = Field(default=9, ge=3, le=65535)
    reannounce_s: float = Field(default=5.0, gt=0)

    @field_validator("md5")
    @classmethod
    def _md5(cls, v: str | None) -> str | None:
        """Never quoted in a message: it is a secret."""
        if v is None:
            return v
        if not _MD5.fullmatch(v):
            raise ValueError(
                "1-80 printable ASCII characters, no spaces, quotes, backslash, ';' or braces"
            )
        return v

    @model_validator(mode="after")
    def _consistent(self) -> BgpConfig:
        if self.remote_ip.version != self.local_ip.version:
            raise RuleError("remote_ip", "must be of the family of local_ip")
        if self.remote_ip == self.local_ip:
            raise RuleError("remote_ip", "must differ from local_ip")
        if self.anycast_ip.version != self.local_ip.version:
            # "next-hop self" would give the route a next hop of the other family
            raise RuleError("anycast_ip", "must be of the family of local_ip")
        if self.anycast_ip in (self.local_ip, self.remote_ip):
            raise RuleError("anycast_ip", "must differ from local_ip and remote_ip")
        return self
