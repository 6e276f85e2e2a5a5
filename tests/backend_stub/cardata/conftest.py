"""Fixtures of the CarData tests."""

from tests.backend_stub.cardata.streaming_world import world  # noqa: F401 - the streaming and push tests' fixture
