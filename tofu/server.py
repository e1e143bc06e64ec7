"""The HTTP layer: the app factory, request handlers and the response format.

request -> parse URL (``urls``) -> verify (``signing``) -> cache/origin/render (``service``)
-> respond (here). Errors are ``TofuError``s; their status comes from the class.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from email.utils import parsedate_to_datetime

from aiohttp import web

from tofu.cache import SizedMemo
from tofu.config import Config
from tofu.errors import Overloaded, TofuError, UriTooLong
from tofu.frontends import build_frontends
from tofu.health import OriginProbe, Readiness, status_text
from tofu.hints import ACCEPT_CH, ClientHints
from tofu.metrics import Metrics
from tofu.negotiate import Negotiator
from tofu.origins import Origin, open_origin
from tofu.peers import Peers
from tofu.render_budget import RenderBudget
from tofu.service import Entry, ImageService
from tofu.transform import Output
from tofu.urls import ParsedPath

# Errors are cached briefly by CDNs (a 404 may be uploaded soon); server errors never.
_ERROR_CACHE_CONTROL = {404: "public, max-age=60"}
_CLIENT_ERROR_CACHE_CONTROL = "public, max-age=300"
_VERIFIED_PATHS = 10_000
_VERIFIED_BYTES = 8 << 20
_VERIFIED_ENTRY_OVERHEAD = 400  # ParsedPath, Transform, Size and the dict slot, roughly
_METHODS = frozenset(("GET", "HEAD"))


@dataclass(slots=True)
class RequestLog:
    """What the access log says about a request beyond method, path, status and bytes."""

    cache: str = "-"
    key: str = "-"
    error: str | None = None
    phases: dict[str, float] | None = None


REQUEST_LOG = web.RequestKey("tofu_log", RequestLog)


class Handlers:
    def __init__(
        self,
        config: Config,
        service: ImageService,
        metrics: Metrics,
        readiness: Readiness,
        probe: OriginProbe,
        peers: Peers | None,
    ) -> None:
        self._service = service
        self._peers = peers
        self._metrics = metrics
        self._readiness = readiness
        self._probe = probe
        self._frontends = build_frontends(config)
        self._negotiator = Negotiator(config.negotiate)
        self._hints = ClientHints(
            client_hints=config.client_hints,
            save_data=config.save_data,
            max_side=config.max_output_side,
        )
        self._accept_ch = ACCEPT_CH if config.client_hints else None
        self._cache_control = f"public, max-age={config.max_age}, immutable"
        self._max_age = config.max_age
        self._requests: dict[tuple[int, str], Callable[[], None]] = {}
        self._max_path_length = config.max_path_length
        # Paths that parsed and passed the guard, so a hot URL skips parsing and the HMAC;
        # bounded in bytes too, as the paths come from clients.
        self._verified: SizedMemo[str, ParsedPath] = SizedMemo(
            _VERIFIED_PATHS, _VERIFIED_BYTES, _verified_size
        )

    def _count(self, request: web.BaseRequest, status: int, cache: str, seconds: float) -> None:
        inc = self._requests.get((status, cache))
        if inc is None:
            inc = self._requests[(status, cache)] = self._metrics.requests.labels(
                str(status), cache
            ).inc
        inc()
        self._metrics.request_seconds.observe(seconds)

    async def image(self, request: web.BaseRequest) -> web.StreamResponse:
        started = time.perf_counter()
        log = RequestLog()
        request[REQUEST_LOG] = log
        negotiated = None
        vary: tuple[str, ...] = ()
        try:
            raw_path = request.raw_path.partition("?")[0]
            if len(raw_path) > self._max_path_length:
                raise UriTooLong(f"path longer than {self._max_path_length} characters")
            parsed = self._verified.get(raw_path)
            if parsed is None:
                frontend = self._frontends.select(raw_path)
                parsed = frontend.parse(raw_path)
                log.key = parsed.transform.key
                parsed = frontend.verify(parsed)
                self._verified[raw_path] = parsed
            log.key = parsed.transform.key
            transform = parsed.transform
            # A document (info, thumbor meta) is JSON whatever the client accepts or hints.
            pixels = transform.size.output is Output.IMAGE
            if pixels and transform.size.format is None and self._negotiator.preference:
                vary = ("Accept",)
                negotiated = self._negotiator.choose(request.headers.get("Accept", ""))
            if pixels and self._hints.enabled:
                transform, hinted = self._hints.adapt(transform, parsed.adapt, request.headers)
                vary += hinted
            entry = self._service.cached(transform, negotiated)
            if entry is None:
                # The rendition as adapted to the client's hints: its owner renders exactly it.
                owner = None if self._peers is None else self._peers.route(transform, negotiated)
                entry, log.cache = await self._service.produce(transform, negotiated, owner)
                log.phases = entry.phases
            else:
                log.cache = "hit"
        except TofuError as exc:
            log.error = exc.reason
            self._count(request, exc.status, log.cache, time.perf_counter() - started)
            response = error_response(exc)
            # An error after Accept or a hint was read may be theirs (a 4x DPR over a limit).
            if vary and (vary_value := self._hints.vary(vary, None)):
                response.headers["Vary"] = vary_value
            return response
        response = self._respond(request, entry, vary, transform.size.operations.max_age)
        self._count(request, response.status, log.cache, time.perf_counter() - started)
        return response

    def _respond(
        self,
        request: web.BaseRequest,
        entry: Entry,
        vary: tuple[str, ...],
        max_age: int | None,
    ) -> web.Response:
        headers = {
            "Cache-Control": self._cache_control_for(max_age),
            "ETag": entry.etag,
        }
        if entry.last_modified_http is not None:
            headers["Last-Modified"] = entry.last_modified_http
        if vary and (vary_value := self._hints.vary(vary, entry.media_type)):
            headers["Vary"] = vary_value
        if self._accept_ch is not None:
            headers["Accept-CH"] = self._accept_ch
        if entry.quality is not None:
            headers["X-Image-Quality"] = str(entry.quality)
        if _not_modified(request, entry):
            return web.Response(status=304, headers=headers)
        headers["Content-Type"] = entry.media_type
        return web.Response(body=entry.body, headers=headers)

    def _cache_control_for(self, max_age: int | None) -> str:
        """``--max-age`` (immutable), or the shorter lifetime the URL asks for (thumbor's
        ``max_age`` filter), never longer than ``--max-age``: a rendition that expires is
        not immutable."""
        if max_age is None or max_age >= self._max_age:
            return self._cache_control
        return f"public, max-age={max_age}"

    async def healthz(self, request: web.BaseRequest) -> web.Response:
        return web.Response(text="ok\n", headers={"Cache-Control": "no-store"})

    async def readyz(self, request: web.BaseRequest) -> web.Response:
        problem = self._readiness.problem()
        if problem:
            return web.Response(
                status=503, text=problem + "\n", headers={"Cache-Control": "no-store"}
            )
        return web.Response(text="ready\n", headers={"Cache-Control": "no-store"})

    async def status(self, request: web.BaseRequest) -> web.Response:
        """For operators, on the ops port only: readiness and every origin source's state."""
        states = await self._probe.fresh_states()
        return web.Response(
            text=status_text(self._readiness, states), headers={"Cache-Control": "no-store"}
        )

    async def metrics(self, request: web.BaseRequest) -> web.Response:
        return web.Response(
            body=self._metrics.exposition(),
            headers={
                "Content-Type": "text/plain; version=0.0.4; charset=utf-8",
                "Cache-Control": "no-store",
            },
        )


