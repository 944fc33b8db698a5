# The board's config.json (docs/board-config.md), checked before anything runs.
# Validation only: load() returns a plain dict with defaults filled, or raises
# ConfigError naming the key and the fault. Nothing here touches pins. What the chip
# itself refuses (a GPIO it lacks, an output on an input-only pin, the flash bus) is
# checked when the chip is known; what a module or a board takes (PSRAM, an on-board
# LED) is the gateway's hardware profiles' business.
# Needed only at boot: andon.startup drops this module before the runtime loads,
# to give its RAM back.
import json

ROLES = ("cord", "call_maintenance", "call_quality", "call_material", "ack", "cycle")
READER_ROLES = ("post", "receive", "badge")
SEGMENTS = ("red", "amber", "green", "blue", "white")
_NAME_CHARS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-"

REQUIRED = "required"  # a spec default meaning "must be present"


class ConfigError(ValueError):
    pass


def _fail(path, msg):
    raise ConfigError(path + ": " + msg)


def _key(path, key):
    return key if not path else path + "." + key


# -- value checkers: check(value, path) returns the normalized value or fails --


def _int(lo, hi):
    def check(v, path):
        if not isinstance(v, int) or v is True or v is False:
            _fail(path, "must be an integer")
        if v < lo or v > hi:
            _fail(path, "must be from %d to %d" % (lo, hi))
        return v

    return check


_PIN = _int(0, 48)
_LEVEL = _int(0, 1)


def _bool(v, path):
    if v is not True and v is not False:
        _fail(path, "must be true or false")
    return v


def _text(v, path):
    if not isinstance(v, str):
        _fail(path, "must be a string")
    return v


def _str(v, path):
    if not isinstance(v, str) or not v:
        _fail(path, "must be a non-empty string")
    return v


def _ipv4(v, path):
    # Boards take addresses, not names: getaddrinfo blocks the whole loop (the cord scan, the
    # watchdog) for as long as a DNS server takes to answer or not. andon provision resolves.
    parts = v.split(".") if isinstance(v, str) else ()
    if len(parts) != 4 or any(not p.isdigit() or len(p) > 3 or int(p) > 255 for p in parts):
        _fail(path, "must be an IPv4 address (a name lookup would block the board)")
    return v


def _endpoint(v, path):
    # "address" or "address:port"
    host, _, port = _str(v, path).partition(":")
    _ipv4(host, path)
    if port and (not port.isdigit() or not 0 < int(port) < 65536):
        _fail(path, "port must be from 1 to 65535")
    return v


def _name(v, path):
    if not isinstance(v, str) or not 0 < len(v) <= 32 or any(c not in _NAME_CHARS for c in v):
        _fail(path, "must be 1-32 characters of A-Z a-z 0-9 _ -")
    return v


def _one_of(choices):
    def check(v, path):
        if v not in choices:
            _fail(path, "must be one of " + ", ".join(choices))
        return v

    return check


def _obj(spec, rule=None):
    # spec: ((key, check, default), ...); default REQUIRED, None (absent) or a value.
    def check(v, path):
        if not isinstance(v, dict):
            _fail(path or "config", "must be an object")
        known = [f[0] for f in spec]
        for k in v:
            if k not in known:
                _fail(_key(path, k), "unknown key")
        out = {}
        for key, chk, default in spec:
            if key in v:
                out[key] = chk(v[key], _key(path, key))
            elif default is REQUIRED:
                _fail(_key(path, key), "missing")
            else:
                # A default runs through its checker: nested objects get their own defaults.
                out[key] = default if default is None else chk(default, _key(path, key))
        if rule:
            rule(out, path)
        return out

    return check


def _list(item):
    def check(v, path):
        if not isinstance(v, list):
            _fail(path, "must be a list")
        return [item(x, "%s[%d]" % (path, i)) for i, x in enumerate(v)]

    return check


# -- rules that tie keys of one object together --


def _input_rule(inp, path):
    if inp["adc"] is not None:
        if inp["pin"] is not None:
            _fail(path, "give either pin or adc, not both")
        if inp["supervised"] is not True:
            _fail(_key(path, "supervised"), "must be true for an adc input (end-of-line resistors)")
        for k in ("pull", "active"):
            if inp[k] is not None:
                _fail(_key(path, k), "not used by a supervised adc input")
        return
    for k in ("pin", "pull", "active"):
        if inp[k] is None:
            _fail(_key(path, k), "missing")
    if inp["supervised"]:
        _fail(_key(path, "supervised"), "needs an adc pin, not a digital pin")
    if inp["role"] == "cord":
        # Normally closed: an open circuit (pulled cord, cut wire) reads the pull level.
        if inp["pull"] == "none":
            _fail(path, "a cord must be fail-safe (normally closed): it needs pull up or down")
        fail_safe = 1 if inp["pull"] == "up" else 0
        if inp["active"] != fail_safe:
            _fail(
                path,
                "a cord must be fail-safe (normally closed): with pull %s its active level must be %d"
                % (inp["pull"], fail_safe),
            )


