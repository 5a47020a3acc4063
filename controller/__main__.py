"""``changegate run`` (also ``python -m controller run``): start one replica.

Every flag has a ``CHANGEGATE_<FLAG>`` environment variable (``--cert-dir`` ->
``CHANGEGATE_CERT_DIR``); the flag wins. Logs are one JSON object per line on stderr.
"""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from controller.operator import run as runner

# Attributes every LogRecord has; anything else came in through ``extra=`` and is logged too.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message"}


class JsonFormatter(logging.Formatter):
    """One JSON object per line; decision lines (already JSON) get level and logger spliced in."""

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        if (
            record.name == "changegate.decisions"
            and message.startswith("{")
            and message.endswith("}")
            and not record.exc_info
        ):
            # The hot path: the admission server already wrote a complete JSON object with its
            # own timestamp; add level and logger without parsing and re-encoding it.
            return f'{message[:-1]},"level":"{record.levelname.lower()}","logger":"{record.name}"}}'
        line: dict[str, object] = {
            "ts": datetime.datetime.fromtimestamp(record.created, datetime.UTC).isoformat(),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": message,
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                line.setdefault(key, value)
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str, ensure_ascii=False, separators=(",", ":"))


def _env(name: str, default: str | None = None) -> str | None:
    """``CHANGEGATE_<name>``, unless Kubernetes put it there: a Service named ``changegate``
    makes the kubelet inject service-link variables such as ``CHANGEGATE_PORT=tcp://10.0.0.7:443``
    into pods of its namespace, which are not settings (the chart also turns them off)."""
    value = os.environ.get(f"CHANGEGATE_{name}")
    if value is None or value.startswith(("tcp://", "udp://", "sctp://")):
        return default
    return value


def _env_flag(name: str) -> bool:
    return (_env(name) or "").lower() in ("1", "true", "yes", "on")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="changegate", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="run the operator and the admission webhook server")
    kubeconfig = _env("KUBECONFIG")
    r.add_argument(
        "--kubeconfig",
        type=Path,
        default=Path(kubeconfig) if kubeconfig else None,
        help="kubeconfig file (default: in-cluster service account, then ~/.kube/config)",
    )
    r.add_argument("--listen-host", default=_env("LISTEN_HOST", "0.0.0.0"))
    r.add_argument("--port", type=int, default=int(_env("PORT", "8443") or 8443))
    r.add_argument(
        "--cert-dir",
        type=Path,
        default=Path(_env("CERT_DIR", "/var/run/changegate/certs") or "."),
        help="tls.crt, tls.key and ca.crt; written here in the local and secret cert modes",
    )
    r.add_argument(
        "--cert-mode",
        choices=runner.CERT_MODES,
        default=_env("CERT_MODE"),
        help="local: dev certificates (the default with --local); secret: changegate issues "
        "and rotates them in --cert-secret; files: read what is mounted in --cert-dir "
        "(e.g. by cert-manager; the default otherwise)",
    )
    r.add_argument(
        "--cert-secret",
        default=_env("CERT_SECRET", "changegate-tls"),
        help="the Secret (in --namespace) holding the CA and serving certificate (secret mode)",
    )
    r.add_argument("--namespace", default=_env("NAMESPACE", "changegate"))
    r.add_argument(
        "--service-account",
        default=_env("SERVICE_ACCOUNT", "changegate"),
        help="changegate's own service account (in --namespace): exempt, like the control plane",
    )
    r.add_argument(
        "--service-name",
        default=_env("SERVICE_NAME", "changegate"),
        help="the Service the API server calls (ignored with --local)",
    )
    r.add_argument(
        "--failure-policy", choices=["Fail", "Ignore"], default=_env("FAILURE_POLICY", "Fail")
    )
    r.add_argument(
        "--local",
        action="store_true",
        default=_env_flag("LOCAL"),
        help="run outside the cluster: webhook URL https://127.0.0.1:<port>/validate, dev certs",
    )
    r.add_argument(
        "--no-builtin-exemptions",
        action="store_true",
        default=_env_flag("NO_BUILTIN_EXEMPTIONS"),
        help="also gate the control plane's own identities (not recommended)",
    )
    r.add_argument(
        "--log-level",
        default=_env("LOG_LEVEL", "info"),
        choices=["debug", "info", "warning", "error"],
    )
    return p


def config_from_args(args: argparse.Namespace) -> runner.Config:
    return runner.Config(
        kubeconfig=args.kubeconfig,
        listen_host=args.listen_host,
        port=args.port,
        cert_dir=args.cert_dir,
        namespace=args.namespace,
        service_account=args.service_account,
        service_name=args.service_name,
        failure_policy=args.failure_policy,
        local=args.local,
        cert_mode=args.cert_mode,
        cert_secret=args.cert_secret,
        builtin_exemptions=not args.no_builtin_exemptions,
    )


def configure_logging(level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # kopf and the kubernetes client are chatty at INFO about every watch reconnect.
    for noisy in ("kopf", "kubernetes", "urllib3", "aiohttp.access"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    configure_logging(args.log_level)
    if args.command == "run":
        runner.main(config_from_args(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
