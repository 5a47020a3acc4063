"""pydantic models of changegate's CRDs (``changegate.io/v1alpha1``).

These are the wire formats: camelCase on the wire, snake_case in Python. Shape checks that
need a library (IANA zones, cron syntax, durations, clock times) happen here, so every bad
field is reported by pydantic with its location (``spec.schedule.timeZone``) and nothing
below this layer ever sees an invalid value.

``crds/*.yaml`` hold the OpenAPI schemas the API server enforces; a test keeps the two in
agreement (tests/unit/model/test_crd_models_agree.py).
"""

from __future__ import annotations

import datetime
import enum
import re
import sys
import zoneinfo
from collections.abc import Hashable, ItemsView
from typing import Annotated, Any, Final, Generic, Literal, TypeVar

import croniter
import holidays
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel

GROUP = "changegate.io"
VERSION = "v1alpha1"
API_VERSION: Final = "changegate.io/v1alpha1"


class _Wire(BaseModel):
    """Base: camelCase aliases, unknown fields rejected, immutable values."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        frozen=True,
    )


# -- scalar types ------------------------------------------------------------------------------

_DURATION_RE = re.compile(r"^(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$")


def parse_duration(value: Any) -> datetime.timedelta:
    """``90m``, ``2h``, ``1h30m``, ``1d``, ``45s`` -> timedelta (strictly positive)."""
    if isinstance(value, datetime.timedelta):
        td = value
    elif isinstance(value, str):
        m = _DURATION_RE.match(value.strip())
        if not value.strip() or not m or not any(m.groups()):
            raise ValueError(f"invalid duration {value!r}: use forms like 30m, 2h, 1h30m, 1d")
        d, h, mi, s = (int(g) if g else 0 for g in m.groups())
        td = datetime.timedelta(days=d, hours=h, minutes=mi, seconds=s)
    else:
        raise ValueError(f"invalid duration {value!r}: expected a string like 2h")
    if td <= datetime.timedelta(0):
        raise ValueError("duration must be positive")
    return td


def format_duration(td: datetime.timedelta) -> str:
    total = int(td.total_seconds())
    out = ""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        n, total = divmod(total, size)
        if n:
            out += f"{n}{unit}"
    return out or "0s"


def rfc3339(t: datetime.datetime) -> str:
    """The one way changegate writes an instant: UTC, whole seconds, ``Z``
    (``2026-12-01T13:00:00Z``) -- in approvals, emergency schedules, Events, status and what
    trackers sign."""
    return t.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _check_zone(value: str) -> str:
    try:
        zoneinfo.ZoneInfo(value)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, TypeError) as e:
        raise ValueError(f"unknown time zone {value!r}: use an IANA name like Asia/Seoul") from e
    return value


# croniter extensions that make a schedule move on every parse (R = random, H = hashed):
# a window must open at the same instants on every replica and after every restart.
_CRON_NONDETERMINISTIC = re.compile(r"(?:^|[\s,/-])[RH](?:\(|$|[\s,/-])")


def _check_cron(value: str) -> str:
    if len(value.split()) != 5 or not croniter.croniter.is_valid(value):
        raise ValueError(
            f"invalid cron {value!r}: use 5 fields (minute hour day-of-month month day-of-week)"
        )
    if _CRON_NONDETERMINISTIC.search(value):
        raise ValueError(
            f"invalid cron {value!r}: random (R) and hashed (H) fields are not allowed"
        )
    return value


def _parse_clock(value: Any) -> datetime.time:
    if isinstance(value, datetime.time):
        return value
    if isinstance(value, str) and re.fullmatch(r"\d{2}:\d{2}", value):
        h, m = int(value[:2]), int(value[3:])
        if h == 24 and m == 0:
            raise ValueError("use 00:00 for midnight (an end <= start runs past midnight)")
        if h < 24 and m < 60:
            return datetime.time(h, m)
    raise ValueError(f"invalid time {value!r}: use HH:MM, 00:00-23:59")


def _check_regex(value: str) -> str:
    try:
        re.compile(value)
    except re.error as e:
        raise ValueError(f"invalid regular expression: {e}") from e
    return value


Duration = Annotated[
    datetime.timedelta,
    BeforeValidator(parse_duration),
    PlainSerializer(format_duration, return_type=str),
]
TimeZone = Annotated[str, AfterValidator(_check_zone)]
Cron = Annotated[str, AfterValidator(_check_cron)]
ClockTime = Annotated[
    datetime.time,
    BeforeValidator(_parse_clock),
    PlainSerializer(lambda t: t.strftime("%H:%M"), return_type=str),
]
Regex = Annotated[str, AfterValidator(_check_regex)]
#: Names (of namespaces, policies, identities, users, groups, resources): interned, because
#: thousands of windows repeat the same few hundred -- a replica holding 10,000 windows kept
#: a copy of each per window (~5 KB a window where approvals list their policies).
NonEmptyStr = Annotated[str, Field(min_length=1), AfterValidator(sys.intern)]


class Enforcement(enum.StrEnum):
    ENFORCE = "Enforce"
    WARN = "Warn"
    AUDIT = "Audit"


class Operation(enum.StrEnum):
    CREATE = "CREATE"
    UPDATE = "UPDATE"
    DELETE = "DELETE"
    CONNECT = "CONNECT"
    ALL = "*"


class Weekday(enum.StrEnum):
    MON = "Mon"
    TUE = "Tue"
    WED = "Wed"
    THU = "Thu"
    FRI = "Fri"
    SAT = "Sat"
    SUN = "Sun"

    @property
    def index(self) -> int:  # type: ignore[override]  # shadows str.index on purpose
        """Monday = 0, as ``datetime.weekday()``."""
        return list(Weekday).index(self)


class Phase(enum.StrEnum):
    PENDING_APPROVAL = "PendingApproval"
    SCHEDULED = "Scheduled"
    ACTIVE = "Active"
    EXPIRED = "Expired"
    INVALID = "Invalid"
    REVIEW_REQUIRED = "ReviewRequired"


# -- shared building blocks ----------------------------------------------------------------------


class Subject(_Wire):
    kind: Literal["User", "Group", "ServiceAccount"]
    name: NonEmptyStr
    namespace: str | None = None

    @model_validator(mode="after")
    def _namespace_for_service_accounts(self) -> Subject:
        if self.kind == "ServiceAccount" and not self.namespace:
            raise ValueError("namespace is required for kind ServiceAccount")
        if self.kind != "ServiceAccount" and self.namespace:
            raise ValueError(f"namespace is only allowed for kind ServiceAccount, not {self.kind}")
        return self


class LabelSelectorRequirement(_Wire):
    key: NonEmptyStr
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist"]
    values: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _values_match_operator(self) -> LabelSelectorRequirement:
        if self.operator in ("In", "NotIn") and not self.values:
            raise ValueError(f"values must be non-empty for operator {self.operator}")
        if self.operator in ("Exists", "DoesNotExist") and self.values:
            raise ValueError(f"values must be empty for operator {self.operator}")
        return self


class LabelSelector(_Wire):
    match_labels: dict[str, str] = Field(default_factory=dict)
    match_expressions: list[LabelSelectorRequirement] = Field(default_factory=list)


class ResourceRule(_Wire):
    """Like an RBAC/webhook rule. Subresources are named explicitly: ``deployments/scale``."""

    api_groups: list[Annotated[str, AfterValidator(sys.intern)]] = Field(min_length=1)
    resources: list[NonEmptyStr] = Field(min_length=1)
    operations: list[Operation] = Field(min_length=1)


class OneOffSchedule(_Wire):
    start: AwareDatetime
    end: AwareDatetime

    @model_validator(mode="after")
    def _end_after_start(self) -> OneOffSchedule:
        if self.end <= self.start:
            raise ValueError("end must be after start")
        return self


class RecurringSchedule(_Wire):
    cron: Cron
    duration: Duration
    time_zone: TimeZone
    not_before: AwareDatetime | None = None
    not_after: AwareDatetime | None = None

    @model_validator(mode="after")
    def _bounds_ordered(self) -> RecurringSchedule:
        if self.not_before and self.not_after and self.not_after <= self.not_before:
            raise ValueError("notAfter must be after notBefore")
        return self


class Schedule(_Wire):
    """Exactly one form: one-off (``start``/``end``) or recurring (``cron``...)."""

    start: AwareDatetime | None = None
    end: AwareDatetime | None = None
    cron: Cron | None = None
    duration: Duration | None = None
    time_zone: TimeZone | None = None
    not_before: AwareDatetime | None = None
    not_after: AwareDatetime | None = None

    @model_validator(mode="after")
    def _exactly_one_form(self) -> Schedule:
        one_off = self.start is not None or self.end is not None
        recurring = any(
            v is not None
            for v in (self.cron, self.duration, self.time_zone, self.not_before, self.not_after)
        )
        if one_off and recurring:
            raise ValueError("use either start/end or cron/duration/timeZone, not both")
        if not one_off and not recurring:
            raise ValueError("give start and end, or cron, duration and timeZone")
        if one_off:
            if self.start is None or self.end is None:
                raise ValueError("a one-off schedule needs both start and end")
            OneOffSchedule(start=self.start, end=self.end)
        else:
            missing = [
                n
                for n, v in (
                    ("cron", self.cron),
                    ("duration", self.duration),
                    ("timeZone", self.time_zone),
                )
                if v is None
            ]
            if missing:
                raise ValueError(f"a recurring schedule needs {', '.join(missing)}")
            if self.not_before and self.not_after and self.not_after <= self.not_before:
                raise ValueError("notAfter must be after notBefore")
        return self

    @property
    def one_off(self) -> OneOffSchedule | None:
        if self.start is not None and self.end is not None:
            return OneOffSchedule(start=self.start, end=self.end)
        return None

    @property
    def recurring(self) -> RecurringSchedule | None:
        if self.cron is not None and self.duration is not None and self.time_zone is not None:
            return RecurringSchedule(
                cron=self.cron,
                duration=self.duration,
                time_zone=self.time_zone,
                not_before=self.not_before,
                not_after=self.not_after,
            )
        return None


class Condition(_Wire):
    type: str
    status: Literal["True", "False", "Unknown"]
    reason: str = ""
    message: str = ""
    last_transition_time: AwareDatetime | None = None
    observed_generation: int | None = None


class ObjectMeta(BaseModel):
    """The parts of metadata changegate reads; everything else is kept but ignored."""

    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="ignore", frozen=True
    )

    name: str = ""
    namespace: str | None = None
    uid: str | None = None
    resource_version: str | None = None
    generation: int | None = None
    creation_timestamp: AwareDatetime | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)


# -- ChangePolicy --------------------------------------------------------------------------------


class PolicyMatch(_Wire):
    resources: list[ResourceRule] = Field(min_length=1)
    namespaces: list[NonEmptyStr] = Field(default_factory=list)
    namespace_selector: LabelSelector | None = None
    exclude_namespaces: list[NonEmptyStr] = Field(default_factory=list)


PublicKey = ed25519.Ed25519PublicKey | ec.EllipticCurvePublicKey


def approval_public_key(pem: str) -> PublicKey:
    """An approval issuer's public key: Ed25519 or ECDSA P-256, PEM (ValueError otherwise)."""
    try:
        key = serialization.load_pem_public_key(pem.encode())
    except (ValueError, TypeError, UnsupportedAlgorithm) as e:
        raise ValueError(f"not a PEM public key ({e})") from None
    if isinstance(key, ed25519.Ed25519PublicKey):
        return key
    if isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve, ec.SECP256R1):
        return key
    raise ValueError("use an Ed25519 or ECDSA P-256 public key (PEM)")


