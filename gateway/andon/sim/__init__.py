"""The virtual line: station boards running the real firmware in the MicroPython VM."""
