"""AdmissionReview ``admission.k8s.io/v1``: the request the API server sends, the response we send.

Parsing is strict about what a decision needs (uid, operation, resource, userInfo) and lenient
about the rest, so a malformed review is rejected (HTTP 400 at the edge) rather than guessed at.
Only the wire names count: the request models do not read their Python field names.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec
from pydantic import BaseModel, ConfigDict
from pydantic.alias_generators import to_camel


class _In(msgspec.Struct, rename="camel", kw_only=True, frozen=True):
    """What the API server sends: read by wire (camelCase) names only, unknown keys ignored.

    msgspec structs rather than pydantic models: the admission server decodes every review
    body straight into these (``codec.parse_review``), schema-checked in one pass over the
    bytes -- the only parser a review byte meets -- at a fraction of pydantic's cost.

    A Python field name in a review (``sub_resource``, ``old_object``) is just an unknown key,
    ignored like any field a later Kubernetes adds. Accepting it too let a review posted
    straight to /validate call itself a status update (never gated) or supply the
    ``oldObject`` that makes an UPDATE look like a bookkeeping no-op.
    """


class GroupVersionKind(_In, kw_only=True, frozen=True):
    group: str = ""
    version: str
    kind: str


class GroupVersionResource(_In, kw_only=True, frozen=True):
    group: str = ""
    version: str
    resource: str


class UserInfo(_In, kw_only=True, frozen=True):
    username: str = ""
    uid: str | None = None
    groups: list[str] = msgspec.field(default_factory=list)
    extra: dict[str, list[str]] = msgspec.field(default_factory=dict)


class AdmissionRequest(_In, kw_only=True, frozen=True):
    uid: Annotated[str, msgspec.Meta(min_length=1)]
    kind: GroupVersionKind
    resource: GroupVersionResource
    sub_resource: str = ""
    request_kind: GroupVersionKind | None = None
    request_resource: GroupVersionResource | None = None
    request_sub_resource: str | None = None
    name: str = ""
    namespace: str = ""
    operation: Literal["CREATE", "UPDATE", "DELETE", "CONNECT"]
    user_info: UserInfo
    object: dict[str, Any] | None = None
    old_object: dict[str, Any] | None = None
    dry_run: bool = False
    options: dict[str, Any] | None = None


class AdmissionReview(_In, kw_only=True, frozen=True):
    api_version: Literal["admission.k8s.io/v1"]
    kind: Literal["AdmissionReview"]
    request: AdmissionRequest


class Status(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True)
    code: int
    message: str
    reason: str | None = None


class AdmissionResponse(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True)
    uid: str
    allowed: bool
    status: Status | None = None
    warnings: list[str] | None = None
    audit_annotations: dict[str, str] | None = None


class AdmissionReviewResponse(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True)
    api_version: Literal["admission.k8s.io/v1"] = "admission.k8s.io/v1"
    kind: Literal["AdmissionReview"] = "AdmissionReview"
    response: AdmissionResponse

    def to_wire(self) -> dict[str, Any]:
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")