def _check_public_key(pem: str) -> str:
    approval_public_key(pem)
    return pem


class IssuerKey(_Wire):
    key_id: NonEmptyStr
    public_key: Annotated[str, AfterValidator(_check_public_key)]


class ApprovalIssuer(_Wire):
    """A task-tracking system whose signed approvals this policy accepts (see
    ``policy/signatures.py``); several keys so they can be rotated."""

    name: NonEmptyStr
    keys: list[IssuerKey] = Field(min_length=1)

    @model_validator(mode="after")
    def _key_ids_unique(self) -> ApprovalIssuer:
        ids = [k.key_id for k in self.keys]
        if len(ids) != len(set(ids)):
            raise ValueError(f"key ids must be unique within issuer {self.name}")
        return self


class Approval(_Wire):
    required: int = Field(default=1, ge=0, le=10)
    approver_groups: list[NonEmptyStr] = Field(default_factory=list)
    trusted_issuers: list[ApprovalIssuer] = Field(default_factory=list)


class HolidayCalendar(_Wire):
    country: Annotated[str, Field(pattern=r"^[A-Z]{2}$")]
    subdivision: str | None = None
    time_zone: TimeZone

    @field_validator("country")
    @classmethod
    def _country_has_a_calendar(cls, value: str) -> str:
        # The pattern only checks the shape; the calendar library must know the country, or
        # the blackout could never be evaluated.
        if value not in holidays.list_supported_countries():
            raise ValueError(f"country {value!r} has no holiday calendar (ISO 3166-1 alpha-2)")
        return value

    @model_validator(mode="after")
    def _subdivision_known(self) -> HolidayCalendar:
        subdivisions = holidays.list_supported_countries().get(self.country, [])
        if self.subdivision is not None and self.subdivision not in subdivisions:
            shown = ", ".join(subdivisions[:12]) + (" ..." if len(subdivisions) > 12 else "")
            raise ValueError(
                f"subdivision {self.subdivision!r} is not known for {self.country}"
                + (f"; use one of: {shown}" if subdivisions else "; it has none")
            )
        return self


