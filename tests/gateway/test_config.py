"""The plant configuration: the shipped example loads, and every mistake names file and key."""

from __future__ import annotations

from pathlib import Path

import pytest

from andon.config import ConfigError, load_plant

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "plant.toml"


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "plant.toml"
    path.write_text(text)
    return path


def _example_with(tmp_path: Path, old: str, new: str) -> Path:
    text = EXAMPLE.read_text()
    assert old in text, f"the example no longer contains {old!r}"
    return _write(tmp_path, text.replace(old, new, 1))


def _error(path: Path) -> str:
    with pytest.raises(ConfigError) as exc:
        load_plant(path)
    return str(exc.value)


def test_the_example_is_a_realistic_plant():
    plant = load_plant(EXAMPLE)
    stations = list(plant.stations())
    assert plant.site == "PLANT1"
    assert len(plant.lines) == 2
    assert 8 <= len(stations) <= 12
    assert 3 <= len(plant.kanban) <= 5
    assert all(len(s.board) == 12 and int(s.board, 16) >= 0 for _, s in stations)
    assert all(s.profile for _, s in stations)


def test_lookups_by_board_card_and_badge():
    plant = load_plant(EXAMPLE)
    line, station = next(plant.stations())
    assert plant.station_of_board(station.board) == (line.id, station.id)
    assert plant.station_of_board("000000000000") is None
    loop = plant.kanban[1]
    assert plant.loop_of_card(loop.cards[-1]) is loop
    assert plant.loop_of_card("DEADBEEF") is None
    assert plant.badge(plant.badges[0].uid).person == plant.badges[0].person
    assert plant.badge(loop.cards[0]) is None
    assert plant.station("L2", "S04").readers == ["receive"]
    assert plant.station("L2", "S99") is None
    assert plant.token_name(plant.api_tokens[0].token) == plant.api_tokens[0].name
    assert plant.token_name("wrong-token-wrong-token") is None


def test_takt_time_and_stop_policy_per_line():
    plant = load_plant(EXAMPLE)
    l1, l2 = plant.lines
    assert l1.stop.mode == "takt"
    assert (l1.shifts[0].working_s, l1.shifts[0].demand) == (8 * 3600, 480)  # takt 60 s
    assert (l2.stop.mode, l2.stop.seconds) == ("seconds", 90)


def test_relative_database_path_is_taken_from_the_config_file(tmp_path):
    plant = load_plant(_write(tmp_path, EXAMPLE.read_text()))
    assert plant.gateway.database == tmp_path / "var" / "andon.db"
    # the lookups still work on the copy that carries the resolved path
    assert plant.station_of_board(plant.lines[0].stations[0].board) == ("L1", "S01")


def test_defaults_fill_what_a_minimal_plant_leaves_out(tmp_path):
    path = _write(
        tmp_path,
        'site = "P"\n[[lines]]\nid = "L1"\nname = "Line"\n'
        '[[lines.stations]]\nid = "S1"\nname = "One"\nboard = "B1"\nprofile = "esp32-devkitc"\n',
    )
    plant = load_plant(path)
    assert plant.gateway.offline_stops_line is False
    assert plant.lines[0].stop.mode == "seconds" and plant.lines[0].stop.seconds == 60
    tiers = [(t.to, t.on) for t in plant.escalation.tiers]
    assert tiers == [
        ("team_leader", "unacknowledged"),
        ("supervisor", "unacknowledged"),
        ("manager", "unacknowledged"),
        ("manager", "unresolved"),
    ]
    assert plant.cause("cord").stop == "fixed_position" and plant.cause("material").stop == "never"
    assert plant.kanban_policy.overdue_factor == 1.5
    assert plant.broker.port == 1883


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ('site = "PLANT1"', 'site = "PLANT 1"', "site: String should match pattern"),
        ('board = "246F28A1B2D4"', 'board = "246F/28A1B2D4"', "lines[0].stations[1].board"),
        ("demand = 480", "demand = 0", "lines[0].shifts[0].demand"),
        ('stop = { mode = "takt" }', 'stop = { mode = "never" }', "lines[0].stop"),
        ("lead_time_s = 86400", "lead_time_s = -5", "kanban[1].lead_time_s"),
        ('"04C1D2E3F40502"]', '"04c1d2e3f40502"]', "kanban[2].cards[1]"),
        ('post = "L1/S06"', 'post = "L1-S06"', "kanban[2].post"),
        ("port = 1883", "port = 70000", "broker.port"),
        ('webhook = "http', 'webhook = "ftp', "alerts.destinations.pager.webhook"),
        (
            "{ after_s = 180,",
            "{ after_s = 30,",
            'escalation.tiers: "unacknowledged" tiers must have',
        ),
        ('timezone = "Europe/Berlin"', 'timezone = "Mars/Olympus"', "unknown timezone"),
        ('end = "09:45"', 'end = "12:05"', "lines[1].shifts[0]: breaks[1] overlaps breaks[0]"),
        ('role = "quality"', 'role = "quality"\ncolour = "red"', "badges[2].colour: Extra inputs"),
        ('token = "mes-7f3a9c2e51d84b06"', 'token = "short"', "api_tokens[0].token"),
    ],
)
def test_schema_errors_name_the_file_and_the_key(tmp_path, old, new, expected):
    path = _example_with(tmp_path, old, new)
    message = _error(path)
    assert message.startswith(f"{path}: ")
    assert expected in message


