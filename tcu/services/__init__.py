"""Provisioning files, service catalogue and terms, SIM state, remote measures, privacy settings."""
