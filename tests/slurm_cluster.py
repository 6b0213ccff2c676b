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
PACKAGES = ("slurmctld", "slurmd", "slurm-client", "munge", "slurmdbd", "mariadb-server")
DAEMONS = ("munged", "slurmctld", "slurmd", "sbatch", "squeue", "scontrol", "scancel")
#: What the two-node cluster needs besides: accounting (slurmdbd on MariaDB) and the network tools.
ACCOUNTING = ("slurmdbd", "sacct", "sacctmgr", "mariadbd", "mariadb-install-db", "mariadb-admin", "ip", "nsenter",
              "unshare")


class ClusterError(RuntimeError):
    """The test cluster could not be started."""


def missing_commands(*, accounting: bool = False) -> list[str]:
    names = DAEMONS + (ACCOUNTING if accounting else ())
    return [name for name in names if not (shutil.which(name) or Path("/usr/sbin", name).exists())]


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
    #: Every compute node's name (one here; two in :func:`start_two_node_cluster`).
    nodes: list[str] = field(default_factory=list)
    #: Undone in reverse order after the daemons stopped (network namespaces, the bridge).
    teardown: list = field(default_factory=list)

    def run(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run(list(argv), env=self.env, capture_output=True, text=True, check=check, timeout=60)

    def log(self, daemon: str) -> str:
        try:
            return (self.root / "log" / f"{daemon}.log").read_text(errors="replace")
        except OSError:
            return ""

    def stop(self) -> None:
        """Stop the daemons (SIGTERM, then SIGKILL) and any job processes they left."""
        order = [name for name in self.processes if name.startswith("slurmd-")]
        for name in (*order, "slurmctld", "slurmdbd", "mariadbd", "munged"):
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
        while self.teardown:
            self.teardown.pop()()


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


def _prepare(root: Path) -> dict[str, Path]:
    """The cluster's folders under ``root`` and a fresh munge key."""
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
    return dirs


def _slurm_conf(dirs: dict[str, Path], *, controller: str, ctld_port: int, slurmd_port: int, accounting: str,
                nodes: str, partition: str) -> str:
    return f"""\
ClusterName=llmtuitest
SlurmctldHost={controller}
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={dirs['munge'] / 'munge.socket'}
StateSaveLocation={dirs['state']}
SlurmdSpoolDir={dirs['spool']}/slurmd-%n
SlurmctldPidFile={dirs['run']}/slurmctld.pid
SlurmdPidFile={dirs['run']}/slurmd-%n.pid
SlurmctldLogFile={dirs['log']}/slurmctld.log
SlurmdLogFile={dirs['log']}/slurmd-%n.log
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
{accounting}
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
{nodes}
PartitionName={partition} Nodes=ALL Default=YES MaxTime=INFINITE State=UP OverSubscribe=FORCE:4
"""


def _start_munged(cluster: SlurmCluster, dirs: dict[str, Path], timeout_s: float) -> None:
    sock = dirs["munge"] / "munge.socket"
    cluster.processes["munged"] = subprocess.Popen(
        [_which("munged"), "--foreground", "--force", f"--socket={sock}", f"--key-file={dirs['munge'] / 'munge.key'}",
         f"--pid-file={dirs['run']}/munged.pid", f"--log-file={dirs['log']}/munged.log",
         f"--seed-file={dirs['munge']}/munged.seed"],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=open(dirs["log"] / "munged.err", "wb"),
        start_new_session=True)
    _wait(lambda: sock.exists(), timeout_s, "munged did not create its socket", cluster, "munged")


def _start_daemon(cluster: SlurmCluster, name: str, argv: list[str]) -> None:
    cluster.processes[name] = subprocess.Popen(
        argv, env=cluster.env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
        stderr=open(cluster.root / "log" / f"{name}.err", "wb"), start_new_session=True)


def _wait_nodes_idle(cluster: SlurmCluster, timeout_s: float, daemon: str) -> None:
    def idle() -> bool:
        states = cluster.run("sinfo", "-h", "-N", "-o", "%T", check=False).stdout.split()
        return len(states) == len(cluster.nodes) and all(
            state.startswith(("idle", "mixed", "allocated")) for state in states)

    _wait(idle, timeout_s, "the nodes did not become idle", cluster, daemon)


def start_cluster(root: Path, *, timeout_s: float = 60.0) -> SlurmCluster:
    """Start munged, slurmctld and slurmd under ``root``; returns once the node takes jobs. No accounting
    daemon: finished jobs are read from their exit files once Slurm forgets them."""
    dirs = _prepare(root)
    node = socket.gethostname().split(".")[0]
    cpus, memory = _node_resources()
    ctld_port, slurmd_port = _free_ports(2)
    partition = "debug"
    conf = root / "slurm.conf"
    conf.write_text(_slurm_conf(
        dirs, controller=node, ctld_port=ctld_port, slurmd_port=slurmd_port, partition=partition,
        accounting="JobAcctGatherType=jobacct_gather/none\nAccountingStorageType=accounting_storage/none",
        nodes=f"NodeName={node} CPUs={cpus} RealMemory={memory} State=UNKNOWN"))
    env = dict(os.environ, SLURM_CONF=str(conf))
    cluster = SlurmCluster(root, conf, node, partition, env, nodes=[node])
    try:
        _start_munged(cluster, dirs, timeout_s)
        _start_daemon(cluster, "slurmctld", [_which("slurmctld"), "-D", "-i", "-f", str(conf)])
        _wait(lambda: cluster.run("scontrol", "ping", check=False).stdout.count("UP") > 0, timeout_s,
              "slurmctld did not answer", cluster, "slurmctld")
        _start_daemon(cluster, f"slurmd-{node}", [_which("slurmd"), "-D", "-N", node, "-f", str(conf)])
        _wait_nodes_idle(cluster, timeout_s, f"slurmd-{node}")
    except BaseException:
        cluster.stop()
        raise
    return cluster


# ------------------------------------------------------------------------------------------ two nodes

#: The compute nodes' names in the two-node cluster; the first hosts a multi-node job's rendezvous.
NODE_NAMES = ("node1", "node2")
#: Their network interface inside each namespace (the same name in both, as on a real cluster's nodes).
NODE_IFACE = "llmtui0"


def _ip(*argv: str) -> None:
    result = subprocess.run(["ip", *argv], capture_output=True, text=True)
    if result.returncode != 0:
        raise ClusterError(f"ip {' '.join(argv)}: {result.stderr.strip()}")


def _network(cluster: SlurmCluster, tag: str, subnet: str) -> dict[str, str]:
    """A bridge on this machine (``{subnet}.1``) and one network namespace per node (``{subnet}.2``, ``.3``)
    joined to it by a veth pair. The namespaces have no default route: nothing in them reaches beyond the
    bridge (the hub is unreachable there, as on compute nodes without network). Writes ``root/hosts`` naming
    the nodes, which each node sees as its ``/etc/hosts`` (as a cluster's DNS would answer). Returns node
    name → namespace."""
    bridge = f"ltbr{tag}"
    _ip("link", "add", bridge, "type", "bridge")
    cluster.teardown.append(lambda: subprocess.run(["ip", "link", "del", bridge], capture_output=True))
    _ip("addr", "add", f"{subnet}.1/24", "dev", bridge)
    _ip("link", "set", bridge, "up")
    controller = socket.gethostname().split(".")[0]
    hosts = ["127.0.0.1 localhost", f"{subnet}.1 {controller}"]
    hosts += [f"{subnet}.{index + 2} {name}" for index, name in enumerate(NODE_NAMES)]
    namespaces = {}
    for index, name in enumerate(NODE_NAMES):
        ns = f"llmtui-{tag}-{name}"
        _ip("netns", "add", ns)
        cluster.teardown.append(lambda ns=ns: subprocess.run(["ip", "netns", "del", ns], capture_output=True))
        veth = f"ltv{tag}{index}"
        _ip("link", "add", veth, "type", "veth", "peer", "name", NODE_IFACE, "netns", ns)
        _ip("link", "set", veth, "master", bridge, "up")
        _ip("-n", ns, "addr", "add", f"{subnet}.{index + 2}/24", "dev", NODE_IFACE)
        _ip("-n", ns, "link", "set", NODE_IFACE, "up")
        _ip("-n", ns, "link", "set", "lo", "up")
        namespaces[name] = ns
    (cluster.root / "hosts").write_text("\n".join(hosts) + "\n")
    return namespaces


def _start_mariadb(cluster: SlurmCluster, port: int, timeout_s: float) -> None:
    """A private MariaDB (Debian's ``mariadb-server``) in ``root/mysql``, on 127.0.0.1:``port`` only."""
    data, run = cluster.root / "mysql", cluster.root / "run"
    sock = run / "mysqld.sock"
    install = subprocess.run(["mariadb-install-db", "--no-defaults", f"--datadir={data}", "--user=root",
                              "--auth-root-authentication-method=normal", "--skip-test-db"],
                             capture_output=True, text=True, timeout=300)
    if install.returncode != 0:
        raise ClusterError(f"mariadb-install-db failed: {(install.stderr or install.stdout)[-2000:]}")
    _start_daemon(cluster, "mariadbd", [
        _which("mariadbd"), "--no-defaults", f"--datadir={data}", f"--socket={sock}", f"--port={port}",
        "--bind-address=127.0.0.1", "--user=root", f"--pid-file={run}/mariadbd.pid",
        f"--log-error={cluster.root / 'log' / 'mariadbd.log'}", "--innodb-buffer-pool-size=32M",
        "--innodb-log-file-size=16M", "--performance-schema=off", "--skip-log-bin"])

    def answers() -> bool:
        return subprocess.run(["mariadb-admin", "--no-defaults", f"--socket={sock}", "-uroot", "ping"],
                              capture_output=True).returncode == 0

    _wait(answers, timeout_s, "MariaDB did not answer", cluster, "mariadbd")


def start_two_node_cluster(root: Path, *, timeout_s: float = 90.0) -> SlurmCluster:
    """Two compute nodes, each a ``slurmd`` in its own network namespace with its own address, plus
    ``slurmctld`` and ``slurmdbd`` (accounting in a private MariaDB) on this machine; everything on private
    ports and addresses, stopped and removed by :meth:`SlurmCluster.stop`.

    Network namespaces, not Slurm's multiple-slurmd mode: Debian builds Slurm without
    ``--enable-multiple-slurmd``, and namespaces also give each node its own address, hostname and
    ``/etc/hosts`` as on a real cluster (a torchrun rendezvous between them crosses a real network).
    """
    dirs = _prepare(root)
    tag = f"{os.getpid() % 100000}"
    subnet = f"10.213.{os.getpid() % 250 + 1}"
    controller = socket.gethostname().split(".")[0]
    cpus, memory = _node_resources()
    ctld_port, slurmd_port, dbd_port, db_port = _free_ports(4)
    partition = "debug"
    conf = root / "slurm.conf"
    accounting = "\n".join([
        "JobAcctGatherType=jobacct_gather/linux", "JobAcctGatherFrequency=task=1",
        "AccountingStorageType=accounting_storage/slurmdbd", f"AccountingStorageHost={subnet}.1",
        f"AccountingStoragePort={dbd_port}",
        # The munge socket for talking to slurmdbd (Slurm does not take AuthInfo's for that connection).
        f"AccountingStoragePass={dirs['munge'] / 'munge.socket'}"])
    nodes = "\n".join(f"NodeName={name} NodeHostname={name} NodeAddr={subnet}.{index + 2} CPUs={cpus} "
                      f"RealMemory={memory // 2} State=UNKNOWN" for index, name in enumerate(NODE_NAMES))
    conf.write_text(_slurm_conf(dirs, controller=f"{controller}({subnet}.1)", ctld_port=ctld_port,
                                slurmd_port=slurmd_port, accounting=accounting, nodes=nodes, partition=partition))
    dbd_conf = root / "slurmdbd.conf"  # slurmdbd reads it from SLURM_CONF's folder; root-only, it has the DB login
    dbd_conf.write_text(f"""\
AuthType=auth/munge
AuthInfo=socket={dirs['munge'] / 'munge.socket'}
DbdHost=localhost
DbdPort={dbd_port}
SlurmUser=root
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort={db_port}
StorageUser=root
StorageLoc=llmtui_acct
LogFile={dirs['log']}/slurmdbd.log
PidFile={dirs['run']}/slurmdbd.pid
DebugLevel=info
""")
    dbd_conf.chmod(0o600)
    env = dict(os.environ, SLURM_CONF=str(conf))
    cluster = SlurmCluster(root, conf, NODE_NAMES[0], partition, env, nodes=list(NODE_NAMES))
    try:
        namespaces = _network(cluster, tag, subnet)
        _start_munged(cluster, dirs, timeout_s)
        _start_mariadb(cluster, db_port, timeout_s)
        _start_daemon(cluster, "slurmdbd", [_which("slurmdbd"), "-D"])
        _wait(lambda: cluster.run("sacctmgr", "-n", "list", "cluster", check=False).returncode == 0, timeout_s,
              "slurmdbd did not answer", cluster, "slurmdbd")
        cluster.run("sacctmgr", "-i", "add", "cluster", "llmtuitest")
        _start_daemon(cluster, "slurmctld", [_which("slurmctld"), "-D", "-i", "-f", str(conf)])
        _wait(lambda: cluster.run("scontrol", "ping", check=False).stdout.count("UP") > 0, timeout_s,
              "slurmctld did not answer", cluster, "slurmctld")
        for name, ns in namespaces.items():
            # Its network namespace (nsenter, not `ip netns exec`, which would remount /sys without the
            # cgroup file systems slurmd needs), its own hostname (a UTS namespace: the node knows itself by
            # its name, as torchrun's rendezvous host must) and the cluster's hosts file (a mount namespace).
            _start_daemon(cluster, f"slurmd-{name}", [
                "nsenter", f"--net=/run/netns/{ns}", "unshare", "--uts", "--mount", "--propagation", "private",
                "sh", "-c", f"mount --bind {root / 'hosts'} /etc/hosts && hostname {name} && "
                f"exec {_which('slurmd')} -D -N {name} -f {conf}"])
        _wait_nodes_idle(cluster, timeout_s, f"slurmd-{NODE_NAMES[0]}")
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
