"""Hardware-in-loop tests: they run on a Raspberry Pi rig and skip elsewhere."""
