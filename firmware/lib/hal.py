# The one module through which the firmware reaches hardware and the radio.
# A virtual board (tests, `andon sim`) puts virtual/hal.py ahead of this file on
# sys.path; both export the same names, so nothing else in the firmware changes.
import machine
import time

Pin = machine.Pin
ADC = machine.ADC
SPI = machine.SPI
WDT = machine.WDT

try:
    from neopixel import NeoPixel
except ImportError:  # a build without the neopixel module: GPIO towers only
    NeoPixel = None

_wlan = None


def unique_id():
    return machine.unique_id()


def chip():
    # "esp32" or "esp32s3" (os.uname().machine ends "with ESP32"), else None: the config check
    # then leaves the chip's own pin rules out.
    import os

    name = os.uname().machine.rsplit(" ", 1)[-1].lower()
    return name if name in ("esp32", "esp32s3") else None


def reset_cause():
    return machine.reset_cause()


def adc(pin):
    # 0..3.3 V full scale, read with read_u16() like the virtual board.
    a = ADC(Pin(pin))
    a.atten(ADC.ATTN_11DB)
    return a


def wifi_start(ssid, password):
    global _wlan
    import network

    _wlan = network.WLAN(network.STA_IF)
    _wlan.active(True)
    try:
        # Power save adds hundreds of milliseconds of latency to every message.
        _wlan.config(pm=network.WLAN.PM_NONE)
    except (AttributeError, ValueError):
        pass
    if not _wlan.isconnected():
        _wlan.connect(ssid, password)


def wifi_up():
    return _wlan is not None and _wlan.isconnected()


def rssi():
    try:
        return _wlan.status("rssi")
    except Exception:
        return None


def set_wall_ms(ms):
    # Set the RTC from Unix milliseconds (NTP's answer).
    t = time.gmtime(ms // 1000 - _EPOCH_OFFSET_S)
    machine.RTC().datetime((t[0], t[1], t[2], t[6], t[3], t[4], t[5], (ms % 1000) * 1000))


# Embedded ports count time from 2000, the unix port from 1970.
_EPOCH_OFFSET_S = 946684800 if time.gmtime(0)[0] == 2000 else 0


def wall_ms():
    # Milliseconds since the Unix epoch, or None while the clock is not set.
    ms = time.time_ns() // 1000000 + _EPOCH_OFFSET_S * 1000
    return ms if ms > 1700000000000 else None


def reset():
    machine.reset()
