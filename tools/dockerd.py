"""Private Docker engines for tests and benchmarks: one dockerd per simulated GPU host.

Each engine has its own socket, data root, exec root and pid file, no bridge network and no
iptables rules, so it cannot disturb the machine's own engine or its networking. Images come
from the tarballs that ``images/build.sh`` saves in ``.cache/images``; an engine is stopped by
the pid it was started with, and its directories are removed.

``simulated_gpus=True`` gives the engine a stand-in for the NVIDIA driver, for tests of GPU
placement on machines without GPUs: an ``nvidia`` runtime that is plain ``runc``, and on the
engine's PATH a ``nvidia-container-runtime-hook`` that accepts every container and attaches no
device. Docker registers its ``nvidia`` device driver when that hook exists, so a container
with a GPU device request is created and started exactly as on a GPU host, and sees the
chosen ids in ``NVIDIA_VISIBLE_DEVICES``; only the device itself is missing.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import docker

from tools.polling import NotWithin, eventually

REPO = Path(__file__).resolve().parents[1]
IMAGE_CACHE = Path(os.environ.get("GPU_DOCKER_IMAGE_CACHE", REPO / ".cache" / "images"))
TRAINER_IMAGE = "gpu-docker-trainer:0.1"
TESTBOX_IMAGE = "gpu-docker-testbox:0.1"


def image_tarball(image: str) -> Path:
    """Where ``images/build.sh`` saved ``image`` (``name:tag`` -> ``name_tag.tar``)."""
    return IMAGE_CACHE / (image.replace("/", "_").replace(":", "_") + ".tar")


class PrivateDockerd:
    """A dockerd of our own. Use as a context manager, or ``start()``/``stop()``."""

    def __init__(
        self,
        name: str = "host",
        cgroup_parent: str | None = None,
        simulated_gpus: bool = False,
        live_restore: bool = False,
        extra_args: Sequence[str] = (),
        wrap: Sequence[str] = (),
    ) -> None:
        # Short paths: the engine's sockets under exec-root must stay under 108 bytes.
        self.root = Path(tempfile.mkdtemp(prefix=f"gd-{name}-"))
        self.name = name
        self.cgroup_parent = cgroup_parent
        self.simulated_gpus = simulated_gpus
        self.live_restore = live_restore  # containers survive restart() (dockerd --live-restore)
        self.extra_args = list(extra_args)  # e.g. a TLS-protected --host=tcp://127.0.0.1:PORT
        self.wrap = list(wrap)  # a prefix that runs the engine elsewhere, e.g. on a machine of a Lan
        self.socket = self.root / "docker.sock"
        self.url = f"unix://{self.socket}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 60) -> PrivateDockerd:
        cmd = [
            *self.wrap,
            "dockerd",
            f"--host={self.url}",
            f"--data-root={self.root / 'data'}",
            f"--exec-root={self.root / 'x'}",
            f"--pidfile={self.root / 'docker.pid'}",
            "--bridge=none",
            "--iptables=false",
            "--ip-masq=false",
            "--ip-forward=false",
        ]
        if self.cgroup_parent:
            cmd.append(f"--cgroup-parent={self.cgroup_parent}")
        if self.live_restore:
            cmd.append("--live-restore")
        cmd += self.extra_args
        env = dict(os.environ)
        if self.simulated_gpus:
            cmd.append("--add-runtime=nvidia=runc")
            env["PATH"] = f"{self._simulated_driver()}:{env.get('PATH', '/usr/bin:/bin')}"
        log = open(self.root / "dockerd.log", "wb")  # noqa: SIM115 - the child owns it
        self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=env)
        log.close()
        proc = self.proc

        def answers() -> bool:
            if proc.poll() is not None:
                raise RuntimeError(f"dockerd {self.name} exited: {self.log_tail()}")
            try:
                with self.client() as c:
                    return bool(c.ping())
            except Exception:  # noqa: BLE001 - not up yet
                return False

        try:
            eventually(answers, timeout, what=f"dockerd {self.name} answering")
        except NotWithin:
            tail = self.log_tail()
            self.stop()
            raise TimeoutError(f"dockerd {self.name} did not answer within {timeout} s: {tail}") from None
        return self

    def _simulated_driver(self) -> Path:
        """A directory holding the stand-in driver hook (see the module docstring)."""
        bindir = self.root / "bin"
        bindir.mkdir(exist_ok=True)
        hook = bindir / "nvidia-container-runtime-hook"
        hook.write_text("#!/bin/sh\n# Simulated GPU driver: accept the container, attach no device.\ncat >/dev/null\nexit 0\n")
        hook.chmod(0o755)
        return bindir

    @contextmanager
    def client(self) -> Iterator[docker.DockerClient]:
        """A docker-py client of this engine, closed after the ``with`` block."""
        c = docker.DockerClient(base_url=self.url, version="auto", timeout=120)
        try:
            yield c
        finally:
            c.close()

    def containers(self, *labels: str) -> list[dict[str, Any]]:
        """The engine's list entries (``Id``, ``State``, ``Labels``, ...) of every container,
        running or not, carrying all ``labels`` (``key`` or ``key=value``).

        One list call and nothing more: docker-py's ``containers.list`` inspects each entry
        afterwards, and a container that another thread is creating or removing at that moment
        is listed but not yet (or no longer) inspectable, which fails with 404.
        """
        with self.client() as c:
            return list(c.api.containers(all=True, filters={"label": list(labels)} if labels else None))

    def log_tail(self, lines: int = 20) -> str:
        path = self.root / "dockerd.log"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""

    def load(self, *images: str) -> None:
        """Load images saved by ``images/build.sh``; fail with the fix when one is missing."""
        for image in images:
            tar = image_tarball(image)
            if not tar.exists():
                raise FileNotFoundError(
                    f"{tar} is missing: run `images/build.sh` (the README's test command does) "
                    f"to build and save {image}."
                )
            with self.client() as c, open(tar, "rb") as f:
                c.images.load(f)

    def restart(self, timeout: float = 60) -> None:
        """Stop and start the same engine (same data root): containers stop, images stay."""
        self._terminate()
        self.start(timeout)

    def _terminate(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        # dockerd's own containerd runs in its process group; end what is left of it.
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc = None

    def stop(self) -> None:
        """Remove this engine's containers, stop it, and delete its directories."""
        if self.proc is not None and self.proc.poll() is None:
            try:
                with self.client() as c:
                    for entry in c.api.containers(all=True):
                        try:
                            c.api.remove_container(entry["Id"], force=True, v=True)
                        except docker.errors.NotFound:
                            pass
            except Exception:  # noqa: BLE001 - stopping anyway
                pass
        self._terminate()
        for sub in ("x", "data"):
            subprocess.run(["umount", "-R", str(self.root / sub)], capture_output=True)
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> PrivateDockerd:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def stop_engines(engines: Iterable[PrivateDockerd]) -> None:
    """:meth:`PrivateDockerd.stop` every engine at once: each waits seconds for its own dockerd
    and containerd to end, so stopping a pool's engines side by side takes the slowest one's
    time, not the sum."""
    with ThreadPoolExecutor() as pool:
        for stopped in [pool.submit(engine.stop) for engine in engines]:
            stopped.result()
