"""regfd: enforce a Regulation FD communications policy on outgoing email."""

__version__ = "0.1.0"
