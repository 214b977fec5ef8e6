"""Long-running programs started for a test topology or a demo, and stopped by their own pids.

Each program is started in a session of its own with its output in a log file. Stopping sends
SIGTERM to the program's process group (the program and what it forked), waits, and then sends
SIGKILL to everything left in its session: a program's descendants may have made process groups
of their own (Airflow's task supervisor puts each task process in one), but they stay in the
session, whose id is the program's pid. Nothing is ever looked up or stopped by name.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

SESSION_KILL_S = 10.0
"""How long killing a session may take: a program forking while it is killed is killed again."""


@dataclass(frozen=True)
class Launch:
    """What :meth:`Processes.start` was given, to start the same program again."""

    cmd: tuple[str, ...]
    env: Mapping[str, str] | None
    cwd: Path | None


def session_of(pid: int) -> int | None:
    """The session id of live process ``pid``; None when it is gone or a zombie. The command
    name in ``/proc/PID/stat`` may hold spaces and parentheses, so fields are counted from the
    last ``)``: state, ppid, pgrp, session."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    return None if fields[0] == "Z" else int(fields[3])


def session_members(sid: int) -> list[int]:
    """Every live process of session ``sid``, read from ``/proc``."""
    return [int(e.name) for e in os.scandir("/proc") if e.name.isdigit() and session_of(int(e.name)) == sid]


def signal_session(sid: int, sig: int) -> int:
    """Send ``sig`` to every live process of session ``sid``; how many got it.

    Each is signalled through a pidfd opened before its session is read again, so a pid that
    ended and was reused by an unrelated process meanwhile is never signalled."""
    sent = 0
    for pid in session_members(sid):
        try:
            fd = os.pidfd_open(pid)
        except ProcessLookupError:
            continue
        try:
            if session_of(pid) == sid:
                signal.pidfd_send_signal(fd, sig)
                sent += 1
        except ProcessLookupError:
            pass
        finally:
            os.close(fd)
    return sent


def kill_session(sid: int, timeout: float = SESSION_KILL_S) -> None:
    """SIGKILL every process of session ``sid`` until none is left (what forks meanwhile too)."""
    deadline = time.monotonic() + timeout
    while signal_session(sid, signal.SIGKILL):
        if time.monotonic() > deadline:
            raise RuntimeError(f"processes of session {sid} still alive after {timeout} s: {session_members(sid)}")
        time.sleep(0.05)


def _term(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM ``proc``'s process group (the program and what it forked)."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        pass


class Processes:
    """Programs started by :meth:`start`, stopped together by :meth:`stop_all`."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.launches: dict[str, Launch] = {}

    def start(self, name: str, cmd: Sequence[str], env: Mapping[str, str] | None = None,
              cwd: Path | None = None) -> subprocess.Popen[bytes]:
        """Start ``cmd`` as ``name`` with its output in ``LOG_DIR/NAME.out`` (appended to)."""
        if name in self.procs and self.procs[name].poll() is None:
            raise RuntimeError(f"{name} is already running (pid {self.procs[name].pid})")
        self.log_dir.mkdir(parents=True, exist_ok=True)
        with open(self.log_path(name), "ab") as log:
            proc = subprocess.Popen(list(cmd), env=dict(env) if env is not None else None, cwd=cwd,
                                    stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    start_new_session=True)
        self.procs[name] = proc
        self.launches[name] = Launch(tuple(cmd), env, cwd)
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

    def crash(self, name: str) -> None:
        """Kill every process ``name`` started, at once, with SIGKILL, and forget it: what a lost
        machine does to its programs, with no chance for any of them to clean up."""
        proc = self.procs.pop(name)
        kill_session(proc.pid)
        proc.wait()

    def stop(self, name: str, grace_s: float = 20) -> None:
        """SIGTERM ``name``'s process group, SIGKILL its session after ``grace_s``, and forget it."""
        self.stop_together([name], grace_s)

    def stop_together(self, names: Sequence[str], grace_s: float = 20, again_after_s: float | None = None) -> None:
        """SIGTERM every one of ``names`` at once, wait up to ``grace_s`` for them all, then
        SIGKILL what is left of their sessions, and forget them. Programs that each take seconds
        to shut down (Airflow's components, Celery workers) then take as long as the slowest of
        them, not the sum.

        ``again_after_s``: a program still running that long after the first SIGTERM gets a
        second one. Airflow's triggerer takes a second SIGTERM as "stop now"; after the first it
        waits 10 s for its trigger runner, which a topology being torn down does not need."""
        procs = [self.procs.pop(name) for name in names]
        started = time.monotonic()
        for proc in procs:
            _term(proc)
        if again_after_s is not None:
            for proc in procs:
                try:
                    proc.wait(timeout=max(0.0, started + again_after_s - time.monotonic()))
                except subprocess.TimeoutExpired:
                    _term(proc)
        deadline = started + grace_s
        for proc in procs:
            try:
                proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
        # What a program forked into its session may outlive it; end that too.
        for proc in procs:
            kill_session(proc.pid)
            proc.wait()

    def restart(self, name: str, crash: bool = False, grace_s: float = 20) -> subprocess.Popen[bytes]:
        """Stop ``name`` (:meth:`crash` when ``crash``, else :meth:`stop`) and start the same
        command again, with the same environment and directory, its output appended to its log."""
        launch = self.launches[name]
        if crash:
            self.crash(name)
        else:
            self.stop(name, grace_s)
        return self.start(name, launch.cmd, launch.env, launch.cwd)

    def stop_all(self, grace_s: float = 20, services: Collection[str] = (), again_after_s: float | None = None) -> None:
        """Stop every program: first all but ``services`` together, then ``services`` together
        (workers end before the database and broker they report to); ``again_after_s`` as in
        :meth:`stop_together`."""
        users = [name for name in self.procs if name not in services]
        self.stop_together(users, grace_s, again_after_s)
        self.stop_together(list(self.procs), grace_s, again_after_s)
