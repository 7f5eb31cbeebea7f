"""plainsail: ship containerized APIs the boring way."""

__version__ = "0.1.0"
