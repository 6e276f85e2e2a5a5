"""A throw-away CA and a server certificate for 127.0.0.1, for TLS tests (made by the bench's helper)."""

from hil.tls_files import make_tls_files

__all__ = ["make_tls_files"]
