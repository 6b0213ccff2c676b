"""A real one-node Slurm cluster for tests (test process): munged, slurmctld and slurmd started as root in a
temporary folder with their own config, socket, ports, spool and state, and stopped afterwards.

Nothing here touches the system's munge or Slurm set-up: munged gets its own key and socket, and Slurm
finds that socket through ``AuthInfo`` in the private ``slurm.conf`` that ``SLURM_CONF`` points at.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from waiting import wait_for

#: Debian packages that provide the daemons and the client commands.
PACKAGES = ("slurmctld", "slurmd", "slurm-client", "munge")
DAEMONS = ("munged", "slurmctld", "slurmd", "sbatch", "squeue", "scontrol", "scancel")


class ClusterError(RuntimeError):
    """The test cluster could not be started."""


def missing_commands() -> list[str]:
    return [name for name in DAEMONS if not (shutil.which(name) or Path("/usr/sbin", name).exists())]


def _which(name: str) -> str:
    return shutil.which(name) or str(Path("/usr/sbin", name))


def _free_ports(count: int) -> list[int]:
    """``count`` consecutive free TCP ports (Slurm takes a port range for slurmctld)."""
    for _ in range(50):
        with socket.socket() as probe:
            probe.bind(("", 0))
            base = probe.getsockname()[1]
        if base + count > 65535:
            continue
        sockets = []
        try:
            for port in range(base, base + count):
                sock = socket.socket()
                sockets.append(sock)
                sock.bind(("", port))
            return list(range(base, base + count))
        except OSError:
            continue
        finally:
            for sock in sockets:
                sock.close()
    raise ClusterError("no free port range for slurmctld/slurmd")


def _node_resources() -> tuple[int, int]:
    """(CPUs, RealMemory in MB) as slurmd itself reports them (``slurmd -C``)."""
    out = subprocess.run([_which("slurmd"), "-C"], capture_output=True, text=True, check=True).stdout
    values = dict(part.split("=", 1) for part in out.split() if "=" in part)
    return int(values["CPUs"]), int(values["RealMemory"])


@dataclass
class SlurmCluster:
    """A running cluster: ``env`` has ``SLURM_CONF`` set for the client commands."""

    root: Path
    conf: Path
    node: str
    partition: str
    env: dict[str, str]
    processes: dict[str, subprocess.Popen] = field(default_factory=dict)

    def run(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run(list(argv), env=self.env, capture_output=True, text=True, check=check, timeout=60)

    def log(self, daemon: str) -> str:
        try:
            return (self.root / "log" / f"{daemon}.log").read_text(errors="replace")
        except OSError:
            return ""

    def stop(self) -> None:
        """Stop the daemons (SIGTERM, then SIGKILL) and any job processes they left."""
        for name in ("slurmd", "slurmctld", "munged"):
            process = self.processes.pop(name, None)
            if process is None:
                continue
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        # slurmstepd processes run in their own sessions; end the ones that belong to this cluster.
        for pid in _pids_mentioning(str(self.root)):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def _pids_mentioning(text: str) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            environ = (entry / "environ").read_bytes()
        except OSError:
            continue
        if f"SLURM_CONF={text}".encode() in environ:
            pids.append(int(entry.name))
    return pids


def start_cluster(root: Path, *, timeout_s: float = 60.0) -> SlurmCluster:
    """Start munged, slurmctld and slurmd under ``root``; returns once the node takes jobs."""
    if os.geteuid() != 0:
        raise ClusterError("the test cluster runs its daemons as root (SlurmUser=root)")
    root.mkdir(parents=True, exist_ok=True)
    root.chmod(0o755)
    dirs = {name: root / name for name in ("munge", "log", "state", "spool", "run")}
    for path in dirs.values():
        path.mkdir(mode=0o755, exist_ok=True)
    dirs["munge"].chmod(0o700)
    key = dirs["munge"] / "munge.key"
    key.write_bytes(os.urandom(1024))
    key.chmod(0o400)
    sock = dirs["munge"] / "munge.socket"
    node = socket.gethostname().split(".")[0]
    cpus, memory = _node_resources()
    ctld_port, slurmd_port = _free_ports(2)
    partition = "debug"
    conf = root / "slurm.conf"
    conf.write_text(f"""\
ClusterName=llmtuitest
SlurmctldHost={node}
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={sock}
StateSaveLocation={dirs['state']}
SlurmdSpoolDir={dirs['spool']}/slurmd-%n
SlurmctldPidFile={dirs['run']}/slurmctld.pid
SlurmdPidFile={dirs['run']}/slurmd.pid
SlurmctldLogFile={dirs['log']}/slurmctld.log
SlurmdLogFile={dirs['log']}/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
ReturnToService=2
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=2
MinJobAge=300
KillWait=5
OverTimeLimit=0
InactiveLimit=0
Waittime=0
MessageTimeout=20
NodeName={node} CPUs={cpus} RealMemory={memory} State=UNKNOWN
PartitionName={partition} Nodes={node} Default=YES MaxTime=INFINITE State=UP OverSubscribe=FORCE:4
""")
    env = dict(os.environ, SLURM_CONF=str(conf))
    cluster = SlurmCluster(root, conf, node, partition, env)
    try:
        cluster.processes["munged"] = subprocess.Popen(
            [_which("munged"), "--foreground", "--force", f"--socket={sock}", f"--key-file={key}",
             f"--pid-file={dirs['run']}/munged.pid", f"--log-file={dirs['log']}/munged.log",
             f"--seed-file={dirs['munge']}/munged.seed"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=open(dirs["log"] / "munged.err", "wb"),
            start_new_session=True)
        _wait(lambda: sock.exists(), timeout_s, "munged did not create its socket", cluster, "munged")
        cluster.processes["slurmctld"] = subprocess.Popen(
            [_which("slurmctld"), "-D", "-i", "-f", str(conf)], env=env, stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL, stderr=open(dirs["log"] / "slurmctld.err", "wb"), start_new_session=True)
        _wait(lambda: cluster.run("scontrol", "ping", check=False).stdout.count("UP") > 0, timeout_s,
              "slurmctld did not answer", cluster, "slurmctld")
        cluster.processes["slurmd"] = subprocess.Popen(
            [_which("slurmd"), "-D", "-N", node, "-f", str(conf)], env=env, stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL, stderr=open(dirs["log"] / "slurmd.err", "wb"), start_new_session=True)

        def node_idle() -> bool:
            state = cluster.run("sinfo", "-h", "-N", "-o", "%T", check=False).stdout.strip()
            return state.startswith(("idle", "mixed", "allocated"))

        _wait(node_idle, timeout_s, "the node did not become idle", cluster, "slurmd")
    except BaseException:
        cluster.stop()
        raise
    return cluster


def _wait(ready, timeout_s: float, what: str, cluster: SlurmCluster, daemon: str) -> None:
    def died() -> bool:
        process = cluster.processes.get(daemon)
        return process is not None and process.poll() is not None

    try:
        wait_for(ready, timeout_s, what, 0.2, stop=died)
        return
    except AssertionError:
        pass
    err = (cluster.root / "log" / f"{daemon}.err")
    detail = (err.read_text(errors="replace") if err.exists() else "") + cluster.log(daemon)
    raise ClusterError(f"{what}:\n{detail[-3000:]}")
