"""Long-running programs started for a test topology or a demo, and stopped by their own pids.

Each program is started in a session of its own with its output in a log file; stopping sends
SIGTERM to that session's process group (the program and what it forked), waits, and then
sends SIGKILL to what is left. Nothing is ever looked up or stopped by name.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path


class Processes:
    """Programs started by :meth:`start`, stopped together by :meth:`stop_all` (newest first)."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str, cmd: Sequence[str], env: Mapping[str, str] | None = None,
              cwd: Path | None = None) -> subprocess.Popen[bytes]:
        """Start ``cmd`` as ``name`` with its output in ``LOG_DIR/NAME.out``."""
        if name in self.procs and self.procs[name].poll() is None:
            raise RuntimeError(f"{name} is already running (pid {self.procs[name].pid})")
        self.log_dir.mkdir(parents=True, exist_ok=True)
        with open(self.log_path(name), "ab") as log:
            proc = subprocess.Popen(list(cmd), env=dict(env) if env is not None else None, cwd=cwd,
                                    stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    start_new_session=True)
        self.procs[name] = proc
        return proc

    def log_path(self, name: str) -> Path:
        return self.log_dir / f"{name}.out"

    def log_tail(self, name: str, lines: int = 30) -> str:
        path = self.log_path(name)
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""

    def check_alive(self) -> None:
        """Fail naming the first program that has exited, with the end of its log."""
        for name, proc in self.procs.items():
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited with {proc.returncode}; {self.log_path(name)} ends:\n"
                                   f"{self.log_tail(name)}")

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        """Send ``sig`` to ``name``'s process group (a crash when SIGKILL; a shutdown when SIGTERM)."""
        try:
            os.killpg(self.procs[name].pid, sig)
        except ProcessLookupError:
            pass

    def stop(self, name: str, grace_s: float = 20) -> None:
        """SIGTERM ``name``'s process group, SIGKILL it after ``grace_s``, and forget it."""
        proc = self.procs.pop(name)
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            pass
        # What the program forked into its session may outlive it; end that too.
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()

    def stop_all(self, grace_s: float = 20) -> None:
        """Stop every program, the newest first (workers before the services they use)."""
        deadline = time.monotonic() + grace_s
        for name in reversed(list(self.procs)):
            self.stop(name, grace_s=max(1.0, deadline - time.monotonic()))
