"""Plays ``story.STORY`` against a running control plane and changegate, printing as it goes.

Commands run as the story's people with their own client certificates (the API server itself
authenticates them); ``kubectl changegate`` runs as kubectl would run the plugin. Every
``Run`` checks its outcome; ``failures`` lists the ones that did not turn out as told.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from controller.devcluster import assets, cluster
from demo import story

DEMO_FILES = assets.repo_root() / "examples" / "demo"

Value = str | Callable[[], Sequence[str]]
"""A placeholder's value: text, or (read when used) a list of arguments."""


class Player:
    def __init__(self, *, cp: cluster.ControlPlane, values: Mapping[str, Value]) -> None:
        self.cp = cp
        self.values = values
        self.step_no = 0
        self.failures: list[str] = []
        self.cli = [sys.executable, "-m", "controller.cli.main"]

    def play(self, steps: Sequence[story.Step] = story.STORY) -> None:
        for step in steps:
            self.step_no += 1
            print(f"\n\033[1m== {self.step_no}. {step.title}\033[0m", flush=True)
            for action in step.actions:
                if isinstance(action, story.Say):
                    print(textwrap.fill(action.text, width=96), flush=True)
                elif isinstance(action, story.Until):
                    self._until(action)
                else:
                    self.run(action)

    # -- running as someone ----------------------------------------------------------------

    def _argv(self, argv: Sequence[str]) -> list[str]:
        """Fill in ``{placeholders}``; a placeholder whose value is a list expands to several
        arguments (the audit log's files)."""
        out: list[str] = []
        texts = {k: v for k, v in self.values.items() if isinstance(v, str)}
        for arg in argv:
            value = (
                self.values.get(arg[1:-1]) if arg.startswith("{") and arg.endswith("}") else None
            )
            if callable(value):
                out.extend(value())
            else:
                out.append(arg.format_map(texts) if "{" in arg else arg)
        return out

    def _command(self, who: story.Who, argv: Sequence[str]) -> list[str]:
        kubeconfig = str(self.cp.kubeconfig if who is None else self.cp.identity(*who).kubeconfig)
        if list(argv[:2]) == ["kubectl", "changegate"]:  # the plugin, as kubectl would run it
            return [*self.cli, *argv[2:], f"--kubeconfig={kubeconfig}"]
        return [str(self.cp.kubectl_path), f"--kubeconfig={kubeconfig}", *argv[1:]]

    def _execute(
        self, who: story.Who, argv: Sequence[str], stdin: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        env = dict(os.environ, TZ=os.environ.get("TZ", "UTC"))
        return subprocess.run(
            self._command(who, argv),
            input=stdin,
            capture_output=True,
            text=True,
            timeout=60,
            env=env,
        )

    def run(self, action: story.Run) -> subprocess.CompletedProcess[str]:
        name = "admin" if action.who is None else action.who[0].split("@")[0]
        argv = self._argv(action.argv)
        stdin = (DEMO_FILES / action.stdin).read_text() if action.stdin else None
        texts = {k: v for k, v in self.values.items() if isinstance(v, str)}
        shown = action.show.format_map(texts) if action.show else shlex.join(argv)
        print(f"{name}$ {shown}", flush=True)
        res = self._execute(action.who, argv, stdin)
        text = (res.stdout + res.stderr).strip()
        if text:
            print(textwrap.indent(text, "    "), flush=True)
        if action.echo_stdin:
            print(textwrap.indent((stdin or "").strip(), "    | "), flush=True)
        ok = (
            (res.returncode == 0) == (action.expect == "ok")
            and all(c in text for c in action.contains)
            and not any(c in text for c in action.lacks)
        )
        if not ok:
            problem = (
                f"step {self.step_no}: expected {action.expect} with {list(action.contains)}"
                f"{' and without ' + str(list(action.lacks)) if action.lacks else ''},"
                f" got exit {res.returncode}"
            )
            print(f"    !! {problem}", flush=True)
            self.failures.append(problem)
        return res

    def _until(self, cond: story.Until) -> None:
        argv = self._argv(cond.argv)
        deadline = time.monotonic() + cond.timeout
        while True:
            res = self._execute(cond.who, argv)
            text = res.stdout + res.stderr
            if (res.returncode == 0) == (cond.expect == "ok") and all(
                c in text for c in cond.contains
            ):
                return
            if time.monotonic() > deadline:
                problem = f"step {self.step_no}: waited {cond.timeout:g} s for {cond.what}"
                print(f"    !! {problem}: {text.strip()[:300]}", flush=True)
                self.failures.append(problem)
                return
            time.sleep(0.25)


def values_for(
    cp: cluster.ControlPlane, *, now_rfc3339: str, start: str, end: str
) -> dict[str, Value]:
    """What the story's placeholders stand for in this run."""
    return {
        "examples": str(assets.repo_root() / "examples"),
        "start": start,
        "end": end,
        "since": now_rfc3339,
        "audit_files": lambda: [str(f) for f in cp.audit_log_files()],
        "audit_dir": str(Path(cp.audit_log).parent),
    }
