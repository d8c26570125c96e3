"""The gRPC ranker (serving/ranker/build/ranker_server, serving/binaries.py) as a child process on free loopback ports:
started, waited for until its health says SERVING, stopped with SIGTERM. Tests and the load
benchmark use it; a deployment runs the binary itself (docs/serving.md)."""

from __future__ import annotations

import re
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

from serving.binaries import RANKER_SERVER
from serving.client import SERVICE_NAME, RankerClient

_LISTENING = re.compile(r"listening grpc=(\S+) http=(\S+)")


class RankerServer:
    """`with RankerServer(model_dir, "--workers", "2") as server: server.client.rank(...)`."""

    def __init__(self, model_dir: Path, *flags: str, binary: Path = RANKER_SERVER, start_timeout_s: float = 180.0,
                 cores: list[int] | None = None, port: int = 0):
        """`cores`: run the server on these CPU cores only (taskset); None: wherever the system puts it.
        `port`: the gRPC port (0: a free one), fixed where clients must find a restarted server again."""
        if not binary.exists():
            raise FileNotFoundError(f"{binary} does not exist: run `make ranker` first")
        prefix = ["taskset", "-c", ",".join(map(str, cores))] if cores else []
        self.proc = subprocess.Popen([*prefix, str(binary), "--model", str(model_dir), "--port", str(port), "--http-port", "0",
                                      *flags],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        self._stderr: list[str] = []
        self._listening = threading.Event()
        self.grpc_address = self.http_address = ""
        threading.Thread(target=self._read_stderr, daemon=True).start()
        if not self._listening.wait(start_timeout_s) or not self.grpc_address:  # timed out, or exited first
            self.kill()
            raise RuntimeError(f"ranker_server did not open its ports:\n{self.stderr}")
        self.client = RankerClient(self.grpc_address)
        deadline = time.monotonic() + start_timeout_s
        while self.client.health(SERVICE_NAME) != "SERVING":  # the model loads after the ports open
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(f"ranker_server did not start serving:\n{self.stderr}")
            time.sleep(0.05)

    def _read_stderr(self) -> None:
        for line in self.proc.stderr:
            self._stderr.append(line)
            if m := _LISTENING.search(line):
                self.grpc_address, self.http_address = m.group(1), m.group(2)
                self._listening.set()
        self._listening.set()  # exited: let the waiter see it

    @property
    def stderr(self) -> str:
        return "".join(self._stderr)

    def http_get(self, path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(f"http://{self.http_address}{path}", timeout=10) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()

    def metrics(self) -> dict[str, float]:
        """/metrics as {"name{labels}": value}."""
        status, text = self.http_get("/metrics")
        assert status == 200, text
        return {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
                for line in text.splitlines() if line and not line.startswith("#")}

    def terminate(self, timeout_s: float = 60.0) -> int:
        """SIGTERM, then wait for the exit; the exit status."""
        self.client.close()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=timeout_s)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def __enter__(self) -> "RankerServer":
        return self

    def __exit__(self, *exc) -> None:
        try:
            self.terminate()
        except subprocess.TimeoutExpired:
            self.kill()
