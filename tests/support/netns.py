"""A second "host" for a worker: a Linux network namespace joined to this one by a veth pair.

Inside the namespace, 127.0.0.1:<port> for each forwarded port is a socat listener that crosses the veth
to a socat on the host side, which connects to the real service on the host's 127.0.0.1:<port>. So a worker
started in the namespace keeps the same Redis, database and callback URLs, yet every byte it exchanges
with them goes over its own network stack and the veth link. Needs root, iproute2 and socat.
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field

from tests.support.services import free_port


def _run(*argv: str) -> None:
    subprocess.run(argv, check=True, capture_output=True, timeout=30)


def netns_unavailable_reason() -> str | None:
    if os.geteuid() != 0:
        return "network namespaces need root"
    for tool in ("ip", "socat"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed"
    probe = f"modprobe-{secrets.token_hex(3)}"
    try:
        _run("ip", "netns", "add", probe)
    except (subprocess.SubprocessError, OSError) as error:
        return f"ip netns does not work here: {error}"
    _run("ip", "netns", "del", probe)
    return None


@dataclass
class NetworkNamespace:
    ports: list[int]
    name: str = field(default_factory=lambda: f"modtest-{secrets.token_hex(3)}")
    forwarders: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def __post_init__(self) -> None:
        suffix = self.name.rsplit("-", 1)[1]
        self.host_if, self.ns_if = f"vh{suffix}", f"vn{suffix}"
        octet = secrets.randbelow(60) * 4
        third = 200 + secrets.randbelow(50)
        self.host_ip, self.ns_ip = f"10.213.{third}.{octet + 1}", f"10.213.{third}.{octet + 2}"

    def exec_argv(self, argv: list[str]) -> list[str]:
        return ["ip", "netns", "exec", self.name, *argv]

    def start(self) -> NetworkNamespace:
        _run("ip", "netns", "add", self.name)
        try:
            _run(*self.exec_argv(["ip", "link", "set", "lo", "up"]))
            _run("ip", "link", "add", self.host_if, "type", "veth", "peer", "name", self.ns_if)
            _run("ip", "link", "set", self.ns_if, "netns", self.name)
            _run("ip", "addr", "add", f"{self.host_ip}/30", "dev", self.host_if)
            _run("ip", "link", "set", self.host_if, "up")
            _run(*self.exec_argv(["ip", "addr", "add", f"{self.ns_ip}/30", "dev", self.ns_if]))
            _run(*self.exec_argv(["ip", "link", "set", self.ns_if, "up"]))
            for port in self.ports:
                relay = free_port()
                listen = f"TCP-LISTEN:{relay},bind={self.host_ip},reuseaddr,fork"
                self._forward(["socat", listen, f"TCP:127.0.0.1:{port}"])
                self._wait_listening(self.host_ip, relay)
                self._forward(
                    self.exec_argv(
                        ["socat", f"TCP-LISTEN:{port},bind=127.0.0.1,reuseaddr,fork", f"TCP:{self.host_ip}:{relay}"]
                    )
                )
        except BaseException:
            self.stop()
            raise
        return self

    def _forward(self, argv: list[str]) -> None:
        self.forwarders.append(
            subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        )

    @staticmethod
    def _wait_listening(host: str, port: int, timeout: float = 10) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with socket.create_connection((host, port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"socat did not listen on {host}:{port}")

    def stop(self) -> None:
        for forwarder in self.forwarders:
            if forwarder.poll() is None:
                forwarder.terminate()
                try:
                    forwarder.wait(5)
                except subprocess.TimeoutExpired:
                    forwarder.kill()
                    forwarder.wait(5)
        self.forwarders.clear()
        subprocess.run(["ip", "link", "del", self.host_if], capture_output=True, timeout=30, check=False)
        subprocess.run(["ip", "netns", "del", self.name], capture_output=True, timeout=30, check=False)


def network_namespace_of(pid: int) -> str:
    return os.readlink(f"/proc/{pid}/ns/net")
