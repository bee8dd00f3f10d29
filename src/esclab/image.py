"""The booted hosts' Debian 12 image: built by debootstrap from Debian's packages, cached.

    python -m esclab.image            # build (or find) the image, print its directory

The image is a plain directory tree (a root file system) with systemd as init and the
product's dependencies preinstalled (the booted hosts sit in lab namespaces and reach no
package registry). It is cached under ``<cache>/<recipe hash>/root``: a change of the recipe
below (suite, packages, the steps' version) builds a new one; an unchanged recipe reuses it.
A half-built image never counts: the tree is built in a temporary directory and renamed into
place only when every step succeeded.

Nothing in the image is started while it is built: packages are installed with a
``policy-rc.d`` that refuses every service start, inside ``systemd-nspawn --pipe`` (not
booted), and without a network namespace of the lab (the build needs Debian's mirror).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from esc.drivers.proc import run

SUITE = "bookworm"
# What the package depends on (packaging/debian/control), plus what a lab test runs inside a
# node. Kept here, not read from the control file, so the image does not change with every
# version bump of the product.
PACKAGES = (
    "systemd",
    "systemd-sysv",
    "dbus",
    "iproute2",
    "python3",
    "keepalived",
    "postgresql-15",
    "exabgp",
    "etcd-server",  # quorum mode's members (recommended by the package, not a dependency)
    "nftables",
    "iptables",
    "util-linux",
    "procps",
    "iputils-ping",
    "e2fsprogs",
    "openssl",
    "mount",
    "logrotate",
    "curl",
    "ca-certificates",
    "less",
)
RECIPE_VERSION = 1  # bump when the steps below change
DEFAULT_CACHE = Path("/var/tmp/esc-lab-images")
NO_START = "#!/bin/sh\n# esc-lab image build: no service starts\nexit 101\n"


def cache_dir() -> Path:
    return Path(os.environ.get("ESC_LAB_IMAGES", str(DEFAULT_CACHE)))


def recipe_hash() -> str:
    text = f"{RECIPE_VERSION}\n{SUITE}\n" + "\n".join(sorted(PACKAGES))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def image_dir() -> Path:
    """Where the image of the current recipe lives (built or not)."""
    return cache_dir() / recipe_hash() / "root"


APT_SOURCES = (Path("/etc/apt/sources.list.d/debian.sources"), Path("/etc/apt/sources.list"))


def mirror() -> str:
    """Debian's mirror as this machine's apt is configured."""
    return mirror_of(APT_SOURCES)


def mirror_of(sources: Sequence[Path]) -> str:
    """The first non-security Debian URI in deb822 or one-line apt sources."""
    for path in sources:
        try:
            text = path.read_text()
        except OSError:
            continue
        for line in text.splitlines():
            words = line.split()
            if words[:1] == ["URIs:"] and len(words) > 1 and "security" not in words[1]:
                return words[1]
            if words[:1] == ["deb"]:
                uris = [w for w in words[1:] if "://" in w]
                if uris and "security" not in uris[0]:
                    return uris[0]
    return "http://deb.debian.org/debian"


def _nspawn_pipe(root: Path, *argv: str) -> None:
    """Run one command in the image (not booted, the host's network) with /proc, /sys, /dev."""
    run(
        [
            "systemd-nspawn",
            "--quiet",
            "--register=no",
            "--keep-unit",
            "--pipe",
            "-D",
            str(root),
            "--setenv=DEBIAN_FRONTEND=noninteractive",
            "--",
            *argv,
        ],
        timeout=1800,
    )


def build(dest: Path, log: bool = True) -> None:
    """Build the image into ``dest`` (which must not exist)."""
    tmp = dest.parent / f"building-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    try:
        base = ("systemd", "systemd-sysv", "dbus", "iproute2")
        run(
            [
                "debootstrap",
                "--variant=minbase",
                f"--include={','.join(base)}",
                SUITE,
                str(tmp),
                mirror(),
            ],
            timeout=1800,
        )
        if log:
            print(f"image: debootstrap {time.monotonic() - started:.0f}s", file=sys.stderr)
        policy = tmp / "usr/sbin/policy-rc.d"
        policy.write_text(NO_START)
        policy.chmod(0o755)
        for conf in ("sources.list.d/debian.sources", "sources.list"):
            src = Path("/etc/apt") / conf
            if src.is_file():
                (tmp / "etc/apt" / conf).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(src, tmp / "etc/apt" / conf)
        for extra in Path("/etc/apt/apt.conf.d").glob("99*"):
            shutil.copy(extra, tmp / "etc/apt/apt.conf.d" / extra.name)
        _nspawn_pipe(tmp, "apt-get", "update", "-q")
        _nspawn_pipe(tmp, "apt-get", "install", "-y", "-q", "--no-install-recommends", *PACKAGES)
        _nspawn_pipe(tmp, "apt-get", "clean")
        policy.unlink()
        # A booted host logs in as root on the console without a password (lab only), and
        # its journal stays in memory (nothing to clean between runs).
        (tmp / "etc/machine-id").write_text("")
        journald = tmp / "etc/systemd/journald.conf.d"
        journald.mkdir(parents=True, exist_ok=True)
        (journald / "lab.conf").write_text("[Journal]\nStorage=volatile\n")
        for unit in ("systemd-networkd.service", "systemd-resolved.service", "getty@tty1.service"):
            run(["rm", "-f", str(tmp / "etc/systemd/system/multi-user.target.wants" / unit)])
        tmp.rename(dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if log:
        print(f"image: built in {time.monotonic() - started:.0f}s: {dest}", file=sys.stderr)


def ensure_image() -> Path:
    """The image directory of the current recipe, built first if missing."""
    dest = image_dir()
    if not (dest / "usr/bin/systemctl").exists():
        build(dest)
    return dest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="esclab.image", description=__doc__)
    parser.parse_args(argv)
    print(ensure_image())
    return 0


if __name__ == "__main__":
    sys.exit(main())
