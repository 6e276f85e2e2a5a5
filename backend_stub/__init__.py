"""The backend the TCU talks to: ingest, last values, PSAP, provisioning, measure scheduling."""
