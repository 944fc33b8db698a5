"""The gateway at run time: intake, storage, the network loop, notifiers and the HTTP API."""
