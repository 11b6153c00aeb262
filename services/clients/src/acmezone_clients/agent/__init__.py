"""The delivery agent: keeps certificates installed as files on the host that presents them.

It watches each of its certificates over gRPC (`WatchCertificate`) and, whenever the issued serial
differs from the one it installed, exports the bundle, checks it (`bundle`), installs it as a
complete set swapped in one rename (`files`), and runs the reload hook (`hooks`). `watcher` is
that loop for one certificate, `app` the composition root, `config` the targets from flags or
TOML, and `metrics` what it exports to Prometheus.
"""
