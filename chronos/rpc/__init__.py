"""What both gRPC servers share: ``status`` turns a refusal into what a client sees,
``serving`` registers servicers and runs a server."""

from chronos.rpc.serving import InFlightLimit, add_servicer, parse_address, serve
from chronos.rpc.status import (
    ERROR_DOMAIN,
    STATUS_BY_REASON,
    abort,
    rejection_proto,
    rejection_status,
)

__all__ = [
    "ERROR_DOMAIN",
    "STATUS_BY_REASON",
    "InFlightLimit",
    "abort",
    "add_servicer",
    "parse_address",
    "rejection_proto",
    "rejection_status",
    "serve",
]
