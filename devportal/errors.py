"""REST errors of the devportal, with the real codes and HTTP statuses of Bitrix24."""
from __future__ import annotations


class RestError(Exception):
    """An error answered as `{"error": code, "error_description": ...}` with no `time`."""

    def __init__(self, code: str, description: str, status: int = 400, **extra):
        super().__init__(f"{code}: {description}")
        self.code = code
        self.description = description
        self.status = status
        self.extra = extra

    def body(self) -> dict:
        return {"error": self.code, "error_description": self.description, **self.extra}


def legacy_crm_error(description: str) -> RestError:
    """crm.contact/company/deal/lead.* answer with an empty code and the text only."""
    return RestError("", description, 400)


def not_found() -> RestError:
    return legacy_crm_error("Not found")


def method_not_found() -> RestError:
    return RestError("ERROR_METHOD_NOT_FOUND", "Method not found!", 404)


def access_denied(text: str = "Access denied!") -> RestError:
    return RestError("ACCESS_DENIED", text, 403)


def argument_error(text: str, argument: str) -> RestError:
    return RestError("ERROR_ARGUMENT", text, 400, argument=argument)


# The faults set_faults() can inject, with the HTTP status the docs give each
# (_includes/system-errors.md; PAYMENT_REQUIRED is CRestServer::STATUS_PAYMENT_REQUIRED, 402, in
# settings/cloud-and-on-premise/on-premise/custom-methods.md).
FAULT_STATUS = {"QUERY_LIMIT_EXCEEDED": 503, "INTERNAL_SERVER_ERROR": 500, "OVERLOAD_LIMIT": 503,
                "PAYMENT_REQUIRED": 402, "ACCESS_DENIED": 403, "NOT_FOUND": 400,
                "OPERATION_TIME_LIMIT": 429}
_FAULT_TEXT = {"QUERY_LIMIT_EXCEEDED": "Too many requests", "INTERNAL_SERVER_ERROR": "Internal server error",
               "OVERLOAD_LIMIT": "REST API is blocked due to overload", "PAYMENT_REQUIRED": "Payment required",
               "ACCESS_DENIED": "Access denied", "NOT_FOUND": "Not found",
               "OPERATION_TIME_LIMIT": "Method is blocked due to operation time limit."}


def fault(code: str) -> RestError:
    return RestError(code, _FAULT_TEXT[code], FAULT_STATUS[code])
