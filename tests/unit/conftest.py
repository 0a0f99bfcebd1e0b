"""Fixtures shared by the unit tests: a fake clock, the plugin rig (``plugin_rig.Rig``) and the service rig
(``service_rig.Cloud``), each closed at teardown."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.kit.clock import Clock
from tests.unit.plugin_rig import Rig
from tests.unit.service_rig import Cloud

from rpcdaemon.model import L3_AGENT


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def make_rig() -> Iterator[Callable[..., Rig]]:
    """``make_rig(agent_type=L3_AGENT, **Rig options)``: a plugin rig; all closed at teardown."""
    rigs: list[Rig] = []

    def make(agent_type: str = L3_AGENT, **kw: Any) -> Rig:
        rig = Rig(agent_type, **kw)
        rigs.append(rig)
        return rig

    yield make
    for rig in rigs:
        rig.close()


@pytest.fixture
def cloud(tmp_path: Path) -> Iterator[Callable[..., Cloud]]:
    """``cloud(**Service options)``: the service rig, its audit trail in ``tmp_path``; all closed at teardown."""
    made: list[Cloud] = []

    def make(**service: Any) -> Cloud:
        made.append(Cloud(tmp_path, **service))
        return made[-1]

    yield make
    for c in made:
        c.close()
