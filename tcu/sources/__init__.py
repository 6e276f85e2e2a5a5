"""Vehicle signal sources: one module per device protocol, each a sans-I/O codec plus a thin async reader."""
