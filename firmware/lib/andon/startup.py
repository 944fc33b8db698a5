# Start-up in two phases that never share the heap: validate config.json with nothing of
# the runtime loaded, forget the validator, and only then load the runtime (andon.app).
# The validator is the largest module; loaded beside the runtime it set the boot's peak.
import gc
import sys

import hal

error_light = None  # the light section of a config that failed validation, if usable


def load_config(path="config.json"):
    # The validated config, or None after a config error: the console says why, and
    # error_light is what the tower can still show it with.
    global error_light
    from andon import config

    try:
        return config.load(path, default_board="".join("%02X" % b for b in hal.unique_id()),
                           chip=hal.chip())
    except config.ConfigError as e:
        print("CONFIG ERROR:", e)
        error_light = config.light_only(path)
        return None
    finally:
        del sys.modules["andon.config"]
        import andon

        del andon.config
        gc.collect()


def main():
    cfg = load_config()
    from andon import app

    app.main(cfg, error_light)
