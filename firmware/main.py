# Station firmware entry point: everything else is in lib/andon.
from andon import startup

startup.main()
