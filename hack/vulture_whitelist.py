"""Names vulture reports as unused that are used -- by something it cannot see.

`make lint` runs vulture over controller/, demo/, tests/ and bench/ with this file; anything
else it reports is dead code to delete. Each entry says who uses the name.
"""

# ruff: noqa: B018  (bare expressions are how vulture whitelists work)
from controller.admission import codec, metrics
from controller.model import crds, review

# Wire values of closed sets: they arrive in CRs and reviews, nothing names them in code.
crds.Operation.CONNECT
crds.Weekday.MON
crds.Weekday.TUE
crds.Weekday.WED
crds.Weekday.THU
crds.Weekday.FRI
crds.Weekday.SAT
crds.Weekday.SUN

# Fields of the AdmissionReview wire format: decoded (and so checked) with the rest, not read.
review.AdmissionRequest.request_kind
review.AdmissionRequest.request_resource
review.AdmissionRequest.request_sub_resource

# The bound budget.Limits is derived from (its docstring shows the arithmetic).
codec.MAX_PARSED_BYTES_PER_BODY_BYTE

# A keyword parameter of a Protocol's method (operator/kubeapi.py): the kubernetes client's
# name for it, passed by keyword, never read in our code.
field_selector  # type: ignore[name-defined]  # noqa: F821

# Called by prometheus_client's registry, not by us.
metrics._WorkCollector.describe

# Attributes set on objects other libraries read: logging's LogRecord (decisionlog's template),
# kopf's OperatorSettings (operator/run.py), the kubernetes client's Configuration (bench).
_.msecs  # type: ignore[name-defined]  # noqa: F821
_.threadName  # type: ignore[name-defined]  # noqa: F821
_.enabled  # type: ignore[name-defined]  # noqa: F821
_.server_timeout  # type: ignore[name-defined]  # noqa: F821
_.chunk_size  # type: ignore[name-defined]  # noqa: F821
_.idle_timeout  # type: ignore[name-defined]  # noqa: F821
_.connection_pool_maxsize  # type: ignore[name-defined]  # noqa: F821
