# Runs before main.py on every boot. Nothing to do yet: lib/ is on sys.path by default.
