"""Online DNSSEC signing of the served zones (off unless a key directory is configured)."""
