"""acmezone issuer: ACME accounts, and certificates driven to ISSUED and kept there.

The composition root is `app.IssuerApp`; `reconciler` does the work, `servicer` only translates
between protobuf and the domain, and `storage` is the one place that touches the database.
"""
