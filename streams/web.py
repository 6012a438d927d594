"""The worker's web pages: ``/health``, ``/metrics`` (Prometheus) and ``/dashboard``.

Enabled with ``STREAMRANK_WEB_ENABLED=true`` (port ``STREAMRANK_WEB_PORT``). Everything shown
comes from Redis, so any worker's dashboard shows the whole deployment:

- ``/dashboard`` is one self-contained page (no CDN: it must work on an air-gapped network)
  that polls ``/dashboard/data`` every two seconds and draws, per shadow, the interleaving
  preference over sessions with its 95 % band, the primary's latency histogram, and the
  live learning curve (click-through rate of closed sessions per minute);
- ``/metrics`` has the same numbers as Prometheus text, and the candidates each vector tier
  left unscored for want of a stored document vector
  (``streamrank_vectors_missing_total{tier="dense"}``: an ingestion gap to fix, not overload);
- ``/health`` answers 200 with the serving version while Redis answers, 503 otherwise.

The pages listen on ``STREAMRANK_WEB_HOST`` (127.0.0.1 unless set: Faust's own default is
every interface). With ``STREAMRANK_WEB_TOKEN`` set, ``/dashboard``, its data and ``/metrics``
answer 401 unless the request presents the token, as ``Authorization: Bearer <token>``
(Prometheus's ``authorization`` / ``bearer_token`` settings, curl) or as the password of
HTTP Basic authentication (what a browser asks for on the 401, user name ignored: a token in
the page's URL would end up in browser history and proxy logs). ``/health`` stays open for
load balancers' and orchestrators' probes; it tells only the serving version. The dashboard
writes every text from the data (shadow names, verdicts) as text, never as HTML.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import functools
import hmac
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import faust
import redis
from faust.web import Request, Response, View

from streamrank.models.registry import PointerError
from streamrank.shadow.report import summarize
from streamrank.streams.config import Settings
from streamrank.streams.state.connections import registry_for, shadow_stats_for
from streamrank.streams.state.service_metrics import ServiceMetrics

VECTOR_TIERS = ("dense", "colbert")
"""Tiers ``streamrank_vectors_missing_total`` always has a series for (0 until one misses)."""

# What a 401 offers: Basic makes a browser ask for the token (as the password); Bearer is
# for programs.
CHALLENGE = 'Basic realm="streamrank", charset="UTF-8", Bearer realm="streamrank"'


def presented_token(authorization: str | None) -> str | None:
    """The token in an ``Authorization`` header: a Bearer token or a Basic password.

    >>> presented_token("Bearer s3cret"), presented_token("Basic " + "dTpzM2NyZXQ=")
    ('s3cret', 's3cret')
    >>> presented_token("Basic not-base64!") is None, presented_token(None) is None
    (True, True)
    """
    scheme, _, credentials = (authorization or "").strip().partition(" ")
    if scheme.lower() == "bearer":
        return credentials.strip()
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(credentials.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    return decoded.partition(":")[2]


def authorized(authorization: str | None, token: str) -> bool:
    """Whether a request may see the protected pages: no token configured, or it presents it.

    The comparison takes the same time wherever the strings differ, so timing tells nothing.
    """
    if not token:
        return True
    presented = presented_token(authorization)
    return presented is not None and hmac.compare_digest(presented.encode(), token.encode())


def label_value(value: object) -> str:
    r"""A Prometheus label value: backslash, double quote and newline escaped.

    >>> print(label_value('v"2\n'))
    v\"2\n
    """
    return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


@functools.cache
def dashboard_page() -> str:
    """The dashboard's HTML, read from the package once, when first served."""
    return (Path(__file__).parent / "dashboard.html").read_text()


def preference_series(outcomes: Sequence[int], points: int = 60) -> list[dict[str, float]]:
    """Delta after n sessions with a normal-approximation 95 % band, at up to ``points`` n.

    Outcomes are +1 (shadow won), -1, 0; Delta = mean(outcome) / 2.

    >>> preference_series([1, 1, -1, 0], points=2)[-1]["delta"]
    0.125
    """
    series, total, squares = [], 0.0, 0.0
    step = max(1, math.ceil(len(outcomes) / points))
    for n, outcome in enumerate(outcomes, start=1):
        total += outcome
        squares += outcome * outcome
        if n % step == 0 or n == len(outcomes):
            mean = total / n
            spread = 1.96 * math.sqrt(max(squares / n - mean * mean, 0.0) / n)
            series.append(
                {
                    "sessions": n,
                    "delta": mean / 2,
                    "low": (mean - spread) / 2,
                    "high": (mean + spread) / 2,
                }
            )
    return series