class Blackout(_Wire):
    name: NonEmptyStr
    schedule: Schedule | None = None
    holidays: HolidayCalendar | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> Blackout:
        if (self.schedule is None) == (self.holidays is None):
            raise ValueError("a blackout needs exactly one of schedule or holidays")
        return self


class BreakGlass(_Wire):
    groups: list[NonEmptyStr] = Field(default_factory=list)
    max_duration: Duration = datetime.timedelta(hours=4)


class WindowLimits(_Wire):
    """How long and how broad a window may be to admit anything under this policy.

    Checked when a window is created or changed (the webhook refuses it, naming the limit)
    and again at every decision (a window that breaks a limit added later admits nothing
    under this policy). Absent fields set no limit.
    """

    max_duration: Duration | None = None
    """Longest stretch a window may stay open at once (back-to-back occurrences merged)."""
    max_lifetime: Duration | None = None
    """From a window's first possible opening to its last closing: ``end - start`` for a
    one-off window, ``notAfter - notBefore`` for a recurring one (which must then set both)."""
    max_namespaces: int | None = Field(default=None, ge=1, le=10_000)
    """Most namespaces a window may cover under this policy (selectors resolved)."""
    allow_wildcards: bool = True
    """False: ``*`` in a target's apiGroups, resources or operations, and an empty
    ``namespaceSelector: {}`` (everywhere), are refused."""


