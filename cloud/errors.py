"""HTTP errors as ``{"error": {"code", "message"}}``: a proper 4xx for bad input, a 503 with
``Retry-After`` when a dependency (the database, Redis) or the password workers cannot serve
right now; never a traceback.  Every refusal is counted in ``/metrics``."""

from __future__ import annotations

import logging
from typing import Any

from litestar import MediaType, Request, Response
from litestar.exceptions import (
    HTTPException,
    InternalServerException,
    NotAuthorizedException,
    NotFoundException,
    ValidationException,
)
from litestar.status_codes import HTTP_500_INTERNAL_SERVER_ERROR, HTTP_503_SERVICE_UNAVAILABLE

from cloud.faults import failed_dependency
from cloud.passwords import PasswordBusy

log = logging.getLogger(__name__)

#: What Litestar raises (a 500) when the client hangs up before its request body has arrived.
CLIENT_GONE = "client disconnected prematurely"


class ApiError(HTTPException):
    """An error the API answers on purpose: status, machine-readable code, words for people."""

    def __init__(
        self,
        status_code: int,
        code: str,
        message: str,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(detail=message, status_code=status_code, headers=headers)
        self.code = code


def error_body(code: str, message: str) -> dict[str, dict[str, str]]:
    return {"error": {"code": code, "message": message}}


_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "too_large",
    503: "unavailable",
    415: "unsupported_media_type",
    422: "invalid_input",
    429: "rate_limited",
}


def _validation_message(exc: ValidationException) -> str:
    extra = exc.extra
    if isinstance(extra, list) and extra:
        first = extra[0]
        if isinstance(first, dict):
            where = first.get("key") or first.get("source") or "body"
            return f"{where}: {first.get('message', 'invalid value')}"
    return str(exc.detail or "invalid input")


def _count(request: Request[Any, Any, Any], status: int, code: str) -> None:
    services = getattr(request.app.state, "services", None)
    if services is not None:
        services.metrics.http_refusals.labels(str(status), code).inc()


def handle_http_exception(request: Request[Any, Any, Any], exc: HTTPException) -> Response[object]:
    status = exc.status_code
    if isinstance(exc, ApiError):
        code, message = exc.code, str(exc.detail)
    elif isinstance(exc, ValidationException):
        # Litestar says 400 for a body or parameter of the wrong shape: that is a 422.
        status, code, message = 422, "invalid_input", _validation_message(exc)
    elif status == 400:
        # Litestar's other 400s come from decoding the body.
        code, message = "invalid_json", f"the request body is not valid JSON ({exc.detail})"
    elif status == 413:
        code, message = "too_large", "the request body is too large"
    elif isinstance(exc, NotAuthorizedException):
        code, message = "unauthorized", str(exc.detail or "sign in first")
    elif isinstance(exc, NotFoundException):
        code, message = "not_found", "no such resource"
    elif isinstance(exc, InternalServerException) and exc.detail == CLIENT_GONE:
        # Nobody reads this answer; counted as what it is, not as a failure of ours (a slow
        # body cut off by MUMU_HTTP_BODY_TIMEOUT ends here too).
        status, code, message = 499, "client_disconnected", "the request body never ended"
    else:
        code = _CODES.get(status, "error")
        message = str(exc.detail or code.replace("_", " "))
    if status >= 500 and not isinstance(exc, ApiError):
        code, message = "internal", "the server failed; try again"
    _count(request, status, code)
    return Response(
        error_body(code, message),
        status_code=status,
        media_type=MediaType.JSON,
        headers=dict(exc.headers or {}),
    )


def handle_unexpected(request: Request[Any, Any, Any], exc: Exception) -> Response[object]:
    if isinstance(exc, PasswordBusy):
        return _unavailable(
            request,
            "busy",
            "too many passwords are being checked right now",
            exc.retry_after_s,
        )
    dependency = failed_dependency(exc)
    if dependency is not None:
        services = getattr(request.app.state, "services", None)
        if services is not None:
            services.metrics.unavailable.labels(dependency).inc()
        retry = services.settings.retry_after_s if services is not None else 5
        log.warning(
            "%s %s: the %s is unavailable (%s: %s)",
            request.method,
            request.url.path,
            dependency.replace("_", " "),
            type(exc).__name__,
            str(exc).splitlines()[0][:200] if str(exc) else "",
        )
        return _unavailable(request, "unavailable", "the service is briefly unavailable", retry)
    log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    _count(request, 500, "internal")
    return Response(
        error_body("internal", "the server failed; try again"),
        status_code=HTTP_500_INTERNAL_SERVER_ERROR,
        media_type=MediaType.JSON,
    )


def _unavailable(
    request: Request[Any, Any, Any], code: str, message: str, retry_after_s: int
) -> Response[object]:
    _count(request, 503, code)
    return Response(
        error_body(code, message),
        status_code=HTTP_503_SERVICE_UNAVAILABLE,
        media_type=MediaType.JSON,
        headers={"Retry-After": str(retry_after_s)},
    )
