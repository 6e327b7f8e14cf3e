"""A real, throw-away Kubernetes control plane for tests: etcd + kube-apiserver (+ optionally
kube-controller-manager), all on 127.0.0.1 with random free ports, in a temporary directory.

Usage (pytest)::

    from tests.support.kube import kube_cluster

    @pytest.fixture(scope="session")
    def kube():
        with kube_cluster() as k:          # with_controller_manager=True for GC, SA tokens, Jobs
            yield k

    def test_x(kube):
        kube.kubectl("apply", "-f", "crd.yaml")
        out = kube.kubectl("get", "ns", "-o", "name").stdout

The yielded :class:`KubeCluster` has ``kubeconfig`` (path), ``server`` (URL), ``token`` (static
admin bearer token, group system:masters), ``ca_file``, ``workdir``, ``env()`` (os.environ plus
KUBECONFIG), and ``kubectl(*args, check=True, input=None, timeout=60)``.

Binaries: kube-apiserver / kube-controller-manager come from ``cluster/build-k8s.sh`` (built on
demand, cached in ``${KERASOP_CACHE:-~/.cache/kerasop}/k8s/<version>/bin``); kubectl from
``cluster/get-tools.sh``; etcd from Debian's ``etcd-server`` (or ``$KERASOP_ETCD``).

Environment knobs: ``KERASOP_KEEP_CLUSTER=1`` keeps the temp dir (logs, certs) after teardown;
``KERASOP_KUBE_TMP`` chooses the parent of the temp dir (default: /dev/shm when writable, so
etcd's fsyncs are cheap).

Limits of the apiserver-only tier (``with_controller_manager=False``): no garbage collection of
owner-referenced objects, no namespace deletion finalisation, no ``default`` ServiceAccount
(pods cannot be created), no Job/Deployment controllers. No scheduler or kubelet in any tier.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
CLUSTER_DIR = REPO_ROOT / "cluster"
CACHE = Path(os.environ.get("KERASOP_CACHE", Path.home() / ".cache" / "kerasop"))
SERVICE_CIDR = "10.0.0.0/24"
SERVICE_IP = "10.0.0.1"  # first address of SERVICE_CIDR: the "kubernetes" Service


class KubeStartError(RuntimeError):
    pass


# --------------------------------------------------------------------------------------------
# helpers


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, check=True, capture_output=True, text=True, **kw)


def _script_output_dir(script: str, *args: str) -> Path:
    """Run a cluster/ script that prints its bin directory on the last stdout line."""
    proc = subprocess.run(
        ["bash", str(CLUSTER_DIR / script), *args],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PATH": os.environ.get("PATH", "") + ":/usr/local/go/bin"},
    )
    if proc.returncode != 0:
        raise KubeStartError(f"{script} {' '.join(args)} failed (rc={proc.returncode})")
    return Path(proc.stdout.strip().splitlines()[-1])


def k8s_version() -> str:
    """The release cluster/build-k8s.sh builds (KERASOP_K8S_VERSION or the script's default)."""
    if os.environ.get("KERASOP_K8S_VERSION"):
        return os.environ["KERASOP_K8S_VERSION"]
    m = re.search(r"KERASOP_K8S_VERSION:-(v[0-9.]+)", (CLUSTER_DIR / "build-k8s.sh").read_text())
    assert m, "cannot find the default version in cluster/build-k8s.sh"
    return m.group(1)


def k8s_binary(name: str) -> Path:
    """Path of a Kubernetes server binary, building it with cluster/build-k8s.sh if needed."""
    env_dir = os.environ.get("KERASOP_K8S_BIN")
    if env_dir and (Path(env_dir) / name).exists():
        return Path(env_dir) / name
    cached = CACHE / "k8s" / k8s_version() / "bin" / name
    if cached.exists():
        return cached
    path = _script_output_dir("build-k8s.sh", name) / name
    if not path.exists():
        raise KubeStartError(f"{path} missing after build")
    return path


def kubectl_binary() -> Path:
    p = CACHE / "tools" / "bin" / "kubectl"
    if p.exists():
        return p
    try:
        return _script_output_dir("get-tools.sh") / "kubectl"
    except KubeStartError:
        found = shutil.which("kubectl")
        if not found:
            raise
        return Path(found)


def etcd_binary() -> Path:
    found = os.environ.get("KERASOP_ETCD") or shutil.which("etcd") or "/usr/bin/etcd"
    if not Path(found).exists():
        raise KubeStartError("etcd not found: apt-get install etcd-server (or set KERASOP_ETCD)")
    return Path(found)


def _openssl(*args: str, cwd: Path) -> None:
    _run(["openssl", *args], cwd=cwd)


def host_ip() -> str:
    """The address of the default-route interface (no packet is sent), else 127.0.0.1."""
    with contextlib.suppress(OSError), socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.connect(("198.51.100.1", 9))  # TEST-NET-2: only picks a route
        return s.getsockname()[0]
    return "127.0.0.1"


def make_pki(d: Path, extra_ips: tuple[str, ...] = ()) -> None:
    """CAs (cluster, front-proxy), apiserver serving cert, client certs (admin,
    controller-manager, front-proxy-client), service-account key pair. EC P-256 keys (fast to
    generate) except the RSA service-account key."""
    d.mkdir(parents=True, exist_ok=True)

    def eckey(out: str) -> None:
        _openssl(
            "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", out, cwd=d
        )

    for ca in ("ca", "front-proxy-ca"):
        eckey(f"{ca}.key")
        _openssl(
            "req",
            "-x509",
            "-new",
            "-nodes",
            "-key",
            f"{ca}.key",
            "-sha256",
            "-days",
            "3650",
            "-subj",
            f"/CN=kerasop-test-{ca}",
            "-out",
            f"{ca}.crt",
            cwd=d,
        )
    _openssl("genrsa", "-out", "sa.key", "2048", cwd=d)
    _openssl("rsa", "-in", "sa.key", "-pubout", "-out", "sa.pub", cwd=d)

    sans = ",".join(
        [
            "IP:127.0.0.1",
            f"IP:{SERVICE_IP}",
            *(f"IP:{ip}" for ip in extra_ips if ip != "127.0.0.1"),
            "DNS:localhost",
            "DNS:kubernetes",
            "DNS:kubernetes.default",
            "DNS:kubernetes.default.svc",
            "DNS:kubernetes.default.svc.cluster.local",
        ]
    )
    client_ext = "extendedKeyUsage=clientAuth\nkeyUsage=critical,digitalSignature\n"
    certs = {
        # name: (subject, extensions, signing CA)
        "apiserver": (
            "/CN=kube-apiserver",
            f"subjectAltName={sans}\nextendedKeyUsage=serverAuth\n"
            "keyUsage=critical,digitalSignature\n",
            "ca",
        ),
        "admin": ("/O=system:masters/CN=kerasop-admin", client_ext, "ca"),
        "controller-manager": ("/CN=system:kube-controller-manager", client_ext, "ca"),
        "front-proxy-client": ("/CN=front-proxy-client", client_ext, "front-proxy-ca"),
    }
    for name, (subject, ext, ca) in certs.items():
        (d / f"{name}.ext").write_text(ext)
        eckey(f"{name}.key")
        _openssl(
            "req", "-new", "-key", f"{name}.key", "-subj", subject, "-out", f"{name}.csr", cwd=d
        )
        _openssl(
            "x509",
            "-req",
            "-in",
            f"{name}.csr",
            "-CA",
            f"{ca}.crt",
            "-CAkey",
            f"{ca}.key",
            "-CAcreateserial",
            "-days",
            "3650",
            "-sha256",
            "-extfile",
            f"{name}.ext",
            "-out",
            f"{name}.crt",
            cwd=d,
        )


def write_kubeconfig(path: Path, server: str, ca: Path, cert: Path, key: Path, user: str) -> None:
    path.write_text(
        "apiVersion: v1\n"
        "kind: Config\n"
        "clusters:\n"
        "- name: kerasop-test\n"
        "  cluster:\n"
        f"    server: {server}\n"
        f"    certificate-authority: {ca}\n"
        "users:\n"
        f"- name: {user}\n"
        "  user:\n"
        f"    client-certificate: {cert}\n"
        f"    client-key: {key}\n"
        "contexts:\n"
        "- name: kerasop-test\n"
        "  context:\n"
        "    cluster: kerasop-test\n"
        f"    user: {user}\n"
        "current-context: kerasop-test\n"
    )


# --------------------------------------------------------------------------------------------


@dataclass
class _Proc:
    name: str
    popen: subprocess.Popen
    log: Path


@dataclass
class KubeCluster:
    with_controller_manager: bool = False
    startup_timeout: float = 180.0
    # The apiserver listens on bind_address. It advertises advertise_address (default: this
    # host's default-route IP) in the "kubernetes" Service's endpoints, which reject loopback.
    bind_address: str = "127.0.0.1"
    advertise_address: str | None = None
    workdir: Path = field(init=False)
    kubeconfig: Path = field(init=False)
    server: str = field(init=False)
    token: str = field(init=False)
    ca_file: Path = field(init=False)
    etcd_url: str = field(init=False)
    _procs: list[_Proc] = field(default_factory=list, init=False)
    _kubectl: Path | None = field(default=None, init=False)

    # ---- public API ------------------------------------------------------------------------

    def env(self) -> dict[str, str]:
        return {**os.environ, "KUBECONFIG": str(self.kubeconfig)}

    def kubectl(
        self, *args: str, check: bool = True, input: str | None = None, timeout: float = 60
    ) -> subprocess.CompletedProcess:
        """Run kubectl against this cluster; returns CompletedProcess (text stdout/stderr)."""
        if self._kubectl is None:
            self._kubectl = kubectl_binary()
        proc = subprocess.run(
            [str(self._kubectl), "--kubeconfig", str(self.kubeconfig), *args],
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if check and proc.returncode != 0:
            error = subprocess.CalledProcessError(
                proc.returncode, proc.args, proc.stdout, proc.stderr
            )
            error.add_note(f"kubectl said: {proc.stderr.strip() or proc.stdout.strip()}")
            raise error
        return proc

    def wait_for_crds(self, names: tuple[str, ...], timeout: float = 180) -> None:
        """Established, and served by discovery (kubectl explain/create need both).

        Polled rather than ``kubectl wait``: that fails at once ("accessor error") on a
        CRD whose status has no conditions yet, which a loaded machine shows.
        """
        established = '{.status.conditions[?(@.type=="Established")].status}'
        deadline = time.monotonic() + timeout
        pending = list(names)
        out = ""
        while time.monotonic() < deadline:
            pending = [
                n
                for n in pending
                if self.kubectl(
                    "get", "crd", n, "-o", f"jsonpath={established}", check=False
                ).stdout.strip()
                != "True"
            ]
            if not pending:
                out = self.kubectl("api-resources", "-o", "name", check=False).stdout
                if all(n in out for n in names):
                    return
            time.sleep(0.5)
        raise AssertionError(
            f"CRDs not established and discoverable after {timeout}s: "
            f"not established {pending}, discovery {out!r}"
        )

    def logs(self, name: str, tail: int = 50) -> str:
        for p in self._procs:
            if p.name == name and p.log.exists():
                return "\n".join(p.log.read_text(errors="replace").splitlines()[-tail:])
        return ""

    # ---- lifecycle -------------------------------------------------------------------------

    def start(self) -> KubeCluster:
        # Resolve binaries first (may build kube-apiserver: minutes on a cold cache).
        apiserver = k8s_binary("kube-apiserver")
        cm = k8s_binary("kube-controller-manager") if self.with_controller_manager else None
        etcd = etcd_binary()
        self._kubectl = kubectl_binary()

        parent = os.environ.get("KERASOP_KUBE_TMP")
        if not parent and os.access("/dev/shm", os.W_OK):
            parent = "/dev/shm"
        self.workdir = Path(tempfile.mkdtemp(prefix="kerasop-kube-", dir=parent))
        try:
            self._start(apiserver, cm, etcd)
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self, apiserver: Path, cm: Path | None, etcd: Path) -> None:
        w = self.workdir
        pki = w / "pki"
        if not self.advertise_address:
            self.advertise_address = host_ip()
        make_pki(pki, (self.advertise_address,))
        self.ca_file = pki / "ca.crt"

        # etcd -----------------------------------------------------------------------------
        client_port, peer_port = free_port(), free_port()
        self.etcd_url = f"http://127.0.0.1:{client_port}"
        peer_url = f"http://127.0.0.1:{peer_port}"
        self._spawn(
            "etcd",
            [
                str(etcd),
                "--name",
                "kerasop",
                "--data-dir",
                str(w / "etcd"),
                "--listen-client-urls",
                self.etcd_url,
                "--advertise-client-urls",
                self.etcd_url,
                "--listen-peer-urls",
                peer_url,
                "--initial-advertise-peer-urls",
                peer_url,
                "--initial-cluster",
                f"kerasop={peer_url}",
                "--initial-cluster-state",
                "new",
                "--logger",
                "zap",
                "--log-level",
                "warn",
                "--quota-backend-bytes",
                str(4 * 1024**3),
            ],
        )
        self._wait("etcd", lambda: _http_ok(f"{self.etcd_url}/health"), 30)

        # kube-apiserver -------------------------------------------------------------------
        port = free_port()
        host = "127.0.0.1" if self.bind_address in ("0.0.0.0", "127.0.0.1") else self.bind_address
        self.server = f"https://{host}:{port}"
        self.token = uuid.uuid4().hex
        tokens = w / "tokens.csv"
        tokens.write_text(
            f'{self.token},kerasop-admin-token,kerasop-admin-token,"system:masters"\n'
        )
        self._spawn(
            "kube-apiserver",
            [
                str(apiserver),
                f"--etcd-servers={self.etcd_url}",
                f"--bind-address={self.bind_address}",
                f"--advertise-address={self.advertise_address}",
                f"--secure-port={port}",
                f"--cert-dir={w / 'apiserver-certs'}",
                f"--tls-cert-file={pki / 'apiserver.crt'}",
                f"--tls-private-key-file={pki / 'apiserver.key'}",
                f"--client-ca-file={pki / 'ca.crt'}",
                f"--token-auth-file={tokens}",
                f"--service-account-key-file={pki / 'sa.pub'}",
                f"--service-account-signing-key-file={pki / 'sa.key'}",
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                "--authorization-mode=RBAC",
                "--allow-privileged=true",
                # Front proxy (aggregated APIs) and the requestheader CA that controllers read.
                f"--requestheader-client-ca-file={pki / 'front-proxy-ca.crt'}",
                "--requestheader-allowed-names=front-proxy-client",
                "--requestheader-username-headers=X-Remote-User",
                "--requestheader-group-headers=X-Remote-Group",
                "--requestheader-extra-headers-prefix=X-Remote-Extra-",
                f"--proxy-client-cert-file={pki / 'front-proxy-client.crt'}",
                f"--proxy-client-key-file={pki / 'front-proxy-client.key'}",
                "--profiling=false",
                "--v=1",
            ],
        )
        ctx = ssl.create_default_context(cafile=str(self.ca_file))
        ctx.load_cert_chain(str(pki / "admin.crt"), str(pki / "admin.key"))
        self._wait(
            "kube-apiserver", lambda: _http_ok(f"{self.server}/readyz", ctx), self.startup_timeout
        )

        self.kubeconfig = w / "admin.kubeconfig"
        write_kubeconfig(
            self.kubeconfig,
            self.server,
            self.ca_file,
            pki / "admin.crt",
            pki / "admin.key",
            "kerasop-admin",
        )

        # kube-controller-manager (optional) ------------------------------------------------
        if cm is not None:
            cm_kc = w / "controller-manager.kubeconfig"
            write_kubeconfig(
                cm_kc,
                self.server,
                self.ca_file,
                pki / "controller-manager.crt",
                pki / "controller-manager.key",
                "system:kube-controller-manager",
            )
            cm_port = free_port()
            self._spawn(
                "kube-controller-manager",
                [
                    str(cm),
                    f"--kubeconfig={cm_kc}",
                    f"--authentication-kubeconfig={cm_kc}",
                    f"--authorization-kubeconfig={cm_kc}",
                    "--bind-address=127.0.0.1",
                    f"--secure-port={cm_port}",
                    f"--cert-dir={w / 'cm-certs'}",
                    f"--service-account-private-key-file={pki / 'sa.key'}",
                    f"--root-ca-file={pki / 'ca.crt'}",
                    f"--cluster-signing-cert-file={pki / 'ca.crt'}",
                    f"--cluster-signing-key-file={pki / 'ca.key'}",
                    "--use-service-account-credentials=true",
                    f"--service-cluster-ip-range={SERVICE_CIDR}",
                    "--leader-elect=false",
                    "--controllers=*",
                    "--v=1",
                ],
            )
            cm_ctx = ssl.create_default_context()
            cm_ctx.check_hostname = False
            cm_ctx.verify_mode = ssl.CERT_NONE
            self._wait(
                "kube-controller-manager",
                lambda: _http_ok(f"https://127.0.0.1:{cm_port}/healthz", cm_ctx),
                60,
            )
            # The serviceaccount controller creates "default" in each namespace; wait for it so
            # that pods can be created right away.
            self._wait(
                "kube-controller-manager",
                lambda: (
                    self.kubectl(
                        "-n", "default", "get", "serviceaccount", "default", check=False
                    ).returncode
                    == 0
                ),
                60,
            )

    def stop(self) -> None:
        # Reverse start order, one at a time, so the apiserver never outlives etcd.
        for p in reversed(self._procs):
            if p.popen.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(p.popen.pid, signal.SIGTERM)
                try:
                    p.popen.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(p.popen.pid, signal.SIGKILL)
                    p.popen.wait(timeout=10)
        self._procs.clear()
        wd = getattr(self, "workdir", None)
        if wd is not None and wd.exists():
            if os.environ.get("KERASOP_KEEP_CLUSTER") == "1":
                print(f"[kube] kept {wd}")
            else:
                shutil.rmtree(wd, ignore_errors=True)

    # ---- internals -------------------------------------------------------------------------

    def _spawn(self, name: str, cmd: list[str]) -> None:
        log = self.workdir / f"{name}.log"
        with open(log, "wb") as f:
            popen = subprocess.Popen(
                cmd,
                stdout=f,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        self._procs.append(_Proc(name, popen, log))

    def _wait(self, name: str, probe, timeout: float) -> None:
        proc = next(p for p in self._procs if p.name == name)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.popen.poll() is not None:
                raise KubeStartError(
                    f"{name} exited with {proc.popen.returncode}:\n{self.logs(name)}"
                )
            try:
                if probe():
                    return
            except Exception:
                pass
            time.sleep(0.25)
        raise KubeStartError(f"{name} not ready after {timeout}s:\n{self.logs(name)}")


def _http_ok(url: str, ctx: ssl.SSLContext | None = None) -> bool:
    try:
        with urllib.request.urlopen(url, context=ctx, timeout=3) as r:
            return r.status == 200
    except (urllib.error.URLError, OSError):
        return False


@contextlib.contextmanager
def kube_cluster(
    *,
    with_controller_manager: bool = False,
    startup_timeout: float = 180.0,
    bind_address: str = "127.0.0.1",
    advertise_address: str | None = None,
) -> Iterator[KubeCluster]:
    """Start etcd + kube-apiserver (+ controller-manager); yield a KubeCluster; tear down."""
    cluster = KubeCluster(
        with_controller_manager=with_controller_manager,
        startup_timeout=startup_timeout,
        bind_address=bind_address,
        advertise_address=advertise_address,
    )
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()
