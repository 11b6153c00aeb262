"""The panel library: label selectors, PromQL builders and the panels several dashboards share.

Dashboards spell their queries with these so that one convention (summed rates over
`$__rate_interval`, quantiles summed by `le`, stat panels four rows high) is written once.
"""

from __future__ import annotations

from collections.abc import Sequence

from .grafana import Panel, Row

RATE = "$__rate_interval"
# Selectors: the overview filters on `$job` only, the per-service dashboards on `$instance` too.
J = 'job=~"$job"'
JI = 'job=~"$job", instance=~"$instance"'


def summed(
    metric: str,
    selector: str,
    *,
    by: Sequence[str] = (),
    window: str = RATE,
    function: str = "rate",
) -> str:
    """`sum [by (...)] (rate(metric{selector}[window]))`; `function` may be `increase`."""
    inner = f"{function}({metric}{{{selector}}}[{window}])"
    return f"sum by ({', '.join(by)}) ({inner})" if by else f"sum({inner})"


def quantile(
    q: float, bucket: str, selector: str, *, by: Sequence[str] = (), window: str = RATE
) -> str:
    """The q-quantile of a histogram's `_bucket` series, summed by `le` (and `by`)."""
    labels = ", ".join((*by, "le"))
    return f"histogram_quantile({q}, sum by ({labels}) (rate({bucket}{{{selector}}}[{window}])))"


def quantiles(
    bucket: str,
    selector: str,
    qs: Sequence[float],
    *,
    by: Sequence[str] = (),
    window: str = RATE,
) -> list[tuple[str, str]]:
    """One target per quantile, legends `p50`, `p99` (followed by the `by` labels)."""
    labels = "".join(f" {{{{{label}}}}}" for label in by)
    return [
        (quantile(q, bucket, selector, by=by, window=window), f"p{round(q * 100)}{labels}")
        for q in qs
    ]


def stat(
    title: str,
    expr: str,
    legend: str,
    *,
    width: int,
    unit: str = "short",
    thresholds: list[tuple[float | None, str]] | None = None,
    description: str = "",
) -> Panel:
    """A single-value panel, four rows high, showing the query's latest value."""
    return Panel(
        title,
        [(expr, legend)],
        kind="stat",
        unit=unit,
        width=width,
        height=4,
        instant=True,
        thresholds=thresholds or [],
        description=description,
    )


def rate_by(
    title: str,
    metric: str,
    selector: str,
    by: Sequence[str],
    *,
    unit: str,
    width: int,
    stack: bool = False,
    description: str = "",
) -> Panel:
    """A counter's rate summed by `by`, one line per label set (legend: the labels' values)."""
    legend = " ".join(f"{{{{{label}}}}}" for label in by)
    return Panel(
        title,
        [(summed(metric, selector, by=by), legend)],
        unit=unit,
        width=width,
        stack=stack,
        description=description,
    )


# A count that must not drop to zero (services up, pods fed, watchers): red at 0.
AT_LEAST_ONE: list[tuple[float | None, str]] = [(None, "red"), (1, "green")]
# Time left until a timestamp gauge: red under three days, orange under fourteen.
EXPIRY_THRESHOLDS: list[tuple[float | None, str]] = [
    (None, "red"),
    (3 * 86400, "orange"),
    (14 * 86400, "green"),
]


def per_instance(
    title: str, gauge: str, selector: str, *, width: int, unit: str = "short"
) -> Panel:
    """A gauge as it is, one line per pod (legend: the instance)."""
    return Panel(title, [(f"{gauge}{{{selector}}}", "{{instance}}")], unit=unit, width=width)


def certificates_by_state(selector: str) -> Panel:
    """The issuer's certificates, one bar per state."""
    return Panel(
        "Certificates by state",
        [(f"max by (state) (acmezone_issuer_certificates{{{selector}}})", "{{state}}")],
        kind="bargauge",
        width=8,
    )


def issuance_rates(title: str, selector: str, *, width: int) -> Panel:
    """Issuance attempts per second, and failures by reason."""
    return Panel(
        title,
        [
            (summed("acmezone_issuer_issuance_attempts_total", selector), "attempts"),
            (
                summed("acmezone_issuer_issuance_failures_total", selector, by=("reason",)),
                "failed: {{reason}}",
            ),
        ],
        unit="ops",
        width=width,
    )


def grpc_row(selector: str) -> Row:
    """The standard gRPC server panels every service shares."""
    return Row(
        "gRPC API",
        [
            rate_by(
                "RPCs by method and code",
                "grpc_server_handled_total",
                selector,
                ("grpc_method", "grpc_code"),
                unit="reqps",
                width=12,
            ),
            Panel(
                "Unary RPC latency p99 by method",
                [
                    (
                        quantile(
                            0.99,
                            "grpc_server_handling_seconds_bucket",
                            f'{selector}, grpc_type="unary"',
                            by=("grpc_method",),
                        ),
                        "{{grpc_method}}",
                    )
                ],
                unit="s",
                width=12,
            ),
        ],
    )
