"""TCU simulator: the in-car telematics control unit and its SIM, modelled in Python."""

__version__ = "0.1.0"
