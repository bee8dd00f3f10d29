"""What the agent (root) gives esc-manager, which runs as the unprivileged ``escmanager``.

Before each start of the manager, in ``<run>/manager`` (the manager's user's, 0700):

* ``esc.toml``: a copy of the config **without the pair's secrets** (the peer-API secret, the
  replication password, the BGP MD5 password are blanked; the manager uses none of them), its
  ``manager.cert_file``/``key_file`` pointing at the copies below. The manager reads this one.
* ``api.crt``/``api.key``: copies of the northbound certificate (the pair's, issued by root
  from the pair CA, or the operator's own), the key 0600 for the manager's user.
  :class:`TlsCopy` refreshes them when the originals change (`escadm cert rotate`); the
  manager's ``CertWatch`` then reloads them into its listeners.
* ``login.key``: the pair's login-ticket key, derived from ``agent.peer_secret``
  (``manager/tickets.py``; 0600), absent without a secret.
* its control socket (it makes it) and the agent's read-only status socket for the portal
  (``GET /status``, ``GET /history``; the agent makes it there, owned by the manager's user).

And ``<log>/escmanager.log``, 0640, owned by the manager's user, which writes it.

The lab VIM (network namespaces standing in for VMs, the checkout only) needs network
administration: with ``manager.vim = "lab"`` the manager keeps the capabilities
:data:`LAB_VIM_CAPS`, as ambient capabilities of the unprivileged user. The product's VIMs
need none.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from esc.accounts import MANAGER_USER, Account, lookup, setpriv_drop
from esc.config.schema import EscConfig, NodePaths, dump_config
from esc.files import open_append, stamp, write_atomic
from esc.manager.tickets import KEY_FILE, derive_key
from esc.manager.tls import ensure_certificate

LAB_VIM_CAPS = ("net_admin", "sys_admin", "sys_ptrace", "dac_override", "kill")
LOG_FILE = "escmanager.log"


def manager_account() -> Account | None:
    """The manager's user when the agent runs as root (always, in the product); None in tests
    that run the agent as another user (the manager then runs as that user too)."""
    if os.geteuid() != 0:
        return None
    return lookup(MANAGER_USER, "manager")


def redacted(cfg: EscConfig, cert: Path, key: Path) -> EscConfig:
    """``cfg`` without the pair's secrets, the northbound certificate at ``cert``/``key``."""
    data = cfg.model_dump(mode="json")
    data["agent"]["peer_secret"] = ""
    data["replication"]["password"] = ""
    if data.get("bgp"):
        data["bgp"]["md5"] = None
    data["manager"]["cert_file"] = str(cert)
    data["manager"]["key_file"] = str(key)
    return EscConfig.model_validate(data)


@dataclass
class TlsCopy:
    """The northbound certificate and key, copied for the manager's user; :meth:`sync` copies
    again when an original changed (its mtime or inode)."""

    cert: Path
    key: Path
    dest: Path
    owner: tuple[int, int] | None
    _seen: tuple[int, ...] | None = None

    @property
    def copies(self) -> tuple[Path, Path]:
        return self.dest / "api.crt", self.dest / "api.key"

    def sync(self) -> bool:
        now = stamp(self.cert, self.key)
        if now is None or now == self._seen:
            return False
        crt, key = self.copies
        # the key first: a reload that sees the new certificate finds its key already there
        write_atomic(key, self.key.read_bytes(), 0o600, owner=self.owner)
        write_atomic(crt, self.cert.read_bytes(), 0o644, owner=self.owner)
        self._seen = now
        return True


def stage(cfg: EscConfig, paths: NodePaths, account: Account | None) -> tuple[list[str], TlsCopy]:
    """Everything the manager reads or writes, made for ``account`` (module docstring); the
    manager's extra arguments and the certificate's copier. Raises EscError/OSError."""
    owner = account.owner if account is not None else None
    d = paths.manager_run_dir
    d.mkdir(parents=True, exist_ok=True)
    if owner is not None:
        os.chown(d, *owner, follow_symlinks=False)
    os.chmod(d, 0o700)
    cert, key = ensure_certificate(paths, cfg.manager, cfg)
    tls = TlsCopy(cert, key, d, owner)
    tls.sync()
    conf = d / "esc.toml"
    write_atomic(conf, dump_config(redacted(cfg, *tls.copies)), 0o600, owner=owner)
    login_key = d / KEY_FILE
    if cfg.agent.peer_secret:
        hexed = derive_key(cfg.agent.peer_secret).hex() + "\n"
        write_atomic(login_key, hexed, 0o600, owner=owner)
    else:
        login_key.unlink(missing_ok=True)
    log = paths.log_dir / LOG_FILE
    paths.log_dir.mkdir(parents=True, exist_ok=True)
    fd = open_append(log)
    try:
        if owner is not None:
            os.fchown(fd, *owner)
    finally:
        os.close(fd)
    return ["--config", str(conf)], tls


def setpriv_options(cfg: EscConfig, account: Account | None) -> list[str]:
    if account is None:
        return []
    return setpriv_drop(account, LAB_VIM_CAPS if cfg.manager.vim == "lab" else ())