class PolicyMessage(_Wire):
    contact: str | None = None
    docs_url: str | None = Field(default=None, alias="docsURL")


class ChangePolicySpec(_Wire):
    match: PolicyMatch
    enforcement: Enforcement = Enforcement.ENFORCE
    exempt_subjects: list[Subject] = Field(default_factory=list)
    approval: Approval = Field(default_factory=Approval)
    ticket_pattern: Regex | None = None
    blackouts: list[Blackout] = Field(default_factory=list)
    break_glass: BreakGlass | None = None
    window_limits: WindowLimits | None = None
    message: PolicyMessage = Field(default_factory=PolicyMessage)


class ChangePolicy(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")
    api_version: Literal["changegate.io/v1alpha1"] = API_VERSION
    kind: Literal["ChangePolicy"] = "ChangePolicy"
    metadata: ObjectMeta
    spec: ChangePolicySpec


# -- AuthorizedIdentity --------------------------------------------------------------------------


class WeeklyRange(_Wire):
    days: list[Weekday] = Field(min_length=1)
    start: ClockTime
    end: ClockTime


class WorkHours(_Wire):
    time_zone: TimeZone
    weekly: list[WeeklyRange] = Field(min_length=1)


class AuthorizedIdentitySpec(_Wire):
    subjects: list[Subject] = Field(min_length=1)
    work_hours: WorkHours | None = None
    valid_until: AwareDatetime | None = None
    suspended: bool = False


class AuthorizedIdentity(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")
    api_version: Literal["changegate.io/v1alpha1"] = API_VERSION
    kind: Literal["AuthorizedIdentity"] = "AuthorizedIdentity"
    metadata: ObjectMeta
    spec: AuthorizedIdentitySpec


# -- ChangeWindow --------------------------------------------------------------------------------


class WindowTarget(_Wire):
    namespaces: list[NonEmptyStr] = Field(default_factory=list)
    namespace_selector: LabelSelector | None = None
    resources: list[ResourceRule] = Field(min_length=1)
    names: list[NonEmptyStr] = Field(default_factory=list)

    @model_validator(mode="after")
    def _some_namespace(self) -> WindowTarget:
        if not self.namespaces and self.namespace_selector is None:
            raise ValueError("a target needs namespaces and/or namespaceSelector")
        return self


class Emergency(_Wire):
    reason: Annotated[str, Field(min_length=1)]
    policies: list[NonEmptyStr] = Field(default_factory=list)
    """The ChangePolicies whose break-glass the requester uses. The webhook admits the window
    only if the requester is in each one's breakGlass groups (checked against the
    authenticated user), and the window is an emergency window under those policies only."""


class ApprovalSignature(_Wire):
    """A tracker's signature of an approval: the claims it signed that the entry does not
    carry anyway (window, ticket), the issuer and key, and the signature (base64)."""

    issuer: NonEmptyStr
    key_id: NonEmptyStr
    window: NonEmptyStr
    ticket: NonEmptyStr
    value: Annotated[str, Field(min_length=1, max_length=1024)]


class WindowApproval(_Wire):
    approver: NonEmptyStr
    spec_hash: Annotated[str, Field(pattern=r"^sha256:[0-9a-f]{64}$")]
    approved_at: AwareDatetime | None = None
    policies: list[NonEmptyStr] = Field(default_factory=list)
    """The ChangePolicies this approval counts under. Verified when the approval is appended
    (the approver is in each one's approverGroups, by the authenticated user's groups);
    fixed from then on, since the decision cannot learn the approver's groups later."""
    namespaces: list[NonEmptyStr] | None = None
    """For windows with a ``namespaceSelector`` target: the namespaces the window covered
    when the approver signed. The approval covers nothing a selector picks up later."""
    signature: ApprovalSignature | None = None
    """Set when a trusted task-tracking system signed this approval (it may then be appended
    by the tracker's automation rather than by the approver)."""


class ChangeWindowSpec(_Wire):
    ticket: NonEmptyStr
    description: str = ""
    requester: NonEmptyStr
    identities: list[NonEmptyStr] = Field(min_length=1)
    targets: list[WindowTarget] = Field(min_length=1)
    schedule: Schedule
    emergency: Emergency | None = None
    approvals: list[WindowApproval] = Field(default_factory=list)


class ChangeWindowStatus(BaseModel):
    # Frozen: every window validated without a status shares one (``_NO_STATUS``).
    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="ignore", frozen=True
    )
    phase: Phase | None = None
    spec_hash: str | None = None
    approved: bool = False
    approvals: str | None = None  # "n/m", for the printer column
    next_open: AwareDatetime | None = None
    next_close: AwareDatetime | None = None
    observed_generation: int | None = None
    message: str | None = None
    conditions: list[Condition] = Field(default_factory=list)


class ChangeWindow(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="ignore", frozen=True
    )
    api_version: Literal["changegate.io/v1alpha1"] = API_VERSION
    kind: Literal["ChangeWindow"] = "ChangeWindow"
    metadata: ObjectMeta
    spec: ChangeWindowSpec
    #: The operator validates windows without their status (it is ours to rewrite): they all
    #: share one empty status rather than one each (never mutated).
    status: ChangeWindowStatus = Field(default_factory=lambda: _NO_STATUS)


_NO_STATUS: Final[ChangeWindowStatus] = ChangeWindowStatus()


_M = TypeVar("_M", bound=BaseModel)
_FIELDS_SETS: dict[tuple[type[BaseModel], frozenset[str]], set[str]] = {}
_K = TypeVar("_K", bound=Hashable)
_V = TypeVar("_V")


class CanonicalTable(Generic[_K, _V]):
    """One object for equal ones: the first value seen under a key is the one handed out for
    it afterwards. Past ``limit`` entries the table starts afresh -- objects already shared
    stay shared, the ones that stopped recurring are let go -- so it never grows without
    bound, whatever keys come in."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._table: dict[_K, _V] = {}

    def share(self, key: _K, value: _V) -> _V:
        found = self._table.get(key)
        if found is not None:
            return found
        if len(self._table) >= self.limit:
            self._table.clear()
        self._table[key] = value
        return value

    def __len__(self) -> int:
        return len(self._table)

    def items(self) -> ItemsView[_K, _V]:
        return self._table.items()


_Strings = list[str] | dict[str, str]
#: Past this many entries the table of string lists and maps starts afresh: most of a
#: cluster's lists recur (the same namespaces, resources, operations and policies named by
#: window after window), and the ones that do not must not grow it without bound.
STRINGS_LIMIT: Final = 1_024
#: Equal string lists and string maps, per (model class, field): (class, field, contents) ->
#: the one object models of that class share for that field.
_STRINGS: CanonicalTable[tuple[type[BaseModel], str, tuple[object, ...]], _Strings] = (
    CanonicalTable(STRINGS_LIMIT)
)
#: Only lists and maps this small are shared, so that the table -- which keeps what it holds
#: alive after the window that brought it is deleted -- holds at most ~6 MB whatever windows
#: are written to it (a window may be 1.5 MiB of one list).
STRINGS_MAX_ITEMS: Final = 64
STRINGS_MAX_CHARS: Final = 1_024


def share_equal_parts(model: _M) -> _M:
    """``model``, its frozen models sharing what equal models of the same class already hold.

    - **Fields sets.** pydantic gives every model instance its own ``__pydantic_fields_set__``
      (the names the input set; ``model_dump(exclude_unset=True)`` reads it): a ``set`` of
      216-728 bytes, seven per window -- a third of a validated window's memory (~2 KB of
      ~6 KB), 20 MB at 10,000 windows, and all of them equal to one of a few dozen. A frozen
      model never changes its own set (assignment is refused before pydantic would add to
      it; ``model_copy`` copies it first), so equal ones can be one object. The table is
      bounded by the declared fields' combinations: input cannot add field names (unknown
      fields are refused or ignored, never kept).
    - **String lists and maps** (a target's namespaces, resources and operations, an
      approval's policies, labels): a field of a frozen model whose value is a list of
      strings or a map of strings to strings, equal to the same field's value in a model of
      the same class seen before, becomes that object (~1 KB less per window in
      ``bench/operator.py``'s cluster); only small ones, in a bounded table (below). Keyed
      by class and field, so a list of ``Operation`` members is never replaced by an equal
      list of plain strings. Nothing changes a model's lists or maps once it is validated --
      the models are frozen and read by the index, the decisions and the status -- and that
      is what makes sharing them safe.

    Models of classes that are not frozen keep their own.
    """
    stack: list[object] = [model]
    while stack:
        item = stack.pop()
        if isinstance(item, BaseModel):
            cls = type(item)
            if not cls.model_config.get("frozen"):
                stack.extend(item.__dict__.values())
                continue
            fields = item.__dict__
            for name, value in fields.items():
                shared = _shared_strings(cls, name, value)
                if shared is None:
                    stack.append(value)
                elif shared is not value:
                    fields[name] = shared
            mine = item.__pydantic_fields_set__
            shared_set = _FIELDS_SETS.setdefault((cls, frozenset(mine)), mine)
            if shared_set is not mine:
                object.__setattr__(item, "__pydantic_fields_set__", shared_set)
        elif isinstance(item, list | tuple) and item and isinstance(item[0], BaseModel):
            stack.extend(item)  # a field's list holds one type: models, or no models at all
    return model


def _shared_strings(cls: type[BaseModel], name: str, value: object) -> _Strings | None:
    """The shared object equal to ``value`` for ``cls.name`` (``value`` itself when it is too
    large to share); None if it is not strings."""
    if isinstance(value, list):
        if not all(isinstance(v, str) for v in value):
            return None
        if len(value) > STRINGS_MAX_ITEMS or sum(map(len, value)) > STRINGS_MAX_CHARS:
            return value  # strings all the same, but kept apart
        contents: tuple[object, ...] = tuple(value)
    elif isinstance(value, dict):
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
            return None
        if (
            len(value) > STRINGS_MAX_ITEMS
            or sum(len(k) + len(v) for k, v in value.items()) > STRINGS_MAX_CHARS
        ):
            return value
        contents = tuple(value.items())
    else:
        return None
    return _STRINGS.share((cls, name, contents), value)


PLURALS = {
    "ChangePolicy": "changepolicies",
    "AuthorizedIdentity": "authorizedidentities",
    "ChangeWindow": "changewindows",
}