def dashboard_data(settings: Settings, client: redis.Redis) -> dict[str, Any]:
    """Everything the dashboard and ``/metrics`` show, read from Redis now."""
    metrics = ServiceMetrics(client, settings)
    data: dict[str, Any] = {"primary": metrics.snapshot(), "learning": metrics.ctr_by_minute()}
    data["active"], data["shadows"] = None, []
    if settings.registry_key:
        registry = registry_for(settings, client)
        try:
            pointers = registry.pointers()
        except PointerError as error:  # forged or replayed: show it, do not fail the page
            data["pointer_error"] = str(error)
            return data
        data["active"] = pointers.active if pointers else None
        for version in pointers.shadows if pointers else ():
            snapshot = shadow_stats_for(settings, client, version).snapshot()
            summary = summarize(snapshot, settings.promotion_min_sessions, settings.promotion_alpha)
            summary["series"] = preference_series(snapshot.interleaving)
            data["shadows"].append(summary)
    return data


def prometheus_text(data: dict[str, Any]) -> str:
    """The dashboard's numbers in the Prometheus text exposition format."""
    primary = data["primary"]
    lines = [
        "# HELP streamrank_rankings_total Rankings published.",
        "# TYPE streamrank_rankings_total counter",
        f"streamrank_rankings_total {primary['rankings']}",
        "# HELP streamrank_rankings_degraded_total Rankings cut short by the latency budget.",
        "# TYPE streamrank_rankings_degraded_total counter",
        f"streamrank_rankings_degraded_total {primary['degraded']}",
        "# HELP streamrank_ranking_latency_ms Time to rank one request.",
        "# TYPE streamrank_ranking_latency_ms histogram",
    ]
    for bound, count in primary["latency_buckets"].items():
        lines.append(f'streamrank_ranking_latency_ms_bucket{{le="{bound}"}} {count}')
    lines += [
        f"streamrank_ranking_latency_ms_sum {primary['latency_sum_ms']}",
        f"streamrank_ranking_latency_ms_count {primary['rankings']}",
        "# HELP streamrank_vectors_missing_total Candidates a vector tier left unscored: "
        "no stored document vector (ingestion gap).",
        "# TYPE streamrank_vectors_missing_total counter",
    ]
    missing = primary.get("vectors_missing", {})
    for tier in sorted(set(VECTOR_TIERS) | set(missing)):
        count = missing.get(tier, 0)
        lines.append(f'streamrank_vectors_missing_total{{tier="{label_value(tier)}"}} {count}')
    if data.get("active"):
        lines += [
            "# HELP streamrank_active_version_info The registry's active version.",
            "# TYPE streamrank_active_version_info gauge",
            f'streamrank_active_version_info{{version="{label_value(data["active"])}"}} 1',
        ]
    gauges = {
        "sessions": "Interleaved sessions of the shadow.",
        "delta": "Interleaving preference for the shadow (> 0: users prefer it).",
        "sequential_p": "Always-valid p-value of the preference.",
        "kendall_tau": "Mean Kendall tau between primary and shadow top 10.",
        "rbo": "Mean rank-biased overlap (p = 0.9) between primary and shadow.",
    }
    for name, help_text in gauges.items():
        lines += [
            f"# HELP streamrank_shadow_{name} {help_text}",
            f"# TYPE streamrank_shadow_{name} gauge",
        ]
        for shadow in data["shadows"]:
            value = shadow.get(name)
            if value is not None:
                version = label_value(shadow["version"])
                lines.append(f'streamrank_shadow_{name}{{version="{version}"}} {value}')
    return "\n".join(lines) + "\n"


def mount(app: faust.App, settings: Settings, client: redis.Redis, serving: Any) -> None:
    """Add the pages to ``app``; ``serving()`` names the version this worker serves."""

    def refusal(view: View, request: Request) -> Response | None:
        """None when the request may see a protected page, else the 401 to answer with."""
        if authorized(request.headers.get("Authorization"), settings.web_token):
            return None
        headers = {"WWW-Authenticate": CHALLENGE}
        return view.text("this page needs STREAMRANK_WEB_TOKEN\n", status=401, headers=headers)

    @app.page("/health")
    class Health(View):
        async def get(self, request: Request) -> Response:
            try:
                await asyncio.to_thread(client.ping)
            except redis.RedisError as error:
                return self.json({"status": "redis unreachable", "error": str(error)}, status=503)
            return self.json({"status": "ok", "serving": serving()})

    @app.page("/metrics")
    class Metrics(View):
        async def get(self, request: Request) -> Response:
            if (refused := refusal(self, request)) is not None:
                return refused
            text = prometheus_text(await asyncio.to_thread(dashboard_data, settings, client))
            return self.text(text, content_type="text/plain; version=0.0.4")

    @app.page("/dashboard")
    class Dashboard(View):
        async def get(self, request: Request) -> Response:
            if (refused := refusal(self, request)) is not None:
                return refused
            return self.html(dashboard_page())

    @app.page("/dashboard/data")
    class DashboardData(View):
        async def get(self, request: Request) -> Response:
            if (refused := refusal(self, request)) is not None:
                return refused
            data = await asyncio.to_thread(dashboard_data, settings, client)
            return self.json(data | {"serving": serving()})
