"""acmezone clients: what runs on an operator's laptop or a web server, not inside a service.

`cli` is the `acmezone` operator command, and `devpebble` the local Pebble CA that `make run` and
the tests start. They talk to the services only through gRPC stubs and never import a service's
package (tests/clients/test_boundaries.py checks this).
"""
