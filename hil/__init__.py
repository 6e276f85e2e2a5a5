"""Hardware-in-the-loop bench: virtual serial devices, brokers, scenarios, fault injection."""
