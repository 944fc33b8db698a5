# A virtual station board: the real firmware (andon.app) on the virtual bench, driven from
# outside through JSON lines on a loopback control port (gateway/andon/sim/board.py).
# Its flash is the working directory; `vboard.json` there says how to set the bench up.
# It is started as `import vboard` after the launcher noted VM_BASE, the heap the VM itself
# takes (andon.sim.board): see reserve().
import asyncio
import gc
import json
import time

import hal
from vdevices import bench

inputs = None  # andon.inputs, imported in main() with the firmware: its heap is the firmware's
ballast = None  # heap the firmware may not use (reserve)
BALLAST_CHUNK = 1024
hardware_heap = 0  # heap the virtual hardware took before the firmware started (reserve)

SEGMENTS_AND_BUZZER = ("red", "amber", "green", "blue", "white", "buzzer")
SETTLE_MS = 5000  # far beyond any debounce: only a board that stopped scanning takes longer


class Control:
    def __init__(self, app, station, cfg):
        self.app = app
        self.station = station  # None after a config error
        cfg = cfg or {"inputs": [], "rfid": None}
        self.inputs = {i["name"]: i for i in cfg["inputs"]}
        self.chips = {}  # reader name -> chip model
        self.marks = {}  # segment -> time_ns it was first lit after op "mark", or None
        tower = station.tower if station else None
        if tower is not None:
            show = tower.show

            def watched(modes):  # note when a marked segment lights, as the app decides it
                show(modes)
                for seg in self.marks:
                    if self.marks[seg] is None and modes.get(seg, "off") != "off":
                        self.marks[seg] = time.time_ns()

            tower.show = watched
        self.placed = {}  # reader name -> the uid lying on it
        self.levels = {}  # input name -> the level last driven (True = active)
        rfid = cfg.get("rfid")
        self.cfg_readers = rfid["readers"] if rfid else []
        if rfid:
            from mfrc522_model import MFRC522

            for r in rfid["readers"]:
                self.chips[r["name"]] = chip = MFRC522()
                bench.attach(r["cs"], chip)

    def _input(self, name, active):
        i = self.inputs[name]
        self.levels[name] = active
        if i["adc"] is not None:
            bench.set_adc(i["adc"], inputs.PULLED_FROM + 4000 if active else inputs.PULLED_FROM // 2)
        else:
            bench.drive(i["pin"], i["active"] if active else 1 - i["active"])

    async def _settled(self, name, state):
        # Return once the firmware's debounce has taken the input to `state` (andon.inputs).
        # A driver that waits for this instead of sleeping a debounce time cannot outrun a
        # board the machine schedules late.
        inp = [i for i in self.station.inputs._inputs if i.name == name][0]
        deadline = time.ticks_add(time.ticks_ms(), SETTLE_MS)
        while inp.stable != state:
            if time.ticks_diff(deadline, time.ticks_ms()) < 0:
                raise RuntimeError("input %s did not settle within %d ms" % (name, SETTLE_MS))
            await asyncio.sleep_ms(2)

    async def op_input(self, m):
        self._input(m["name"], m["active"])
        at = time.time_ns()  # the pin edge, on the wall clock every board shares
        if m.get("settle"):
            await self._settled(m["name"], inputs.ACTIVE if m["active"] else inputs.NORMAL)
        return {"at": at}

    async def op_wire(self, m):
        # A supervised input's cable "cut" or "short", or "mend" (the cord's level again),
        # held until the firmware's debounce took it.
        name, fault = m["name"], m["fault"]
        adc = self.inputs[name]["adc"]
        if adc is None:
            raise ValueError("%s is not a supervised input" % name)
        if fault == "mend":
            self._input(name, self.levels.get(name, False))
            state = inputs.ACTIVE if self.levels.get(name) else inputs.NORMAL
        elif fault in ("cut", "short"):
            bench.set_adc(adc, 65535 if fault == "cut" else inputs.SHORT_BELOW // 4)
            state = inputs.OPEN if fault == "cut" else inputs.SHORT
        else:
            raise ValueError("fault is cut, short or mend, not %r" % fault)
        await self._settled(name, state)

    async def op_mark(self, m):
        # From now on, note when `segment` is first lit (bench/e2e.py: no polling skew).
        self.marks[m["segment"]] = None

    async def op_marked(self, m):
        return {"at": self.marks.get(m["segment"])}

    async def op_press(self, m):
        self._input(m["name"], True)
        await asyncio.sleep_ms(m.get("hold_ms", 60))
        await self._settled(m["name"], inputs.ACTIVE)  # held until the board has taken it
        self._input(m["name"], False)
        await self._settled(m["name"], inputs.NORMAL)

    async def op_adc(self, m):
        bench.set_adc(m["pin"], m["value"])

    async def op_tag(self, m):
        await self.op_untag(m)
        uid = bytes.fromhex(m["uid"])
        self.chips[m["reader"]].place(uid)
        self.placed[m["reader"]] = uid

    async def op_untag(self, m):
        uid = self.placed.pop(m["reader"], None)
        if uid is not None:
            self.chips[m["reader"]].remove(uid)

    async def op_pin(self, m):
        # An output's level and how often it changed, with the light task's refresh count.
        pin = m["pin"]
        return {"level": bench.output(pin), "toggles": bench.toggles.get(pin, 0),
                "refreshes": self.station.refreshes if self.station else None}

    async def op_reader(self, m):
        # A reader's hardware fails: "unplug" (the bus floats high), "stuck" (MISO stuck at
        # 10h), or "mend": plugged back in, it starts from its reset state.
        name, fault = m["name"], m["fault"]
        chip = self.chips[name]
        cs = [r["cs"] for r in self.cfg_readers if r["name"] == name][0]
        if fault == "unplug":
            del bench.spi_devices[cs]
        elif fault == "stuck":
            chip.stuck_miso = 0x10
        elif fault == "mend":
            chip.stuck_miso = None
            chip.soft_reset()
            bench.attach(cs, chip)
        else:
            raise ValueError("fault is unplug, stuck or mend, not %r" % fault)

    async def op_wifi(self, m):
        bench.set_wifi(m["up"])

    async def op_reset_button(self, m):
        # the board's EN button: machine.reset() as the firmware's own fault handler does
        hal.reset()

    async def op_lamps(self, m):
        tower = self.station.tower if self.station else self.app.error_tower
        return {"lamps": dict(tower.modes) if tower else {}}

    async def op_status(self, m):
        s = self.station
        if s is None:
            return {"config_error": True}
        o = s.outbox
        gc.collect()
        # each cord's boot report made: what a test drives next comes after it
        reported = all(i.stable != inputs.UNKNOWN for i in s.inputs._inputs)
        return {"board": s.board, "boot": s.boot, "link": s.link.state, "outbox": o.depth,
                "inputs_reported": reported,
                "base": o.base, "next_seq": o.next_seq, "resends": s.uplink.resends,
                "reconnects": s.link.reconnects,
                "heap_peak": bench.heap_peak, "heap_live": gc.mem_alloc(),
                "heap_free": gc.mem_free()}

    async def op_hardware_us(self, m):
        # Time spent in the virtual hardware so far, and the calls timed, modulo 2**30
        # (vdevices.HARDWARE_US_MASK).
        return {"us": bench.hardware_us, "calls": bench.hardware_calls}

    async def op_heap_sampling_off(self, m):
        # The heap's peak, sampled at pin accesses, is no subject of the bench's CPU figures,
        # and sampling it walks the heap: the harness's share, which they take apart, halves.
        bench.sample_heap_often = _no_sample

    async def op_wakes(self, m):
        # The loop's timed waits (sleep_ms, wait_for_ms: each one a wake) a second over m["ms"],
        # and the RFID readers' polls: what an idle board's CPU goes to. They are counted for
        # that window only, so that the counting costs nothing to the CPU the bench times.
        sleep_ms, wait_for_ms = asyncio.sleep_ms, asyncio.wait_for_ms
        waits = [0]

        def counted(wait):
            def counting(*args):
                waits[0] += 1
                return wait(*args)

            return counting

        readers = self.station.readers.all if self.station.readers else []
        polls = sum(r.polls for r in readers)
        t = time.ticks_ms()
        asyncio.sleep_ms, asyncio.wait_for_ms = counted(sleep_ms), counted(wait_for_ms)
        try:
            await sleep_ms(m["ms"])
        finally:
            asyncio.sleep_ms, asyncio.wait_for_ms = sleep_ms, wait_for_ms
        s = time.ticks_diff(time.ticks_ms(), t) / 1000
        return {"per_s": waits[0] / s, "rfid_polls_per_s": (sum(r.polls for r in readers) - polls) / s}

    async def op_heap(self, m):
        # The heap's shares (reserve()): the firmware's live heap is the rest of heap_live.
        return {"reserved": len(ballast or ()) * BALLAST_CHUNK, "hardware": hardware_heap}

    async def serve(self, reader, writer):
        while True:
            line = await reader.readline()
            if not line:
                break
            try:
                m = json.loads(line)
                reply = await getattr(self, "op_" + m["op"])(m) or {}
            except Exception as e:  # a bad request must not stop the board
                reply = {"error": "%s: %s" % (type(e).__name__, e)}
            writer.write(json.dumps(reply).encode() + b"\n")
            await writer.drain()
        writer.close()


def _no_sample():
    pass


def reserve(firmware_heap):
    # Leave the firmware `firmware_heap` bytes, as a chip's heap: the VM's own start and
    # asyncio count in it; the virtual hardware (this module, hal, the chip models, the
    # control port), which a chip has in silicon, is on top. The rest is held in chunks
    # (ballast), so that what the hardware takes later can be handed back (give_back).
    global ballast, hardware_heap
    import __main__

    gc.collect()
    hardware_heap = gc.mem_alloc() - __main__.VM_BASE
    bench.pin_heap = 0  # from now on, the Pin objects the firmware makes (give_back)
    ballast = []
    spare = gc.mem_free() - (firmware_heap - __main__.VM_BASE) - 64 * 4  # and the list's own
    while spare >= BALLAST_CHUNK:
        ballast.append(bytearray(BALLAST_CHUNK - 16))  # 16: the allocation's rounding, at most
        spare -= BALLAST_CHUNK


def give_back(since):
    # The hardware took heap after reserve(): the control port and chip models since `since`,
    # and the Pin objects the firmware made. Free as much ballast, to the nearest chunk.
    global hardware_heap
    gc.collect()
    taken = gc.mem_alloc() - since + bench.pin_heap
    hardware_heap += taken
    while taken > BALLAST_CHUNK // 2 and ballast:
        ballast.pop()
        taken -= BALLAST_CHUNK
    gc.collect()


async def main():
    global inputs
    with open("vboard.json") as f:
        spec = json.load(f)
    bench.uid = bytes.fromhex(spec["uid"])
    bench.wifi_started = True  # a virtual board's radio needs no credentials
    bench.wifi_link = spec.get("wifi", True)
    bench.clock_set = spec.get("clock", True)
    import mfrc522_model  # the readers' chips exist before the firmware boots

    if spec.get("firmware_heap"):
        reserve(spec["firmware_heap"])
    from andon import inputs, startup

    cfg = startup.load_config()
    from andon import app  # as on a board: the runtime loads once the validator is gone

    station = app.start(cfg) if cfg else None
    gc.collect()
    before = gc.mem_alloc()
    ctl = Control(app, station, cfg)
    for name, active in spec.get("inputs", {}).items():
        ctl._input(name, active)  # levels wired at power-up, before the first scan
    await asyncio.start_server(ctl.serve, "127.0.0.1", spec["control_port"])
    if ballast:
        give_back(before)
    del cfg  # only the parts Station and Control took stay in the heap
    print("vboard: control port", spec["control_port"])
    if station is None:
        await app.config_error_forever(startup.error_light)
    else:
        await station.run(hal.WDT(timeout=8000))


from andon import fault  # noqa: E402  (as main.py: whatever the boot raises ends there)

fault.guard(lambda: asyncio.run(main()))
