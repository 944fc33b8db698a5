"""The line calendar (andon.core.calendar, docs/calendar.md): weekdays, holidays, breaks that
freeze the takt grid and the plan, DST nights, takt from a period's demand, and the schema."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st

from andon.config import ConfigError, PlantConfig, load_plant
from andon.core.calendar import ShiftWindow, fixed_position_stop, next_window, window_at

BERLIN = ZoneInfo("Europe/Berlin")
EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "plant.toml"
MINUTE = 60_000
HOUR = 60 * MINUTE
TWO_BREAKS = [{"start": "09:30", "end": "09:45"}, {"start": "12:00", "end": "12:15"}]
EVERY_DAY = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
LATE_BREAK = {"start": "19:00", "end": "19:30"}


def plant(shifts: list[dict], plant_holidays: tuple[str, ...] = (), **line: object) -> PlantConfig:
    station = {"id": "S1", "name": "One", "board": "B1", "profile": "esp32-devkitc"}
    return PlantConfig.model_validate(
        {
            "site": "P",
            "timezone": "Europe/Berlin",
            "holidays": list(plant_holidays),
            "lines": [
                {"id": "L1", "name": "Line", "shifts": shifts, "stations": [station], **line}
            ],
        }
    )


def shift(start: str, end: str, **extra: object) -> dict:
    return {"name": "s", "start": start, "end": end, **extra}


def at(day: date, hour: int, minute: int = 0, fold: int = 0) -> int:
    """ms of a Berlin wall-clock time."""
    local = datetime(day.year, day.month, day.day, hour, minute, fold=fold, tzinfo=BERLIN)
    return round(local.timestamp() * 1000)


def window(config: PlantConfig, t: int) -> ShiftWindow | None:
    return window_at(config.lines[0], config.zone, t)


def cycle_ends(w: ShiftWindow) -> list[int]:
    """Every end of a takt cycle over the occurrence, walking the grid from its start."""
    t, ends = w.start, []
    while w.worked(t) < w.working_ms:
        t = w.cycle_end(t)
        ends.append(t)
    return ends


MONDAY = date(2026, 3, 2)


@settings(max_examples=200, deadline=None)
@given(day=st.integers(0, 55), minute=st.integers(0, 24 * 60 - 1))
def test_a_shift_runs_on_its_weekdays_only(day, minute):
    weekdays = plant([shift("06:00", "14:00", demand=480)])  # the default: Monday to Friday
    weekend = plant([shift("06:00", "14:00", days=["sat", "sun"], demand=480)])
    t = at(MONDAY + timedelta(days=day), minute // 60, minute % 60)
    in_hours = 6 * 60 <= minute < 14 * 60
    assert (window(weekdays, t) is not None) == (in_hours and day % 7 < 5)
    assert (window(weekend, t) is not None) == (in_hours and day % 7 >= 5)


def test_no_shift_starts_on_a_holiday_of_the_plant_or_the_line():
    night = shift("22:00", "06:00", days=EVERY_DAY, demand=480)
    config = plant([shift("06:00", "14:00", demand=480), night], plant_holidays=("2026-12-25",))
    christmas_eve, christmas = date(2026, 12, 24), date(2026, 12, 25)
    assert window(config, at(christmas_eve, 10)) is not None
    assert window(config, at(christmas, 10)) is None
    # the night shift that started on the 24th runs into the 25th; none starts on the 25th
    assert window(config, at(christmas, 5)).start == at(christmas_eve, 22)
    assert window(config, at(christmas, 23)) is None
    line_only = plant([shift("06:00", "14:00", demand=480)], holidays=["2026-12-24"])
    assert window(line_only, at(christmas_eve, 10)) is None
    assert window(line_only, at(christmas, 10)) is not None


@settings(max_examples=100, deadline=None)
@given(
    start=st.integers(0, 23),
    hours=st.integers(4, 12),
    cuts=st.lists(st.integers(1, 4 * 60 - 1), min_size=0, max_size=6, unique=True),
    demand=st.integers(1, 400),
    day=st.integers(0, 364),
)
@example(start=22, hours=8, cuts=[200, 230], demand=420, day=86)  # the spring-forward night
@example(start=22, hours=8, cuts=[200, 230], demand=420, day=296)  # the fall-back night
@example(start=0, hours=6, cuts=[120, 150], demand=300, day=87)  # a break the clocks skip
@example(start=2, hours=4, cuts=[], demand=240, day=87)  # a shift that starts in the gap
def test_breaks_freeze_the_takt_grid(start, hours, cuts, demand, day):
    """Over any shift with breaks (any day of a year, DST nights included), exactly `demand`
    cycles end, none inside a break, and the plan counts the cycles that have ended."""
    cuts = sorted(cuts)
    breaks = [
        {"start": _clock(start * 60 + a), "end": _clock(start * 60 + b)}
        for a, b in zip(cuts[::2], cuts[1::2], strict=False)
    ]
    pauses = sum(b - a for a, b in zip(cuts[::2], cuts[1::2], strict=False))
    assume(demand <= (hours * 60 - pauses) * 60)  # a takt of 1 s at least, as the schema wants
    span = (_clock(start * 60), _clock((start + hours) * 60))
    config = plant([shift(*span, breaks=breaks, days=EVERY_DAY, demand=demand)])
    w = window(config, at(date(2026, 1, 1) + timedelta(days=day), start, 0) + MINUTE // 2)
    ends = cycle_ends(w)
    assert len(ends) == demand == w.demand
    assert ends == sorted(ends) and ends[-1] <= w.end
    assert not any(b_start < t < b_end for t in ends for b_start, b_end in w.breaks)
    assert [w.plan(t) for t in ends] == list(range(1, demand + 1))
    assert all(w.plan(t - 1) == i for i, t in enumerate(ends))


def _clock(minutes: int) -> str:
    return f"{minutes // 60 % 24:02d}:{minutes % 60:02d}"


def test_a_break_holds_back_the_cycle_and_the_plan():
    config = plant([shift("07:00", "15:30", breaks=TWO_BREAKS, demand=240)])  # takt 120 s
    w = window(config, at(MONDAY, 8))
    assert (w.working_ms, w.takt_ms, w.demand) == (8 * HOUR, 120_000, 240)
    assert len(cycle_ends(w)) == 240  # a grid on the clock has 8.5 h / 120 s = 255 cycles
    # 2 h of working time by 09:00, one unit per takt: plan 60 (clock time would say 56)
    assert w.plan(at(MONDAY, 9)) == 60
    assert w.plan(at(MONDAY, 9, 40)) == w.plan(at(MONDAY, 9, 30)) == 75  # frozen in the break
    # a cycle that spans a break ends later by the break's length
    later = [{"start": "09:31", "end": "09:46"}, TWO_BREAKS[1]]
    spanning = plant([shift("07:00", "15:30", breaks=later, demand=240)])
    assert window(spanning, at(MONDAY, 9, 31)).cycle_end(at(MONDAY, 9, 30)) == at(MONDAY, 9, 47)


def test_a_pull_during_a_break_stops_the_line_at_the_end_of_the_cycle_after_it():
    config = plant([shift("07:00", "15:30", breaks=TWO_BREAKS, demand=240)])
    line = config.lines[0]
    assert fixed_position_stop(line, BERLIN, at(MONDAY, 9, 29)) == at(MONDAY, 9, 30)
    assert fixed_position_stop(line, BERLIN, at(MONDAY, 9, 35)) == at(MONDAY, 9, 47)


def test_outside_every_shift_the_stop_comes_one_takt_of_the_next_shift_later():
    mondays = shift("07:00", "15:30", breaks=TWO_BREAKS, days=["mon"], demand=240)
    config = plant([mondays], plant_holidays=("2026-03-09",))
    line, saturday = config.lines[0], at(date(2026, 3, 7), 12)
    upcoming = next_window(line, BERLIN, saturday)
    assert upcoming.start == at(date(2026, 3, 16), 7)  # the holiday Monday is skipped
    assert fixed_position_stop(line, BERLIN, saturday) == saturday + 120_000
    assert next_window(line, BERLIN, at(MONDAY, 7)).start == at(date(2026, 3, 16), 7)


@pytest.mark.parametrize(
    ("night", "hours", "inside"),
    [
        (date(2026, 3, 28), 7, (date(2026, 3, 29), 5, 30, 0)),  # spring forward at 02:00
        (date(2026, 10, 24), 9, (date(2026, 10, 25), 5, 30, 0)),  # fall back at 03:00
        (date(2026, 10, 24), 9, (date(2026, 10, 25), 2, 30, 1)),  # the second 02:30
    ],
)
def test_a_night_shift_on_the_nights_the_clocks_change(night, hours, inside):
    config = plant([shift("22:00", "06:00", days=EVERY_DAY, demand=420)])
    day, hour, minute, fold = inside
    w = window(config, at(day, hour, minute, fold))
    assert (w.start, w.end) == (at(night, 22), at(night + timedelta(days=1), 6))
    assert w.working_ms == hours * HOUR
    assert w.takt_ms == hours * HOUR // 420 and len(cycle_ends(w)) == 420
    assert window(config, at(night + timedelta(days=1), 6)) is None  # ends at 06:00, not 07:00


def test_takt_from_the_demand_of_a_week_or_a_day():
    """The textbook example: 1,920 working minutes a week for 960 units is 2 min per unit."""
    four_days = shift("07:00", "15:30", breaks=TWO_BREAKS, days=["mon", "tue", "wed", "thu"])
    weekly = plant([four_days], demand={"units": 960, "per": "week"})
    w = window(weekly, at(MONDAY, 8))
    assert (w.takt_ms, w.demand, w.plan(at(MONDAY, 9))) == (120_000, 240, 60)
    assert len(cycle_ends(w)) == 240
    # a holiday leaves three days, 1,440 min, for the same 960 units: 90 s
    short_week = plant([four_days], holidays=["2026-03-03"], demand={"units": 960, "per": "week"})
    assert window(short_week, at(MONDAY, 8)).takt_ms == 90_000
    late = {**four_days, "name": "late", "start": "16:00", "end": "00:30", "breaks": [LATE_BREAK]}
    daily = plant([four_days, late], demand={"units": 480, "per": "day"})
    assert window(daily, at(MONDAY, 20)).takt_ms == 120_000
    example = load_plant(EXAMPLE)
    w = window_at(example.line("L2"), example.zone, at(MONDAY, 8))
    assert (w.name, w.working_ms, w.takt_ms) == ("day", 8 * HOUR, 120_000)


def _error(tmp_path: Path, shift_toml: str, line_toml: str = "") -> str:
    path = tmp_path / "plant.toml"
    path.write_text(
        f'site = "P"\n[[lines]]\nid = "L1"\nname = "Line"\n{line_toml}\n'
        f'[[lines.shifts]]\nname = "day"\nstart = "07:00"\nend = "15:30"\n{shift_toml}\n'
        '[[lines.stations]]\nid = "S1"\nname = "One"\nboard = "B1"\nprofile = "esp32-devkitc"\n'
    )
    with pytest.raises(ConfigError) as exc:
        load_plant(path)
    message = str(exc.value)
    assert message.startswith(f"{path}: ")
    return message


@pytest.mark.parametrize(
    ("shift_toml", "line_toml", "expected"),
    [
        ('demand = 1\nbreaks = [{ start = "15:00", end = "16:00" }]', "",
         "lines[0].shifts[0]: breaks[0] 15:00-16:00 is not inside the shift 07:00-15:30"),
        ('demand = 1\nbreaks = [{ start = "09:00", end = "09:30" }, '
         '{ start = "09:15", end = "09:45" }]', "", "lines[0].shifts[0]: breaks[1] overlaps"),
        ('demand = 1\nbreaks = [{ start = "07:00", end = "15:30" }]', "", "no working time"),
        ('demand = 1\ndays = ["mon", "funday"]', "", "lines[0].shifts[0].days[1]: Input should"),
        ('demand = 1\ndays = ["mon", "mon"]', "", "lines[0].shifts[0].days: a day is listed twice"),
        ("demand = 1\navailable_s = 27000", "", "shifts[0].available_s: Extra inputs"),
        ("", "", "lines[0]: shifts[0] has no demand: set shifts[0].demand or demand"),
        ("demand = 1", 'demand = { units = 9, per = "week" }',
         "lines[0]: shifts[0].demand: the line's demand already covers it"),
        ("", 'demand = { units = 9, per = "month" }', "lines[0].demand.per: Input should be"),
        ("", 'demand = { units = 200000, per = "day" }', "demand.units 200000 leaves a takt under"),
        ("demand = 40000", "", "lines[0].shifts[0]: demand 40000 leaves a takt under 1 s"),
        ("demand = 1", 'holidays = ["2026-02-30"]', "lines[0].holidays[0]"),
    ],
)  # fmt: skip
def test_calendar_mistakes_name_the_key(tmp_path, shift_toml, line_toml, expected):
    assert expected in _error(tmp_path, shift_toml, line_toml)
