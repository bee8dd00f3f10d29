"""The booted lab's pure parts: the guide's command line, the image recipe, the mirror."""

from __future__ import annotations

from pathlib import Path

import pytest

from esclab import image
from esclab.guide import guide_ha_set
from esclab.lab import lab_vip_spec
from esclab.topology import build_topology


def test_ha_set_is_written_in_the_guides_own_syntax() -> None:
    topo = build_topology("single")
    argv = guide_ha_set(topo, "esc-ha-0", lab_vip_spec("single"))
    assert argv[:3] == ["escadm", "ha", "set"]
    # "--ha_node_list=<IP1> <IP2>", "--kad_vip= <ip>", "--kad_vif= <if>", as printed
    i = argv.index("--kad_vip=")
    assert argv[3].startswith("--ha_node_list=") and ":" not in argv[3]
    assert argv[4] != argv[3].split("=", 1)[1]
    assert argv[i + 1].startswith("192.0.2.100")
    assert argv[argv.index("--kad_vif=") + 1] == "eth0"


def test_the_image_follows_its_recipe(monkeypatch: pytest.MonkeyPatch) -> None:
    before = image.recipe_hash()
    monkeypatch.setattr(image, "PACKAGES", (*image.PACKAGES, "tcpdump"))
    assert image.recipe_hash() != before


@pytest.mark.parametrize(
    ("text", "want"),
    [
        (
            "Types: deb\nURIs: http://mirror.example/debian\nSuites: bookworm\n\n"
            "Types: deb\nURIs: http://mirror.example/debian-security\n",
            "http://mirror.example/debian",
        ),
        ("deb [arch=amd64] http://m.example/debian bookworm main\n", "http://m.example/debian"),
    ],
)
def test_mirror_is_read_from_apt(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str, want: str
) -> None:
    src = tmp_path / "sources"
    src.write_text(text)
    assert image.mirror_of([src]) == want
