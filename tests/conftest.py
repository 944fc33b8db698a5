"""Fixtures shared by every test: the MicroPython VM, a real Mosquitto broker and a real
PostgreSQL."""

from __future__ import annotations

import itertools

import psycopg
import pytest

from andon.sim.mosquitto import Broker, start_broker
from andon.sim.postgres import Cluster, start_postgres
from andon.sim.vm import VMResult, run_script


class MicroPython:
    """Runs MicroPython scripts with the virtual board's hardware, in a flash dir of their own."""

    def __init__(self, flash):
        self.flash = flash

    def run(
        self, source: str, heap: str = "256K", timeout: float = 60.0, bits: int = 64
    ) -> VMResult:
        """bits=32: the 32-bit VM, whose objects are the size an ESP32's are (andon.sim.vm)."""
        return run_script(source, self.flash, heap=heap, timeout=timeout, bits=bits)


@pytest.fixture
def mpy(tmp_path) -> MicroPython:
    flash = tmp_path / "flash"
    flash.mkdir()
    return MicroPython(flash)


@pytest.fixture
def broker(tmp_path) -> Broker:
    with start_broker(tmp_path / "broker") as b:
        yield b


@pytest.fixture(scope="session")
def postgres_cluster() -> Cluster:
    """One throwaway cluster for the session (starting one takes seconds); a missing
    PostgreSQL fails here, it is not skipped."""
    with start_postgres() as cluster:
        yield cluster


_databases = itertools.count(1)


def _database(cluster: Cluster, options: str = "") -> str:
    name = f"test{next(_databases)}"
    with psycopg.connect(cluster.url, autocommit=True) as db:
        db.execute(f"CREATE DATABASE {name} {options}")
    return cluster.url.rsplit("/", 1)[0] + "/" + name


@pytest.fixture
def postgres(postgres_cluster) -> str:
    """The URL of an empty database of the test's own (text sorted by its bytes, C.UTF-8)."""
    return _database(postgres_cluster)


@pytest.fixture
def postgres_icu(postgres_cluster) -> str:
    """The URL of an empty database of the test's own that sorts text by ICU's English rules
    ("a1" before "B1"), as a plant's database created under an en_US locale does."""
    return _database(postgres_cluster, "TEMPLATE template0 LOCALE_PROVIDER icu ICU_LOCALE 'en-US'")
