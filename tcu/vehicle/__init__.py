"""The single in-memory picture of the vehicle, named after COVESA VSS."""
