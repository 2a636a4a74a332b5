"""Every error a client can see: an HTTP status and a stable code, mapped to JSON in one place (app.py).

Clients get `{"error": {"code": "...", "message": "..."}}` (`error_body`) and never a stack trace.
"""


def error_body(code: str, message: str) -> dict:
    """The one JSON shape of every error, from the app's handlers and from the HTTP server's own refusals."""
    return {"error": {"code": code, "message": message}}


def shorten(text: str, limit: int) -> str:
    """`text` cut to `limit` characters: what a client sent, or a decoder said, echoed in an error."""
    return text if len(text) <= limit else text[:limit] + "..."


class ServiceError(Exception):
    """Base class: `status_code` and `code` are fixed per subclass; `message` is for humans."""

    status_code = 500
    code = "internal_error"

    def __init__(self, message: str, *, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.message = message
        self.headers = headers or {}

    def __str__(self) -> str:
        return self.message  # which may be amended on the way out (e.g. prefixed with the image's name)


class InvalidImage(ServiceError):
    """The bytes are a supported format but cannot be decoded (truncated, corrupt, empty)."""

    status_code = 400
    code = "invalid_image"


class BadRequest(ServiceError):
    """A malformed body: bad base64, broken multipart, no images."""

    status_code = 400
    code = "bad_request"


class ModelNotFound(ServiceError):
    status_code = 404
    code = "model_not_found"


class ModelLoadFailed(ServiceError):
    """A load asked for through the repository API failed; what served before serves on."""

    status_code = 400
    code = "model_load_failed"


class ModelControlDisabled(ServiceError):
    """Loading and unloading over the network is off unless SERVE_MODEL_CONTROL=explicit."""

    status_code = 403
    code = "model_control_disabled"


class Unauthorized(ServiceError):
    """SERVE_REPOSITORY_TOKEN is set and the request did not carry it."""

    status_code = 401
    code = "unauthorized"

    def __init__(self, message: str):
        super().__init__(message, headers={"WWW-Authenticate": "Bearer"})


class RequestTooLarge(ServiceError):
    status_code = 413
    code = "request_too_large"


class ImageTooLarge(ServiceError):
    """width * height over the limit, found from the header before any pixel is decoded."""

    status_code = 413
    code = "image_too_large"


class AspectRatioTooLarge(ServiceError):
    """The long side over `max_aspect_ratio` times the short side, found from the header."""

    status_code = 413
    code = "aspect_ratio_too_large"


class TooManyImages(ServiceError):
    status_code = 413
    code = "too_many_images"


class UnsupportedMediaType(ServiceError):
    status_code = 415
    code = "unsupported_media_type"


class InvalidArgument(ServiceError):
    status_code = 422
    code = "invalid_argument"


class QueueFull(ServiceError):
    """The model's queue is at max_queue_size; retry after the time the queue needs to drain."""

    status_code = 429
    code = "queue_full"

    def __init__(self, message: str, *, retry_after: int):
        super().__init__(message, headers={"Retry-After": str(retry_after)})
        self.retry_after = retry_after


class ObjectiveUnreachable(ServiceError):
    """The model's queue is predicted to answer this request after its latency objective (or its deadline):
    refused before decoding, with Retry-After from the same prediction."""

    status_code = 429
    code = "objective_unreachable"

    def __init__(self, message: str, *, retry_after: int):
        super().__init__(message, headers={"Retry-After": str(retry_after)})
        self.retry_after = retry_after


class DecoderBusy(ServiceError):
    """The decode pool's backlog is full: the request is refused before any of its images is decoded."""

    status_code = 429
    code = "decode_busy"

    def __init__(self, message: str, *, retry_after: int = 1):
        super().__init__(message, headers={"Retry-After": str(retry_after)})


class ModelNotReady(ServiceError):
    """The model is loading, failed to load, or the service is shutting down."""

    status_code = 503
    code = "model_not_ready"


class DeadlineExceeded(ServiceError):
    status_code = 504
    code = "deadline_exceeded"


class ClientClosedRequest(ServiceError):
    """The client went away before its answer was ready (nginx's 499): its queued work is cancelled, and
    the answer is never sent. Counted apart, not as a server error."""

    status_code = 499
    code = "client_closed_request"


class InferenceFailed(ServiceError):
    """The engine raised or returned outputs that do not match the inputs."""

    status_code = 500
    code = "inference_failed"


def to_wire(error: ServiceError) -> tuple[int, str, str, dict[str, str]]:
    """What crosses from the engine process to a front end: enough to answer exactly as in one process."""
    return error.status_code, error.code, error.message, error.headers


def from_wire(status_code: int, code: str, message: str, headers: dict[str, str]) -> ServiceError:
    error = ServiceError(message, headers=headers)
    error.status_code, error.code = status_code, code
    return error
