"""acmezone dns: the authoritative DNS server for the ACME challenge zone.

It answers DNS-01 lookups from an in-memory zone built from the registry's record feed (plus
static records and zone files), over UDP and TCP, from pre-packed answers on the hot path.
"""
