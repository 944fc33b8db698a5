# A MicroPython image with the station firmware frozen into flash (docs/firmware-heap.md):
#   make -C ports/esp32 BOARD=ESP32_GENERIC FROZEN_MANIFEST=/path/to/andon/firmware/manifest.py
# Frozen modules run from flash: their code and names take none of the board's heap, where
# the same modules copied as .mpy files take about 36 KB of an ESP32's 56 KB.
# boot.py, main.py and config.json stay on the filesystem, as `andon flash` writes them.
include("$(PORT_DIR)/boards/manifest.py")  # the port's own: asyncio, neopixel, network ...

module("hal.py", base_path="lib")  # the real board's hal; virtual/ is never frozen
package("andon", base_path="lib")