def _broker_rule(b, path):
    if b["port"] is None:
        b["port"] = 8883 if b["tls"] else 1883


def _light_rule(light, path):
    gpio = light["driver"] == "gpio"
    if gpio:
        needed, unused = ("segments",), ("pin", "order", "pixels_per_segment")
    else:
        needed, unused = ("pin",), ("segments",)
    for k in needed:
        if light[k] is None:
            _fail(_key(path, k), "missing (driver %s)" % light["driver"])
    for k in unused:
        if light[k] is not None:
            _fail(_key(path, k), "not used by driver %s" % light["driver"])
    if gpio:
        if not light["segments"]:
            _fail(_key(path, "segments"), "needs at least one segment")
        return
    order = light["order"]
    if order is None:
        light["order"] = list(SEGMENTS)
    elif not order or len(set(order)) != len(order):
        _fail(_key(path, "order"), "must list each segment once")
    if light["pixels_per_segment"] is None:
        light["pixels_per_segment"] = 1


_OUTPUT = _obj((("pin", _PIN, REQUIRED), ("active", _LEVEL, 1)))


def _segments(v, path):
    # An object of segment -> output; a tower may have fewer than five segments.
    if not isinstance(v, dict):
        _fail(path, "must be an object")
    out = {}
    for seg in v:
        if seg not in SEGMENTS:
            _fail(_key(path, seg), "unknown segment (one of " + ", ".join(SEGMENTS) + ")")
        out[seg] = _OUTPUT(v[seg], _key(path, seg))
    return out


_INPUT = _obj(
    (
        ("name", _name, REQUIRED),
        ("role", _one_of(ROLES), REQUIRED),
        ("pin", _PIN, None),
        ("adc", _PIN, None),
        ("supervised", _bool, False),
        ("pull", _one_of(("up", "down", "none")), None),
        ("active", _LEVEL, None),
        ("debounce_ms", _int(1, 1000), 20),
    ),
    _input_rule,
)

_READER = _obj(
    (
        ("name", _name, REQUIRED),
        ("role", _one_of(READER_ROLES), REQUIRED),
        ("cs", _PIN, REQUIRED),
        ("rst", _PIN, None),
        ("holdoff_ms", _int(0, 60000), 1500),
    )
)

# MicroPython's ESP32 and ESP32-S3 ports have hardware SPI(1) and SPI(2) only: SPI(0)
# belongs to the flash, and machine.SPI(0) raises.
_SPI = _obj(
    (
        ("id", _int(1, 2), REQUIRED),
        ("sck", _PIN, REQUIRED),
        ("mosi", _PIN, REQUIRED),
        ("miso", _PIN, REQUIRED),
        ("baudrate", _int(100000, 10000000), 1000000),
    )
)

_BROKER = _obj(
    (
        ("host", _ipv4, REQUIRED),
        ("server_name", _str, None),  # with tls: the name the broker's certificate carries
        ("port", _int(1, 65535), None),
        ("username", _str, None),
        ("password", _text, None),
        ("tls", _bool, False),
        ("keepalive", _int(5, 3600), 30),
    ),
    _broker_rule,
)

_LIGHT = _obj(
    (
        ("driver", _one_of(("gpio", "ws2812")), REQUIRED),
        ("segments", _segments, None),
        ("pin", _PIN, None),
        ("pixels_per_segment", _int(1, 64), None),
        ("order", _list(_one_of(SEGMENTS)), None),
        ("buzzer", _OUTPUT, None),
    ),
    _light_rule,
)

_CONFIG = _obj(
    (
        ("board", _name, None),
        ("profile", _str, None),
        ("site", _name, REQUIRED),
        ("line", _name, REQUIRED),
        ("station", _name, REQUIRED),
        ("wifi", _obj((("ssid", _str, REQUIRED), ("password", _text, ""))), None),
        ("broker", _BROKER, REQUIRED),
        ("ntp", _endpoint, None),  # none: the gateway dates events by their age
        ("inputs", _list(_INPUT), []),
        ("rfid", _obj((("spi", _SPI, REQUIRED), ("readers", _list(_READER), REQUIRED))), None),
        ("light", _LIGHT, REQUIRED),
        ("status_led", _PIN, None),
        ("outbox", _obj((("capacity", _int(10, 100000), 400),)), {}),
    )
)


