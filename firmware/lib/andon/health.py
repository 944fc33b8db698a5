# The watchdog is fed only while every watched task shows it is alive: a task that
# dies or hangs stops the feeding for good, and the chip resets itself.
import asyncio


class Health:
    def __init__(self, wdt, probes, period_ms=1000, window=3):
        # probes: name -> function returning a counter the task advances as it works
        self.wdt = wdt
        self.probes = probes
        self.period_ms = period_ms
        self.window = window
        self.seen = {}
        self.starved = None  # the task that stopped the feeding

    def check(self):
        for name, probe in self.probes.items():
            n = probe()
            if n == self.seen.get(name):
                self.starved = name
                return False
            self.seen[name] = n
        return True

    async def run(self):
        # Each task must make progress at least once per `window` periods.
        self.check()
        tick = 0
        while self.starved is None:
            self.wdt.feed()
            await asyncio.sleep_ms(self.period_ms)
            tick += 1
            if tick % self.window == 0 and not self.check():
                print("watchdog: task %s stopped; feeding ends" % self.starved)