def _verified_size(raw_path: str, parsed: ParsedPath) -> int:
    return (
        sys.getsizeof(raw_path)
        + sys.getsizeof(parsed.signed_path)
        + sys.getsizeof(parsed.transform.key)
        + _VERIFIED_ENTRY_OVERHEAD
    )


def _not_modified(request: web.BaseRequest, entry: Entry) -> bool:
    if_none_match = request.headers.get("If-None-Match")
    if if_none_match is not None:
        tags = [t.strip().removeprefix("W/") for t in if_none_match.split(",")]
        return "*" in tags or entry.etag in tags
    since = request.headers.get("If-Modified-Since")
    if since and since == entry.last_modified_http:
        return True
    if since and entry.last_modified is not None:
        try:
            return parsedate_to_datetime(since).timestamp() >= int(entry.last_modified)
        except (TypeError, ValueError):
            return False
    return False


def error_response(exc: TofuError) -> web.Response:
    """The one way errors leave tofu: plain text, the reason on one line."""
    status = exc.status
    if status >= 500:
        cache_control = "no-store"
    else:
        cache_control = _ERROR_CACHE_CONTROL.get(status, _CLIENT_ERROR_CACHE_CONTROL)
    headers = {"Cache-Control": cache_control}
    if isinstance(exc, Overloaded):
        headers["Retry-After"] = str(exc.retry_after)
    return web.Response(status=status, text=exc.reason + "\n", headers=headers)


