"""`python -m hil.deploy`: print where the Raspberry Pi installer is, for `sudo bash "$(python3 -m hil.deploy)" ...`."""

from __future__ import annotations

import sys

from hil.deploy import INSTALL_SCRIPT

if __name__ == "__main__":
    if not INSTALL_SCRIPT.is_file():  # an install that left the package data out
        print(f"python -m hil.deploy: error: {INSTALL_SCRIPT} is missing from this installation", file=sys.stderr)
        sys.exit(2)
    print(INSTALL_SCRIPT)
