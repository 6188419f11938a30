"""pgserver.py - a real PostgreSQL server and "other hosts" for the tests of studies shared
through PostgreSQL (test_study_pg.py, test_tune_pg.py): initdb + pg_ctl from Debian's
postgresql (as the postgres user when the test runs as root), and network namespaces made by
the test (ip netns, a veth pair each: 10.231.K.2 there, 10.231.K.1 here) whose processes reach
the server over that link only. start() falls back to workers on this host where namespaces
cannot be made (not root, a container without CAP_NET_ADMIN) and says so.
"""
import os
import pwd
import shutil
import socket
import subprocess

ROOT = os.geteuid() == 0


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def sh(*cmd, user=None, ok=True):
    if user and ROOT:
        cmd = ("runuser", "-u", user, "--") + cmd
    r = subprocess.run(cmd, capture_output=True, text=True)
    if ok and r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)}: exit {r.returncode}: {r.stderr[-500:]}")
    return r


class Server:
    def __init__(self, tmp, hosts):
        self.bindir = sh("pg_config", "--bindir").stdout.strip()
        self.dir = os.path.join(tmp, "pg")
        os.makedirs(self.dir)
        if ROOT:
            pw = pwd.getpwnam("postgres")
            os.chown(tmp, pw.pw_uid, pw.pw_gid)
            os.chown(self.dir, pw.pw_uid, pw.pw_gid)
        self.data = os.path.join(self.dir, "data")
        self.port = free_port()
        sh(os.path.join(self.bindir, "initdb"), "-D", self.data, "-A", "trust", "-U", "lt",
           "--no-sync", "-E", "UTF8", user="postgres")
        with open(os.path.join(self.data, "pg_hba.conf"), "a") as f:
            f.write("host all all 10.231.0.0/16 trust\n")
        listen = ",".join(["127.0.0.1"] + hosts)
        sh(os.path.join(self.bindir, "pg_ctl"), "-D", self.data, "-l",
           os.path.join(self.dir, "log"), "-w", "-t", "60", "-o",
           f"-p {self.port} -k {self.dir} -c listen_addresses='{listen}' -c fsync=off", "start",
           user="postgres")
        sh("psql", "-h", "127.0.0.1", "-p", str(self.port), "-U", "lt", "-d", "postgres", "-c",
           "CREATE DATABASE studies")

    def url(self, host, name):
        return f"postgresql://lt@{host}:{self.port}/studies#{name}"

    def stop(self):
        sh(os.path.join(self.bindir, "pg_ctl"), "-D", self.data, "-m", "immediate", "stop",
           user="postgres", ok=False)


class Hosts:
    """network namespaces, each linked to this host by a veth pair: 10.231.K.2 there,
    10.231.K.1 here"""

    def __init__(self, n):
        self.ns = []
        try:
            self._make(n)
        except RuntimeError:
            self.close()
            raise

    def _make(self, n):
        tag = os.getpid() % 100000
        for k in range(1, n + 1):
            ns, here, there = f"ltw{tag}-{k}", f"lh{tag}{k}", f"ln{tag}{k}"
            sh("ip", "netns", "add", ns)
            self.ns.append((ns, here))
            sh("ip", "link", "add", here, "type", "veth", "peer", "name", there)
            sh("ip", "link", "set", there, "netns", ns)
            sh("ip", "addr", "add", f"10.231.{k}.1/24", "dev", here)
            sh("ip", "link", "set", here, "up")
            sh("ip", "netns", "exec", ns, "ip", "addr", "add", f"10.231.{k}.2/24", "dev", there)
            sh("ip", "netns", "exec", ns, "ip", "link", "set", there, "up")
            sh("ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up")

    def server_addr(self, k):
        return f"10.231.{k}.1"

    def prefix(self, k):
        return ["ip", "netns", "exec", self.ns[k - 1][0]]

    def close(self):
        for ns, here in self.ns:
            sh("ip", "link", "del", here, ok=False)
            sh("ip", "netns", "del", ns, ok=False)



def start(tmp, n_hosts):
    """(server, hosts): the server listening on 127.0.0.1 and, when namespaces can be made,
    on the host side of n_hosts links (hosts None otherwise: say the workers run here)."""
    hosts = None
    if ROOT and shutil.which("ip"):
        try:
            hosts = Hosts(n_hosts)
        except RuntimeError as e:  # a container without CAP_NET_ADMIN / mount rights
            print(f"no network namespaces here ({e}): the workers run on this host")
            hosts = None
    else:
        print("not root: the workers run on this host (network namespaces need root)")
    try:
        srv = Server(tmp, [hosts.server_addr(k) for k in range(1, n_hosts + 1)] if hosts else [])
    except Exception:
        if hosts:
            hosts.close()
        raise
    return srv, hosts

