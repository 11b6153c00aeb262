"""Challenge solvers: DNS-01 through the registry's delegated names, HTTP-01 on our own port."""
