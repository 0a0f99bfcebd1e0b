"""What an operator sees on a terminal: the live fleet table (rich)."""
