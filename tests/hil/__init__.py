"""Hardware-in-loop tests: scenarios on the virtual rig (default, runs anywhere) or on a
Raspberry Pi rig (--rig pi, skipped elsewhere); docs/HIL.md."""
