"""The Flemish learning account ("leerkrediet") as a message-driven service."""

__version__ = "0.1.0"
