"""Virtual serial devices for the bench and CI: real protocols on pseudo-terminals, with faults.

`pty_device.PtyDevice` is the shared base (pty pair, stable symlink, unplug/replug, garbage and
truncation); each protocol has its simulator module (`elm327_sim`, ...).
"""
