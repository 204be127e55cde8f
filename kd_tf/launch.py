"""Starts N workers of one command on this machine, for a multi-worker rehearsal on loopback.

    python -m kd_tf.launch --workers=2 -- python run.py --strategy=multi_worker_mirrored --mode=table ...

Each worker is the same command with its own `TF_CONFIG` (a cluster of `N` workers on free 127.0.0.1
ports, worker 0 the chief). Their output is streamed line by line with a `[worker i]` prefix. The launcher
returns the chief's exit code once every worker has ended. Ctrl-C is passed on to every worker (one still
running 10 s later is killed) and the launcher exits 130; rerunning the command resumes. On a real
cluster, start the same command once per host with that host's `TF_CONFIG` instead (BUILD.md).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Sequence


def free_ports(count: int) -> list[int]:
    """`count` distinct TCP ports on 127.0.0.1 that were free a moment ago."""
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def tf_config(ports: Sequence[int], index: int) -> str:
    """The `TF_CONFIG` of worker `index` in a cluster of workers on `ports` of 127.0.0.1."""
    cluster = {"worker": [f"127.0.0.1:{port}" for port in ports]}
    return json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})


def _stream(process: subprocess.Popen, prefix: str, lock: threading.Lock) -> None:
    for line in process.stdout:
        with lock:
            sys.stdout.write(prefix + line)
            sys.stdout.flush()


def launch(command: Sequence[str], workers: int, ports: Sequence[int] | None = None) -> int:
    """Runs `command` as `workers` workers; returns the chief's (worker 0's) exit code."""
    if workers < 1:
        raise ValueError(f"`workers` must be at least 1. Received: workers={workers}")
    ports = list(ports) if ports else free_ports(workers)
    if len(ports) != workers:
        raise ValueError(f"{workers} workers need {workers} ports. Received: ports={ports}")
    lock = threading.Lock()
    processes, streams = [], []
    for index in range(workers):
        environment = {**os.environ, "TF_CONFIG": tf_config(ports, index), "PYTHONUNBUFFERED": "1"}
        process = subprocess.Popen(
            list(command),
            env=environment,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            bufsize=1,
            start_new_session=True,  # Ctrl-C reaches the workers through the launcher only, once each
        )
        processes.append(process)
        stream = threading.Thread(target=_stream, args=(process, f"[worker {index}] ", lock), daemon=True)
        stream.start()
        streams.append(stream)
    try:
        codes = [process.wait() for process in processes]
    except KeyboardInterrupt:
        _stop(processes)
        for stream in streams:
            stream.join()
        print("[launch] Interrupted; run the same command again to resume.", flush=True)
        return 130
    for stream in streams:
        stream.join()
    for index, code in enumerate(codes):
        if code:
            print(f"[launch] worker {index} exited with code {code}.", flush=True)
    return codes[0]


def _stop(processes: Sequence[subprocess.Popen], grace: float = 10.0) -> None:
    """Ctrl-C for every worker; those still running after `grace` seconds (one may be waiting on a
    collective that the others left) are killed. Their checkpoints make the rerun resume."""
    for process in processes:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
    for process in processes:
        try:
            process.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m kd_tf.launch",
        description="Run one command as N workers on free 127.0.0.1 ports, each with its own TF_CONFIG.",
    )
    parser.add_argument("--workers", type=int, default=2, help="number of worker processes (default 2)")
    parser.add_argument(
        "--ports", default="", help="comma-separated ports, one per worker (default: free ones)"
    )
    parser.add_argument("command", nargs=argparse.REMAINDER, help="the command after `--`")
    arguments = parser.parse_args(argv)
    command = arguments.command[1:] if arguments.command[:1] == ["--"] else arguments.command
    if not command:
        parser.error("give the command to run after `--`, e.g. -- python run.py --strategy=...")
    if arguments.workers < 1:
        parser.error(f"--workers must be at least 1. Received: --workers={arguments.workers}")
    ports = [int(port) for port in arguments.ports.split(",") if port.strip()] or None
    if ports is not None and len(ports) != arguments.workers:
        parser.error(f"--ports needs {arguments.workers} ports. Received: --ports={arguments.ports}")
    return launch(command, arguments.workers, ports)


if __name__ == "__main__":
    sys.exit(main())
