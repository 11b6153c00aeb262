"""`acmezone`: the operator command line over the issuer, registry and dns gRPC APIs."""
