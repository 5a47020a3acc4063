"""The day of a change, as data: who runs what, and what they should see.

alice (developer) is denied outside a window, asks ``can-i``, requests a window and cannot
approve it herself; bob (approver) approves it; alice's change is admitted; dave (not
designated) is denied; ``kubectl exec`` is denied; carol (on call) opens a break-glass window
and gets in. It ends with what SREs and auditors see, and with ``kubectl changegate report
--audit-log`` over the API server's audit log of the story.

Each step's actions are plain values the player (``demo.play``) runs in order: ``Run`` a
command as someone and check the outcome, ``Say`` something, or wait ``Until`` a condition
holds -- the webhook learns about policies and approvals from its watch a moment later, and
the story waits for exactly that instead of sleeping. ``{start}``-style placeholders are
filled in when the story is played.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

Person = tuple[str, tuple[str, ...]]  # (user, groups), authenticated by client certificate
Who = Person | None  # None: the cluster admin

ADMIN: Who = None
ALICE: Person = ("alice@example.com", ("developers", "payments-ops"))
BOB: Person = ("bob@example.com", ("change-approvers",))
CAROL: Person = ("carol@example.com", ("sre-oncall", "developers"))
DAVE: Person = ("dave@example.com", ("developers",))


@dataclass(frozen=True)
class Run:
    """Run ``argv`` (``kubectl ...`` or ``kubectl changegate ...``) as ``who``; it must end
    ``expect`` (exit 0, or not) and its output contain each of ``contains`` and none of
    ``lacks``."""

    who: Who
    argv: tuple[str, ...]
    expect: Literal["ok", "denied"] = "ok"
    contains: tuple[str, ...] = ()
    lacks: tuple[str, ...] = ()
    stdin: str | None = None  # a file under examples/demo/ to pipe in
    show: str | None = None  # how to print the command, when argv is unwieldy
    echo_stdin: bool = False  # print the piped file too (what the audience should read)


@dataclass(frozen=True)
class Until:
    """Wait (up to ``timeout`` s) until ``argv`` as ``who`` ends ``expect`` -- a condition the
    story needs before it goes on, named by ``what``. Not printed unless it never holds."""

    what: str
    who: Who
    argv: tuple[str, ...]
    expect: Literal["ok", "denied"] = "ok"
    contains: tuple[str, ...] = ()
    timeout: float = 30.0


@dataclass(frozen=True)
class Say:
    text: str


Action = Run | Until | Say


@dataclass(frozen=True)
class Step:
    title: str
    actions: tuple[Action, ...] = field(default_factory=tuple)


SET_IMAGE = ("kubectl", "-n", "shop", "set", "image", "deployment/web", "web=nginx:1.28")
DRY_RUN = "--dry-run=server"

STORY: tuple[Step, ...] = (
    Step(
        "The platform team sets up namespaces, RBAC and a workload",
        (
            Run(ADMIN, ("kubectl", "create", "namespace", "shop")),
            Run(ADMIN, ("kubectl", "create", "namespace", "payments")),
            Run(
                ADMIN,
                ("kubectl", "apply", "-f", "-"),
                stdin="rbac.yaml",
                show="kubectl apply -f examples/demo/rbac.yaml",
            ),
            Run(
                ADMIN,
                ("kubectl", "apply", "-f", "-"),
                stdin="workload.yaml",
                show="kubectl apply -f examples/demo/workload.yaml",
            ),
            Run(ADMIN, ("kubectl", "get", "deployments,pods", "-n", "shop")),
        ),
    ),
    Step(
        "The platform team applies the examples and the shop policy",
        (
            Run(
                ADMIN,
                (
                    "kubectl",
                    "apply",
                    "-f",
                    "{examples}/changepolicy-payments-prod.yaml",
                    "-f",
                    "{examples}/authorizedidentity-payments-oncall.yaml",
                ),
            ),
            Say("Windows are requested by the requester named in them, so alice applies these:"),
            Run(
                ALICE,
                (
                    "kubectl",
                    "apply",
                    "-f",
                    "{examples}/changewindow-chg-1234-payments-v2-3.yaml",
                    "-f",
                    "{examples}/changewindow-weekly-payments-maintenance.yaml",
                ),
            ),
            Run(
                ADMIN,
                ("kubectl", "apply", "-f", "-"),
                stdin="shop-policy.yaml",
                show="kubectl apply -f examples/demo/shop-policy.yaml",
            ),
            Until(
                "the shop policy is in changegate's index",
                ADMIN,
                (*SET_IMAGE, DRY_RUN),
                expect="denied",
                contains=("changegate denied",),
            ),
        ),
    ),
    Step(
        "alice changes the shop's web deployment with no window: denied",
        (
            Run(
                ALICE,
                SET_IMAGE,
                expect="denied",
                contains=("changegate denied", "no approved change window"),
            ),
        ),
    ),
    Step(
        "alice asks before she tries: kubectl changegate can-i",
        (
            Run(
                ALICE,
                ("kubectl", "changegate", "can-i", "update", "deployments", "web", "-n", "shop"),
                expect="denied",
            ),
        ),
    ),
    Step(
        "alice requests a change window (the requester is filled in from her identity)",
        (
            Run(
                ALICE,
                (
                    "kubectl",
                    "changegate",
                    "request",
                    "-n",
                    "shop",
                    "--ticket",
                    "CHG-2001",
                    "--description",
                    "Roll out web on nginx 1.28",
                    "--identity",
                    "shop-oncall",
                    "--resource",
                    "deployments.apps",
                    "--operation",
                    "UPDATE",
                    "--name",
                    "web",
                    "--start",
                    "{start}",
                    "--end",
                    "{end}",
                    "--name-window",
                    "chg-2001-web",
                ),
            ),
        ),
    ),
    Step(
        "alice tries to approve her own window: four-eyes says no",
        (
            Run(
                ALICE,
                ("kubectl", "changegate", "approve", "chg-2001-web", "--yes"),
                expect="denied",
                contains=("four-eyes",),
            ),
        ),
    ),
    Step(
        "bob, an approver, approves it (he signs the spec's hash, under the shop's policy)",
        (
            Run(
                BOB,
                ("kubectl", "changegate", "approve", "chg-2001-web", "--yes"),
                contains=("sha256:", "Approving under: shop-prod"),
            ),
            Until("the approval reached changegate", ALICE, (*SET_IMAGE, DRY_RUN)),
            Run(ALICE, ("kubectl", "changegate", "list"), contains=("chg-2001-web",)),
        ),
    ),
    Step(
        "alice makes the same change again: admitted through CHG-2001",
        (Run(ALICE, SET_IMAGE),),
    ),
    Step(
        "dave is a developer too, but the window does not name him: denied",
        (
            Run(
                DAVE,
                ("kubectl", "-n", "shop", "set", "image", "deployment/web", "web=nginx:1.29"),
                expect="denied",
                contains=("is not designated personnel of window CHG-2001",),
            ),
        ),
    ),
    Step(
        "alice tries to kubectl exec into a pod: the window does not cover pods/exec",
        (
            Run(
                ALICE,
                ("kubectl", "-n", "shop", "exec", "debug", "--", "true"),
                expect="denied",
                contains=("changegate denied",),
            ),
        ),
    ),
    Step(
        "carol is on call: she opens a break-glass window and gets in",
        (
            Run(
                CAROL,
                (
                    "kubectl",
                    "changegate",
                    "emergency",
                    "-n",
                    "shop",
                    "--reason",
                    "INC-88 checkout latency",
                    "--duration",
                    "1h",
                    "--name-window",
                    "inc-88-checkout",
                ),
            ),
            Until(
                "the break-glass window reached changegate",
                CAROL,
                ("kubectl", "-n", "shop", "scale", "deployment/web", "--replicas=3", DRY_RUN),
            ),
            Run(
                CAROL,
                ("kubectl", "-n", "shop", "exec", "debug", "--", "true"),
                expect="denied",
                lacks=("changegate denied",),
            ),
            Say(
                "changegate admitted it (flagged as an emergency); the API server then fails because "
                "this local control plane has no kubelet to run the command. She scales web up:"
            ),
            Run(CAROL, ("kubectl", "-n", "shop", "scale", "deployment/web", "--replicas=3")),
        ),
    ),
    Step(
        "What SREs and auditors see: windows and Events",
        (
            Run(
                ADMIN,
                ("kubectl", "get", "changewindows"),
                contains=("chg-2001-web", "inc-88-checkout"),
            ),
            Until(
                "changegate posted the window's Events",
                ADMIN,
                (
                    "kubectl",
                    "get",
                    "events",
                    "-n",
                    "default",
                    "--field-selector=involvedObject.name=chg-2001-web",
                ),
                contains=("Approved",),
            ),
            Run(ADMIN, ("kubectl", "get", "events", "-A", "--sort-by=.lastTimestamp")),
            Run(ALICE, ("kubectl", "changegate", "report", "--since", "1d")),
        ),
    ),
    Step(
        "The durable record: the API server's audit log, read back for the auditor",
        (
            Say(
                "Events expire after an hour and windows can be deleted; the API server's audit log "
                "keeps every decision changegate made (its audit annotations) and every window's "
                "requests and approvals. The report needs nothing but the log files:"
            ),
            Run(
                ADMIN,
                (
                    "kubectl",
                    "changegate",
                    "report",
                    "--audit-log",
                    "{audit_files}",
                    "--since",
                    "{since}",
                ),
                contains=(
                    "chg-2001-web",
                    "NotDesignated",
                    "Emergency changes whose window was never reviewed: 1",
                    "inc-88-checkout",
                ),
                show="kubectl changegate report --audit-log {audit_dir}/audit*.log* --since {since}",
            ),
        ),
    ),
)