def test_takt_stop_needs_shifts(tmp_path):
    path = _write(
        tmp_path,
        'site = "P"\n[[lines]]\nid = "L1"\nname = "Line"\nstop = { mode = "takt" }\n'
        '[[lines.stations]]\nid = "S1"\nname = "One"\nboard = "B1"\nprofile = "esp32-devkitc"\n',
    )
    assert f'{path}: lines[0]: stop mode "takt" needs at least one' in _error(path)


def test_missing_required_key(tmp_path):
    path = _example_with(tmp_path, 'supplier = "Box & Co"\n', "")
    assert f"{path}: kanban[2].supplier: Field required" in _error(path)


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ('post = "L1/S03"', 'post = "L1/S09"', "kanban[0].post: no station L1/S09"),
        ('post = "L2/S01"', 'post = "L3/S01"', "kanban[3].post: no station L3/S01"),
        ('post = "L1/S04"', 'post = "L1/S05"', "kanban[1].post: station L1/S05 has no 'post'"),
        ('receive = "L2/S04"', 'receive = "L1/S03"', "kanban[0].receive: station L1/S03 has no"),
        (
            'board = "3C71BF0A1133"',
            'board = "246F28A1B2C3"',
            "lines[1].stations[1].board: '246F28A1B2C3' is already used at lines[0]",
        ),
        ('id = "S02"', 'id = "S01"', "lines[0].stations[1].id: 'S01' is already used"),
        ('id = "L2"', 'id = "L1"', "lines[1].id: 'L1' is already used at lines[0].id"),
        ('part = "P-3300"', 'part = "P-1001"', "kanban[2].part: 'P-1001' is already used"),
        (
            '"04C1D2E3F40501"',
            '"04A1B2C3D4E581"',
            "kanban[2].cards: '04A1B2C3D4E581' is already used at kanban[0].cards",
        ),
        ('uid = "C3D4E5F6"', 'uid = "A1B2C3D4"', "badges[2].uid: 'A1B2C3D4' is already used"),
        ('uid = "C3D4E5F6"', 'uid = "04B7C8D9E0F102"', "badges[2].uid: '04B7C8D9E0F102' is also"),
        ('name = "mes"', 'name = "andon-board-display"', "api_tokens[1].name: 'andon-board"),
    ],
)
def test_cross_checks_name_the_key_that_disagrees(tmp_path, old, new, expected):
    path = _example_with(tmp_path, old, new)
    assert f"{path}: {expected}" in _error(path)


def test_every_cross_check_problem_is_reported_at_once(tmp_path):
    text = EXAMPLE.read_text().replace('post = "L1/S03"', 'post = "L9/S03"')
    path = _write(tmp_path, text.replace('uid = "C3D4E5F6"', 'uid = "A1B2C3D4"'))
    lines = _error(path).splitlines()
    assert len(lines) == 2
    assert all(line.startswith(f"{path}: ") for line in lines)


def test_not_toml_and_missing_file(tmp_path):
    bad = _write(tmp_path, 'site = "P"\n[[lines]\n')
    assert _error(bad).startswith(f"{bad}: not valid TOML: ")
    missing = tmp_path / "nope.toml"
    assert _error(missing).startswith(f"{missing}: cannot read: ")
