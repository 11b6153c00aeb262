"""What every acmezone service needs: settings, logging, gRPC bootstrap, metrics and errors.

The registry, dns and issuer services build on this package instead of keeping three copies of
the same plumbing; nothing here knows about any one service's domain.
"""