async def _not_found(request: web.BaseRequest) -> web.Response:
    return web.Response(status=404, text="not found\n", headers={"Cache-Control": "no-store"})


class App:
    """tofu's HTTP application, built from one ``Config`` by ``create_app``.

    It is a low-level aiohttp handler (``web.Server``) with its own dispatch: three fixed paths
    and everything else to the image handler. aiohttp's ``web.Application`` router and signals
    cost about 15 µs a request, a fifth of the CPU of a cache hit, for exactly that.
    """

    def __init__(
        self,
        config: Config,
        origin: Origin | None = None,
        peers: Peers | None = None,
        budget: RenderBudget | None = None,
    ) -> None:
        self.metrics = Metrics()
        origin = origin or open_origin(config, self.metrics)
        self.service = ImageService(config, origin, self.metrics, budget)
        self.readiness = Readiness(self.service.stalled)
        self.origin_probe = OriginProbe(origin, self.metrics)
        self.peers = peers
        handlers = Handlers(
            config, self.service, self.metrics, self.readiness, self.origin_probe, peers
        )
        self.handlers = handlers
        self._fixed = {
            "/healthz": handlers.healthz,
            "/readyz": handlers.readyz,
            "/metrics": handlers.metrics,
        }
        # /status names internal endpoints: only on the ops address, never the public port.
        self._ops = {**self._fixed, "/status": handlers.status}
        if config.ops_address is not None:
            self._fixed["/metrics"] = _not_found  # served on the ops address only
        self._image = handlers.image

    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
        if request.method not in _METHODS:
            return web.Response(
                status=405,
                text="only GET and HEAD are served\n",
                headers={"Allow": "GET, HEAD", "Cache-Control": "no-store"},
            )
        path = request.raw_path.partition("?")[0]
        response = await self._fixed.get(path, self._image)(request)
        if self.readiness.draining:
            # End each keep-alive connection after its response: balancers then connect anew
            # (refused once the node stops) instead of reusing an idle connection that the
            # shutdown closes under a request already sent on it.
            response.force_close()
            response.headers["Connection"] = "close"
        return response

    async def handle_ops(self, request: web.BaseRequest) -> web.StreamResponse:
        """The operations endpoints alone, for ``--ops-listen``."""
        return await self._ops.get(request.path, _not_found)(request)

    async def close(self) -> None:
        if self.peers is not None:
            await self.peers.close()
        await self.service.close()


def create_app(
    config: Config,
    origin: Origin | None = None,
    peers: Peers | None = None,
    budget: RenderBudget | None = None,
) -> App:
    """The application for ``config``; ``origin`` overrides the configured one, ``peers``
    routes misses to sibling workers, ``budget`` is the node's shared render budget (default:
    this process's own). Serve it with ``web.Server(app.handle, ...)``; ``await app.close()``
    when done."""
    return App(config, origin, peers, budget)