def _unique_names(cfg):
    # Events name inputs and readers alike, so they share one namespace.
    seen = {}
    readers = cfg["rfid"]["readers"] if cfg["rfid"] else []
    for kind, items in (("inputs", cfg["inputs"]), ("rfid.readers", readers)):
        for i, item in enumerate(items):
            path = "%s[%d].name" % (kind, i)
            if item["name"] in seen:
                _fail(path, "%r is already the name of %s" % (item["name"], seen[item["name"]]))
            seen[item["name"]] = "%s[%d]" % (kind, i)


def _pins(cfg):
    # (path, pin) of every pin the config uses.
    for i, inp in enumerate(cfg["inputs"]):
        k = "pin" if inp["pin"] is not None else "adc"
        yield "inputs[%d].%s" % (i, k), inp[k]
    if cfg["rfid"]:
        for k in ("sck", "mosi", "miso"):
            yield "rfid.spi." + k, cfg["rfid"]["spi"][k]
        for i, r in enumerate(cfg["rfid"]["readers"]):
            yield "rfid.readers[%d].cs" % i, r["cs"]
            if r["rst"] is not None:
                yield "rfid.readers[%d].rst" % i, r["rst"]
    light = cfg["light"]
    if light["pin"] is not None:
        yield "light.pin", light["pin"]
    for seg, out in (light["segments"] or {}).items():
        yield "light.segments.%s.pin" % seg, out["pin"]
    if light["buzzer"]:
        yield "light.buzzer.pin", light["buzzer"]["pin"]
    if cfg["status_led"] is not None:
        yield "status_led", cfg["status_led"]


def _unique_pins(cfg):
    owner = {}
    for path, pin in _pins(cfg):
        was = owner.get(pin)
        # Readers may share one reset line; nothing else shares a pin.
        if was is not None and not (was.endswith(".rst") and path.endswith(".rst")):
            _fail(path, "pin %d is already used by %s" % (pin, was))
        owner[pin] = path


def _span(first, last):
    return set(range(first, last + 1))


# chip -> (its GPIOs, the input-only ones (no output, no pull resistor), the flash bus)
CHIPS = {
    "esp32": (_span(0, 19) | _span(21, 23) | _span(25, 27) | _span(32, 39), _span(34, 39),
              _span(6, 11)),
    "esp32s3": (_span(0, 21) | _span(26, 48), set(), _span(26, 32)),
}


def _is_output(path):
    return path.startswith("light.") or path == "status_led" or path.rsplit(".", 1)[-1] in (
        "cs", "rst", "sck", "mosi")


def _chip_pins(cfg, chip):
    gpios, input_only, flash = CHIPS[chip]
    for path, pin in _pins(cfg):
        if pin not in gpios:
            _fail(path, "GPIO%d does not exist on the %s" % (pin, chip))
        if pin in flash:
            _fail(path, "GPIO%d is wired to the module's flash" % pin)
        if pin not in input_only:
            continue
        if _is_output(path):
            _fail(path, "GPIO%d is input-only: it cannot drive an output" % pin)
    for i, inp in enumerate(cfg["inputs"]):
        if inp["pin"] in input_only and inp["pull"] != "none":
            _fail("inputs[%d].pull" % i,
                  "GPIO%d has no internal pull resistor: set none and fit one" % inp["pin"])


def _board_id():
    import binascii

    import hal

    return binascii.hexlify(hal.unique_id()).decode().upper()


def validate(raw, default_board=None, chip=None):
    # chip: "esp32" or "esp32s3" (hal.chip()) adds the chip's own pin rules
    cfg = _CONFIG(raw, "")
    _unique_names(cfg)
    _unique_pins(cfg)
    if chip in CHIPS:
        _chip_pins(cfg, chip)
    if cfg["broker"]["tls"] and cfg["ntp"] is None:
        # The RTC reads 2000 after power-on: no certificate is valid until NTP sets it.
        _fail("ntp", "missing: a TLS broker's certificate is checked against the clock")
    if cfg["board"] is None:
        cfg["board"] = default_board or _board_id()
    return cfg


def _read(path):
    try:
        with open(path) as f:
            text = f.read()
    except OSError:
        raise ConfigError(path + ": missing (cannot read the file)")
    try:
        return json.loads(text)
    except ValueError as e:
        raise ConfigError(path + ": not valid JSON (%s)" % e)


def load(path="config.json", default_board=None, chip=None):
    return validate(_read(path), default_board, chip)


def light_only(path="config.json"):
    # The tower alone, so a board whose config is refused can still show the
    # "config error" pattern; None when even the light cannot be trusted.
    try:
        raw = _read(path)
        return _LIGHT(raw["light"], "light")
    except (ConfigError, KeyError, TypeError):
        return None
