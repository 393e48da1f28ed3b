"""``nst launch``: run a ``dist_sync`` job's processes on this machine.

MXNet's parameter-server training has three roles, chosen by environment
variables that every process reads when it imports ``mxnet``:

- one *scheduler* (``DMLC_ROLE=scheduler``), which the others contact at
  ``DMLC_PS_ROOT_URI:DMLC_PS_ROOT_PORT``;
- ``DMLC_NUM_SERVER`` *servers* (``DMLC_ROLE=server``), which hold the
  parameters and sum the workers' gradients;
- ``DMLC_NUM_WORKER`` *workers* (``DMLC_ROLE=worker``), each running the
  training command with ``--kvstore dist_sync``.

``nst launch -n 2 -s 1 -- nst train CONFIG --kvstore dist_sync`` starts the
scheduler, the servers and the workers as local processes on loopback and
waits for the workers.  On several machines, start the same processes by hand
(or with MXNet's ``tools/launch.py`` over ssh) with ``DMLC_PS_ROOT_URI`` set to
the scheduler machine's address; see docs/training.md, "Several machines".
"""

import os
import socket
import subprocess
import sys
import time

from nst.errors import NSTError

SERVER_CODE = "import nst.compat, mxnet"  # importing mxnet with DMLC_ROLE=server/scheduler serves


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def role_env(role, workers, servers, port, host="127.0.0.1", base=None):
    env = dict(os.environ if base is None else base)
    env.update({"DMLC_ROLE": role, "DMLC_PS_ROOT_URI": host, "DMLC_PS_ROOT_PORT": str(port),
                "DMLC_NUM_SERVER": str(servers), "DMLC_NUM_WORKER": str(workers),
                "DMLC_INTERFACE": "lo", "PS_VERBOSE": env.get("PS_VERBOSE", "0")})
    if role == "worker":
        env.setdefault("OMP_NUM_THREADS", "1")
    return env


def launch(command, workers=2, servers=1, port=None, timeout=None, log_dir=None, env=None):
    """Run ``command`` (a list) as ``workers`` dist_sync workers; returns exit codes."""
    if workers < 1 or servers < 1:
        raise NSTError("nst launch needs at least one worker and one server")
    if not command:
        raise NSTError("nst launch needs the worker command after --, e.g. "
                       "nst launch -n 2 -- nst train CONFIG --kvstore dist_sync")
    port = port or free_port()
    procs = []

    def start(role, cmd, index):
        out = None
        if log_dir:
            os.makedirs(log_dir, exist_ok=True)
            out = open(os.path.join(log_dir, "%s%d.log" % (role, index)), "w")
        proc = subprocess.Popen(cmd, env=role_env(role, workers, servers, port, base=env),
                                stdout=out, stderr=subprocess.STDOUT if out else None)
        procs.append((role, proc, out))
        return proc

    start("scheduler", [sys.executable, "-c", SERVER_CODE], 0)
    for i in range(servers):
        start("server", [sys.executable, "-c", SERVER_CODE], i)
    worker_procs = [start("worker", list(command), i) for i in range(workers)]
    deadline = None if timeout is None else time.time() + timeout
    codes = []
    try:
        for proc in worker_procs:
            remaining = None if deadline is None else max(1.0, deadline - time.time())
            codes.append(proc.wait(timeout=remaining))
        # the scheduler and servers exit once every worker has finalised
        for role, proc, _ in procs:
            if role != "worker":
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()
    except subprocess.TimeoutExpired:
        raise NSTError("dist_sync workers did not finish within %s s" % timeout) from None
    finally:
        for _, proc, out in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            if out:
                out.close()
    return codes


def add_arguments(parser):
    parser.add_argument("-n", "--workers", type=int, default=2, help="number of workers")
    parser.add_argument("-s", "--servers", type=int, default=1, help="number of servers")
    parser.add_argument("--port", type=int, default=None, help="scheduler port (default: free)")
    parser.add_argument("--log-dir", default=None, help="write each process's output here")
    parser.add_argument("command", nargs="+",
                        help="worker command after --, e.g. -- nst train CONFIG --kvstore dist_sync")


def run(args):
    command = [c for c in args.command if c != "--"]
    codes = launch(command, args.workers, args.servers, args.port, log_dir=args.log_dir)
    bad = [i for i, c in enumerate(codes) if c != 0]
    if bad:
        raise NSTError("worker(s) %s exited with %s" % (bad, [codes[i] for i in bad]))
    return 0
