# Station firmware entry point: everything else is in lib/andon. Whatever the boot raises ends
# in andon.fault: the fault pattern on the tower, the error kept for the next birth, a reset.
from andon import fault


def boot():
    from andon import startup

    startup.main()


fault.guard(boot)
