"""EU eCall (112): the MSD codec and the call state machine. Never depends on telematics services."""
