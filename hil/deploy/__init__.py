"""The Raspberry Pi installer, shipped in the wheel: `python -m hil.deploy` prints the path of `install-pi.sh`.

The walkthrough is docs/raspberry-pi.md; tests/hil/test_pi_walkthrough.py follows it with `--root`.
"""

from __future__ import annotations

from pathlib import Path

INSTALL_SCRIPT = Path(__file__).with_name("install-pi.sh")
