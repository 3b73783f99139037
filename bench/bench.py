#!/usr/bin/python3
"""Side-by-side benchmark: the sso-operator broker vs Apache 2.4 with
mod_auth_openidc, both relying parties of the same real OpenID provider
(npm oidc-provider), on one machine, in one run.

Run through bench/run.sh (which installs and builds everything). Writes
bench/results/latest.{md,json,png}.

Scenarios, each with the same load generator (wrk) and concurrency:
  a) login start: the redirect to the IdP with state, nonce, PKCE S256
  b) authenticated request: the broker's forward-auth /oauth/auth with a
     valid session vs Apache serving a protected static page with a valid
     mod_auth_openidc session; plus a bare axum "200 OK" server (ceiling)
     and Apache serving the same page unprotected (for reference)
  c) full login round trips through the OP's login and consent forms
     (browserless, bench_client), split into relying-party and OP time
  d) the realistic path: nginx auth_request to the broker at an
     AccessPolicy's URL, then a static file from nginx; beside nginx
     auth_request to the bare 200 server (this architecture's ceiling)
     and Apache with mod_auth_openidc serving the same file
"""

import argparse
import datetime
import json
import os
import platform
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RELEASE = os.path.join(ROOT, "target", "release")
BIN = os.path.join(RELEASE, "sso-operator")
CLIENT = os.path.join(RELEASE, "examples", "bench_client")
CEILING = os.path.join(RELEASE, "examples", "bench_ceiling")
APACHE_MODULES = "/usr/lib/apache2/modules"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, what, proc=None, timeout=30):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc is not None and proc.poll() is not None:
            sys.exit(f"{what} exited with {proc.returncode} before listening")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.1)
    sys.exit(f"{what} did not listen on {port} within {timeout}s")


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


OPENER = urllib.request.build_opener(NoRedirect)


def probe(url, headers):
    """Status and body of one request, redirects not followed."""
    req = urllib.request.Request(url, headers=headers)
    try:
        with OPENER.open(req, timeout=10) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


# ---------------------------------------------------------------- memory


def rss_kib(pids):
    """(RSS, PSS, anonymous) in KiB summed over pids; vanished pids count 0.
    Anonymous memory (heap, stacks) is what a process allocated itself; the
    rest of its RSS is files mapped in (its executable, libraries), which
    the kernel can drop and read again."""
    rss = pss = anon = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        rss += int(line.split()[1])
            with open(f"/proc/{pid}/smaps_rollup") as f:
                for line in f:
                    if line.startswith("Pss:"):
                        pss += int(line.split()[1])
                    elif line.startswith("Anonymous:"):
                        anon += int(line.split()[1])
        except OSError:
            pass
    return rss, pss, anon


class Sampler:
    """Samples the summed RSS/PSS of a process group every 100 ms."""

    def __init__(self, pids_fn):
        self.pids_fn = pids_fn
        self.peak_rss = self.peak_pss = self.peak_anon = 0
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            rss, pss, anon = rss_kib(self.pids_fn())
            self.peak_rss = max(self.peak_rss, rss)
            self.peak_pss = max(self.peak_pss, pss)
            self.peak_anon = max(self.peak_anon, anon)
            self._stop.wait(0.1)

    def __enter__(self):
        self._t.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join()


def children_of(root_pid):
    """root_pid and all its descendants."""
    out, frontier = [root_pid], [root_pid]
    while frontier:
        pid = frontier.pop()
        try:
            with open(f"/proc/{pid}/task/{pid}/children") as f:
                kids = [int(k) for k in f.read().split()]
        except OSError:
            kids = []
        out.extend(kids)
        frontier.extend(kids)
    return out


# ---------------------------------------------------------------- wrk

LAT = re.compile(r"^\s*(50|75|90|99)%\s+([\d.]+)(us|ms|s)\s*$")


def to_ms(value, unit):
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def wrk(url, headers, args):
    cmd = ["wrk", f"-t{args.threads}", f"-c{args.connections}", f"-d{args.duration}s", "--latency"]
    for h in headers:
        cmd += ["-H", h]
    cmd.append(url)
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    res = {"raw": out}
    for line in out.splitlines():
        m = LAT.match(line)
        if m:
            res[f"p{m.group(1)}_ms"] = to_ms(m.group(2), m.group(3))
        if line.startswith("Requests/sec:"):
            res["rps"] = float(line.split()[1])
        if "Non-2xx or 3xx responses:" in line:
            res["non_2xx_3xx"] = int(line.split(":")[1])
        if line.strip().startswith("Socket errors:"):
            res["socket_errors"] = line.strip()
        m = re.match(r"^\s*(\d+) requests in", line)
        if m:
            res["requests"] = int(m.group(1))
    res.setdefault("non_2xx_3xx", 0)
    return res


# ---------------------------------------------------------------- parts


class Parts:
    def __init__(self, tmp, args):
        self.tmp = tmp
        self.args = args
        self.procs = []
        self.op_port = free_port()
        self.broker_port = free_port()
        self.metrics_port = free_port()
        self.apache_port = free_port()
        self.ceiling_port = free_port()
        self.issuer = f"http://127.0.0.1:{self.op_port}"
        self.broker = f"http://127.0.0.1:{self.broker_port}"
        self.apache = f"http://127.0.0.1:{self.apache_port}"
        self.ceiling = f"http://127.0.0.1:{self.ceiling_port}"
        self.nginx_broker_port = free_port()
        self.nginx_ceiling_port = free_port()

    def spawn(self, cmd, name, **kw):
        log = open(os.path.join(self.tmp, f"{name}.log"), "w")
        p = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, **kw)
        self.procs.append((name, p))
        return p

    def stop(self):
        for name, p in reversed(self.procs):
            try:
                os.killpg(p.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        for name, p in reversed(self.procs):
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)

    def start_op(self):
        clients = [
            {
                "client_id": "broker",
                "client_secret": "broker-secret",
                "redirect_uris": [f"{self.broker}/oauth/callback/bench/op"],
                "post_logout_redirect_uris": [f"{self.broker}/oauth/logged-out"],
                "token_endpoint_auth_method": "client_secret_basic",
                "grant_types": ["authorization_code", "refresh_token"],
                "response_types": ["code"],
            },
            {
                "client_id": "apache",
                "client_secret": "apache-secret",
                "redirect_uris": [f"{self.apache}/protected/redirect_uri"],
                "token_endpoint_auth_method": "client_secret_basic",
                "grant_types": ["authorization_code"],
                "response_types": ["code"],
            },
        ]
        env = dict(os.environ, OP_PORT=str(self.op_port), OP_CLIENTS=json.dumps(clients))
        p = self.spawn(["node", "server.mjs"], "op", cwd=os.path.join(ROOT, "tests", "op"), env=env)
        wait_port(self.op_port, "the OpenID provider", p)

    def start_broker(self):
        manifests = os.path.join(self.tmp, "manifests")
        os.makedirs(manifests, exist_ok=True)
        with open(os.path.join(manifests, "op.yaml"), "w") as f:
            f.write(
                "apiVersion: v1\nkind: Secret\nmetadata: {name: op, namespace: bench}\n"
                "type: sso-operator.dev/client-credentials\n"
                "stringData: {clientSecret: broker-secret}\n---\n"
                "apiVersion: sso-operator.dev/v1alpha1\nkind: IdentityProvider\n"
                "metadata: {name: op, namespace: bench}\n"
                f"spec:\n  issuer: {self.issuer}\n  clientID: broker\n"
                "  clientSecretRef: {name: op, key: clientSecret}\n"
                "  scopes: [openid, email, profile, groups]\n"
                "---\n"
                "apiVersion: sso-operator.dev/v1alpha1\nkind: AccessPolicy\n"
                "metadata: {name: app, namespace: bench}\n"
                "spec:\n  hosts: [127.0.0.1]\n  providers: [{name: op}]\n"
                "  rules: {allow: [{groups: [users]}]}\n"
            )
        config = os.path.join(self.tmp, "providers.json")
        subprocess.run(
            [BIN, "check", "--live", "-f", manifests, "--public-url", self.broker, "--broker-config", config,
             # The OP listens on loopback.
             "--allow-provider-cidrs", "127.0.0.0/8"],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        keys = os.path.join(self.tmp, "session-keys")
        with open(keys, "w") as f:
            f.write(secrets.token_urlsafe(32) + "\n")
        self.broker_proc = self.spawn(
            [
                BIN, "broker",
                "--listen", f"127.0.0.1:{self.broker_port}",
                "--public-url", self.broker,
                "--config-file", config,
                "--session-keys-file", keys,
                "--metrics-addr", f"127.0.0.1:{self.metrics_port}",
                "--allow-provider-cidrs", "127.0.0.0/8",
                # /oauth/auth as before AccessPolicies, so figures compare
                # with earlier runs.
                "--any-provider-auth",
            ],
            "broker",
            env=dict(os.environ, RUST_LOG="warn"),
        )
        wait_port(self.broker_port, "the broker", self.broker_proc)
        deadline = time.time() + 20
        while time.time() < deadline:
            status, _ = probe(f"http://127.0.0.1:{self.metrics_port}/readyz", {})
            if status == 200:
                return
            time.sleep(0.1)
        sys.exit("the broker did not become ready")

    def start_apache(self):
        d = os.path.join(self.tmp, "apache")
        docs = os.path.join(d, "htdocs")
        os.makedirs(os.path.join(docs, "protected"), exist_ok=True)
        os.makedirs(os.path.join(docs, "public"), exist_ok=True)
        page = b"<!doctype html><title>protected</title><p>hello</p>\n"
        for sub in ("protected", "public"):
            with open(os.path.join(docs, sub, "index.html"), "wb") as f:
                f.write(page)
        for root, dirs, files in os.walk(self.tmp):
            os.chmod(root, 0o755)
            for fn in files:
                os.chmod(os.path.join(root, fn), 0o644)
        user = "User www-data\nGroup www-data\n" if os.geteuid() == 0 else ""
        conf = os.path.join(d, "httpd.conf")
        passphrase = secrets.token_hex(16)
        modules = ["mpm_event", "authn_core", "authz_core", "authz_user", "mime"]  # unixd is built in
        loads = "".join(f"LoadModule {m}_module {APACHE_MODULES}/mod_{m}.so\n" for m in modules)
        with open(conf, "w") as f:
            f.write(
                f"""ServerRoot {d}
{loads}LoadModule auth_openidc_module {APACHE_MODULES}/mod_auth_openidc.so
{user}ServerName 127.0.0.1
Listen 127.0.0.1:{self.apache_port}
PidFile {d}/httpd.pid
ErrorLog {d}/error.log
LogLevel warn
DocumentRoot {docs}
TypesConfig /etc/mime.types
# Debian's stock mpm_event sizes drop keep-alive connections under 64
# concurrent clients; these remove that (measured, see PEER-NOTES).
StartServers 3
MinSpareThreads 25
MaxSpareThreads 150
ThreadsPerChild 25
MaxRequestWorkers 150
MaxConnectionsPerChild 0
KeepAlive On
MaxKeepAliveRequests 0
<Directory {docs}>
  Require all granted
</Directory>
OIDCProviderMetadataURL {self.issuer}/.well-known/openid-configuration
OIDCClientID apache
OIDCClientSecret apache-secret
OIDCRedirectURI {self.apache}/protected/redirect_uri
OIDCCryptoPassphrase {passphrase}
OIDCScope "openid email profile groups"
OIDCPKCEMethod S256
OIDCSessionType client-cookie
OIDCSessionInactivityTimeout 3600
OIDCSessionMaxDuration 43200
<Location /protected/>
  AuthType openid-connect
  Require valid-user
</Location>
"""
            )
        self.apache_conf = conf
        self.apache_proc = self.spawn(["/usr/sbin/apache2", "-f", conf, "-DFOREGROUND"], "apache")
        wait_port(self.apache_port, "Apache", self.apache_proc)

    def start_nginx(self):
        """nginx serving a static file behind auth_request: one server asks
        the broker at the AccessPolicy's URL, one the bare 200 server."""
        d = os.path.join(self.tmp, "nginx")
        docs = os.path.join(d, "htdocs")
        os.makedirs(docs, exist_ok=True)
        with open(os.path.join(docs, "index.html"), "wb") as f:
            f.write(b"<!doctype html><title>protected</title><p>hello</p>\n")
        for root, dirs, files in os.walk(d):
            os.chmod(root, 0o755)
            for fn in files:
                os.chmod(os.path.join(root, fn), 0o644)
        user = "user root root;\n" if os.geteuid() == 0 else ""

        def server(port, auth):
            return f"""
  server {{
    listen 127.0.0.1:{port};
    root {docs};
    location = /_auth {{
      internal;
      proxy_pass {auth};
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_pass_request_body off;
      proxy_set_header Content-Length "";
      proxy_set_header X-Forwarded-Host $http_host;
      proxy_set_header X-Forwarded-Uri $request_uri;
      proxy_set_header X-Forwarded-Method "";
    }}
    location / {{
      auth_request /_auth;
      auth_request_set $sso_user $upstream_http_x_auth_request_user;
      add_header X-User $sso_user;
    }}
  }}"""

        conf = os.path.join(d, "nginx.conf")
        with open(conf, "w") as f:
            f.write(f"""{user}worker_processes auto;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 1024; }}
http {{
  access_log off;
  client_body_temp_path {d}/client_body;
  proxy_temp_path {d}/proxy;
  fastcgi_temp_path {d}/fastcgi;
  uwsgi_temp_path {d}/uwsgi;
  scgi_temp_path {d}/scgi;
  keepalive_requests 100000;
  upstream broker {{ server 127.0.0.1:{self.broker_port}; keepalive 64; }}
  upstream ceiling {{ server 127.0.0.1:{self.ceiling_port}; keepalive 64; }}
{server(self.nginx_broker_port, "http://broker/oauth/auth/bench/app")}
{server(self.nginx_ceiling_port, "http://ceiling/")}
}}
""")
        self.nginx_proc = self.spawn(["/usr/sbin/nginx", "-p", d, "-c", conf, "-g", "daemon off;"], "nginx")
        wait_port(self.nginx_broker_port, "nginx", self.nginx_proc)
        wait_port(self.nginx_ceiling_port, "nginx", self.nginx_proc)

    def start_ceiling(self):
        self.ceiling_proc = self.spawn([CEILING, f"127.0.0.1:{self.ceiling_port}"], "ceiling")
        wait_port(self.ceiling_port, "the ceiling server", self.ceiling_proc)

    def login(self, start, callback):
        out = subprocess.run(
            [CLIENT, "login", "--start", start, "--callback", callback],
            capture_output=True, text=True,
        )
        if out.returncode != 0:
            sys.exit(f"login through {start} failed: {out.stderr}")
        return out.stdout.strip()

    def logins(self, start, callback, seconds=None):
        out = subprocess.run(
            [
                CLIENT, "logins", "--start", start, "--callback", callback,
                "--concurrency", str(self.args.login_concurrency),
                "--seconds", str(seconds or self.args.duration),
            ],
            capture_output=True, text=True,
        )
        res = json.loads(out.stdout)
        if out.returncode != 0:
            print(f"  login loop errors: {res.get('errors')} (first: {res.get('first_error')})")
        return res


# ---------------------------------------------------------------- run


def machine():
    cpu = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem = 0
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                mem = int(line.split()[1]) // 1024 // 1024
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": mem,
        "kernel": platform.release(),
    }


def versions():
    def run(cmd):
        try:
            return subprocess.run(cmd, capture_output=True, text=True).stdout.strip().splitlines()[0]
        except (OSError, IndexError):
            return "unknown"

    def dpkg(pkg):
        return run(["dpkg-query", "-W", "-f=${Version}", pkg])

    commit = run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"])
    # The results this run rewrites do not make the tree dirty.
    dirty = subprocess.run(
        ["git", "-C", ROOT, "diff", "--quiet", "HEAD", "--", ".", ":(exclude)bench/results"]
    ).returncode != 0
    return {
        "commit": commit + ("+dirty" if dirty else ""),
        "apache2": dpkg("apache2"),
        "mod_auth_openidc": dpkg("libapache2-mod-auth-openidc"),
        "wrk": dpkg("wrk"),
        "node": run(["node", "--version"]),
        "oidc_provider": json.load(open(os.path.join(ROOT, "tests/op/node_modules/oidc-provider/package.json")))["version"],
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", type=int, default=10, help="seconds per scenario (default 10)")
    ap.add_argument("--connections", type=int, default=64, help="wrk connections (default 64)")
    ap.add_argument("--threads", type=int, default=1, help="wrk threads (default 1)")
    ap.add_argument("--rounds", type=int, default=3,
                    help="rounds of the wrk rows, alternating between the servers; each row reports its median round (default 3)")
    ap.add_argument("--login-concurrency", type=int, default=8, help="login round-trip workers (default 8)")
    ap.add_argument("--out", default=os.path.join(ROOT, "bench", "results"), help="results folder")
    args = ap.parse_args()

    tmp = tempfile.mkdtemp(prefix="sso-bench-")
    parts = Parts(tmp, args)
    results = {"scenarios": {}}
    try:
        parts.start_op()
        parts.start_broker()
        parts.start_apache()
        parts.start_ceiling()
        parts.start_nginx()
        time.sleep(1)
        broker_pids = lambda: [parts.broker_proc.pid]
        apache_pids = lambda: children_of(parts.apache_proc.pid)
        ceiling_pids = lambda: [parts.ceiling_proc.pid]
        nginx_broker_pids = lambda: [parts.broker_proc.pid] + children_of(parts.nginx_proc.pid)
        nginx_ceiling_pids = lambda: [parts.ceiling_proc.pid] + children_of(parts.nginx_proc.pid)
        results["idle_kib"] = {
            "broker": rss_kib(broker_pids()),
            "apache": rss_kib(apache_pids()),
        }
        html = "Accept: text/html"
        start_url = f"{parts.broker}/oauth/start?provider=bench/op&rd=/"
        broker_cb = f"{parts.broker}/oauth/callback/"
        apache_start = f"{parts.apache}/protected/"
        apache_cb = f"{parts.apache}/protected/redirect_uri"

        rounds = {}

        def run(name, who, url, headers, expect, pids):
            status, body = probe(url, dict(h.split(": ", 1) for h in headers))
            if status != expect:
                sys.exit(f"{name}/{who}: expected HTTP {expect} from {url}, got {status}: {body[:200]!r}")
            with Sampler(pids) as s:
                res = wrk(url, headers, args)
            res["peak_rss_kib"] = s.peak_rss
            res["peak_pss_kib"] = s.peak_pss
            res["peak_anon_kib"] = s.peak_anon
            res["status"] = status
            rounds.setdefault((name, who), []).append(res)
            print(f"  {name:<14} {who:<16} {res.get('rps', 0):>10.0f} req/s  p50 {res.get('p50_ms', 0):.2f} ms  "
                  f"p99 {res.get('p99_ms', 0):.2f} ms  non-2xx/3xx {res['non_2xx_3xx']}  peak RSS {s.peak_rss / 1024:.1f} MiB")
            return res

        print(f"wrk -t{args.threads} -c{args.connections} -d{args.duration}s, one row at a time, "
              f"{args.rounds} rounds alternating between the servers")
        for n in range(args.rounds):
            print(f" round {n + 1}")
            # a) login start
            run("login_start", "broker", start_url, [html], 302, broker_pids)
            run("login_start", "mod_auth_openidc", apache_start, [html], 302, apache_pids)
            # b) authenticated request (a fresh login right before each run:
            # mod_auth_openidc re-writes its cookie 60 s after the last write)
            cookie = parts.login(start_url, broker_cb)
            run("authenticated", "broker", f"{parts.broker}/oauth/auth", [html, f"Cookie: {cookie}"], 200, broker_pids)
            broker_cookie = cookie
            cookie = parts.login(apache_start, apache_cb)
            run("authenticated", "mod_auth_openidc", f"{parts.apache}/protected/index.html", [html, f"Cookie: {cookie}"], 200, apache_pids)
            # The ceiling gets the same request bytes (the broker's session
            # cookie included), so only the handling differs.
            run("authenticated", "ceiling", f"{parts.ceiling}/", [html, f"Cookie: {broker_cookie}"], 200, ceiling_pids)
            run("authenticated", "apache_no_auth", f"{parts.apache}/public/index.html", [html], 200, apache_pids)
            # d) the realistic path: a static file behind nginx auth_request
            # (the broker at the AccessPolicy's URL, or the bare 200 server),
            # and behind mod_auth_openidc.
            run("static_behind_proxy", "nginx+broker", f"http://127.0.0.1:{parts.nginx_broker_port}/index.html",
                [html, f"Cookie: {broker_cookie}"], 200, nginx_broker_pids)
            run("static_behind_proxy", "nginx+ceiling", f"http://127.0.0.1:{parts.nginx_ceiling_port}/index.html",
                [html, f"Cookie: {broker_cookie}"], 200, nginx_ceiling_pids)
            run("static_behind_proxy", "mod_auth_openidc", f"{parts.apache}/protected/index.html",
                [html, f"Cookie: {cookie}"], 200, apache_pids)
        # Each row reports its median round by requests/s (latencies from
        # that same round), every round's rate, and the peak RSS of all.
        for (name, who), runs in rounds.items():
            med = sorted(runs, key=lambda x: x.get("rps", 0))[len(runs) // 2]
            res = dict(med)
            res["rounds_rps"] = [x.get("rps", 0) for x in runs]
            res["non_2xx_3xx"] = sum(x["non_2xx_3xx"] for x in runs)
            res["peak_rss_kib"] = max(x["peak_rss_kib"] for x in runs)
            res["peak_pss_kib"] = max(x["peak_pss_kib"] for x in runs)
            res["peak_anon_kib"] = max(x["peak_anon_kib"] for x in runs)
            results["scenarios"].setdefault(name, {})[who] = res
        # c) full login round trips
        for who, start, cb, pids in (
            ("broker", start_url, broker_cb, broker_pids),
            ("mod_auth_openidc", apache_start, apache_cb, apache_pids),
        ):
            parts.logins(start, cb, seconds=2)  # warm-up, discarded
            with Sampler(pids) as s:
                res = parts.logins(start, cb)
            res["peak_rss_kib"] = s.peak_rss
            res["peak_pss_kib"] = s.peak_pss
            res["peak_anon_kib"] = s.peak_anon
            results["scenarios"].setdefault("login_round_trip", {})[who] = res
            print(f"  {'login_trip':<14} {who:<16} {res['rate']:>10.1f} logins/s  p50 {res['total_ms']['p50']:.1f} ms  "
                  f"RP {res['rp_start_ms']['mean'] + res['rp_callback_ms']['mean']:.2f} ms  OP {res['op_ms']['mean']:.1f} ms  errors {res['errors']}")
        status, metrics = probe(f"http://127.0.0.1:{parts.metrics_port}/metrics", {})
        m = re.search(r"^sso_broker_callback_duration_seconds_sum ([\d.e+-]+)$", metrics.decode(), re.M)
        c = re.search(r"^sso_broker_callback_duration_seconds_count (\d+)$", metrics.decode(), re.M)
        if m and c and int(c.group(1)):
            results["broker_callback_mean_ms"] = float(m.group(1)) / int(c.group(1)) * 1000
    finally:
        parts.stop()

    results["machine"] = machine()
    results["versions"] = versions()
    results["date"] = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    results["load"] = {"tool": "wrk", "threads": args.threads, "connections": args.connections,
                       "duration_s": args.duration, "rounds": args.rounds,
                       "login_concurrency": args.login_concurrency}
    os.makedirs(args.out, exist_ok=True)
    for sc in results["scenarios"].values():
        for r in sc.values():
            r.pop("raw", None)
    with open(os.path.join(args.out, "latest.json"), "w") as f:
        json.dump(results, f, indent=2)
    md = report(results)
    with open(os.path.join(args.out, "latest.md"), "w") as f:
        f.write(md)
    plot(results, os.path.join(args.out, "latest.png"))
    print()
    print(md)
    shutil.rmtree(tmp, ignore_errors=True)


def ratio(a, b):
    return a / b if b else float("nan")


def peak_mib(scenarios, who, kind):
    """The peak `kind` (rss, pss, anon) of `who` over every scenario it ran, MiB."""
    return max(x[f"peak_{kind}_kib"] for sc in scenarios.values() for w, x in sc.items() if w == who) / 1024


def every(row):
    return ", ".join(f"{x:,.0f}" for x in row.get("rounds_rps", [row.get("rps", 0)]))


def report(r):
    s = r["scenarios"]
    ls, au, lt = s["login_start"], s["authenticated"], s["login_round_trip"]
    b, p, c = au["broker"], au["mod_auth_openidc"], au["ceiling"]
    memory = [
        (f"| peak {label} under load{note}, MiB | {peak_mib(s, 'broker', kind):.1f} | "
         f"{peak_mib(s, 'mod_auth_openidc', kind):.1f} | "
         f"{ratio(peak_mib(s, 'broker', kind), peak_mib(s, 'mod_auth_openidc', kind)):.2f}x |{target} |")
        for kind, label, note, target in (
            ("rss", "RSS", " (summed over processes)", " ≤ 0.33x"),
            ("pss", "PSS", "", ""),
            ("anon", "anonymous memory (heap, stacks)", "", ""),
        )
    ]
    m = r["machine"]
    v = r["versions"]
    lines = [
        f"Measured {r['date']} at commit {v['commit']} on {m['cpu']} ({m['cores']} cores, {m['memory_gib']} GiB, "
        f"Linux {m['kernel']}); wrk {v['wrk']} -t{r['load']['threads']} -c{r['load']['connections']} "
        f"-d{r['load']['duration_s']}s per row, one row at a time, {r['load'].get('rounds', 1)} rounds alternating between "
        f"the servers, each row's median round shown; Apache {v['apache2']} with mod_auth_openidc "
        f"{v['mod_auth_openidc']} (client-cookie sessions, PKCE S256); oidc-provider {v['oidc_provider']} on node {v['node']}.",
        "",
        "| scenario | broker | mod_auth_openidc | broker / peer | target |",
        "|---|---:|---:|---:|---|",
        f"| login start, req/s | {ls['broker']['rps']:,.0f} | {ls['mod_auth_openidc']['rps']:,.0f} | "
        f"{ratio(ls['broker']['rps'], ls['mod_auth_openidc']['rps']):.2f}x | ≥ 3x |",
        f"| login start, p50 / p99 ms | {ls['broker']['p50_ms']:.2f} / {ls['broker']['p99_ms']:.2f} | "
        f"{ls['mod_auth_openidc']['p50_ms']:.2f} / {ls['mod_auth_openidc']['p99_ms']:.2f} | | |",
        f"| authenticated request, req/s | {b['rps']:,.0f} | {p['rps']:,.0f} | {ratio(b['rps'], p['rps']):.2f}x | ≥ 2x |",
        f"| authenticated request, p50 / p99 ms | {b['p50_ms']:.2f} / {b['p99_ms']:.2f} | {p['p50_ms']:.2f} / {p['p99_ms']:.2f} | "
        f"p99 {ratio(b['p99_ms'], p['p99_ms']):.2f}x | p99 ≤ 0.5x |",
        f"| full login round trip, logins/s ({lt['broker']['concurrency']} workers) | {lt['broker']['rate']:.1f} | "
        f"{lt['mod_auth_openidc']['rate']:.1f} | {ratio(lt['broker']['rate'], lt['mod_auth_openidc']['rate']):.2f}x | |",
        f"| full login, p50 / p99 ms | {lt['broker']['total_ms']['p50']:.1f} / {lt['broker']['total_ms']['p99']:.1f} | "
        f"{lt['mod_auth_openidc']['total_ms']['p50']:.1f} / {lt['mod_auth_openidc']['total_ms']['p99']:.1f} | | |",
        f"| full login: relying party's part (start + callback), mean ms | "
        f"{lt['broker']['rp_start_ms']['mean']:.2f} + {lt['broker']['rp_callback_ms']['mean']:.2f} | "
        f"{lt['mod_auth_openidc']['rp_start_ms']['mean']:.2f} + {lt['mod_auth_openidc']['rp_callback_ms']['mean']:.2f} | | |",
        f"| full login: the OP's pages, mean ms | {lt['broker']['op_ms']['mean']:.1f} | {lt['mod_auth_openidc']['op_ms']['mean']:.1f} | | |",
        *memory,
        "",
        "| authenticated request vs the ceiling | req/s | p50 / p99 ms | share of ceiling | every round, req/s |",
        "|---|---:|---|---:|---|",
        f"| bare axum 200 OK (ceiling) | {c['rps']:,.0f} | {c['p50_ms']:.2f} / {c['p99_ms']:.2f} | 100% | {every(c)} |",
        f"| broker `/oauth/auth` | {b['rps']:,.0f} | {b['p50_ms']:.2f} / {b['p99_ms']:.2f} | {100 * ratio(b['rps'], c['rps']):.0f}% (target ≥ 60%) | {every(b)} |",
        f"| mod_auth_openidc protected page | {p['rps']:,.0f} | {p['p50_ms']:.2f} / {p['p99_ms']:.2f} | {100 * ratio(p['rps'], c['rps']):.0f}% | {every(p)} |",
        f"| Apache, same page unprotected | {au['apache_no_auth']['rps']:,.0f} | {au['apache_no_auth']['p50_ms']:.2f} / {au['apache_no_auth']['p99_ms']:.2f} | "
        f"{100 * ratio(au['apache_no_auth']['rps'], c['rps']):.0f}% | {every(au['apache_no_auth'])} |",
        "",
    ]
    if "static_behind_proxy" in s:
        sp = s["static_behind_proxy"]
        nb, nc, na = sp["nginx+broker"], sp["nginx+ceiling"], sp["mod_auth_openidc"]
        lines += [
            "| a static file behind the proxy (the realistic path) | req/s | p50 / p99 ms | share of nginx's ceiling | every round, req/s |",
            "|---|---:|---|---:|---|",
            f"| nginx `auth_request` → bare 200 server (ceiling) | {nc['rps']:,.0f} | {nc['p50_ms']:.2f} / {nc['p99_ms']:.2f} | 100% | {every(nc)} |",
            f"| nginx `auth_request` → broker at an AccessPolicy's URL | {nb['rps']:,.0f} | {nb['p50_ms']:.2f} / {nb['p99_ms']:.2f} | {100 * ratio(nb['rps'], nc['rps']):.0f}% | {every(nb)} |",
            f"| Apache + mod_auth_openidc | {na['rps']:,.0f} | {na['p50_ms']:.2f} / {na['p99_ms']:.2f} | {100 * ratio(na['rps'], nc['rps']):.0f}% | {every(na)} |",
            "",
            f"nginx + broker vs Apache + mod_auth_openidc on the same file: {ratio(nb['rps'], na['rps']):.2f}x the requests/s.",
            "",
        ]
    if len(b.get("rounds_rps", [])) > 1:
        shares = [100 * ratio(x, y) for x, y in zip(b["rounds_rps"], c["rounds_rps"])]
        lines += [f"Broker's share of the ceiling round by round: {', '.join(f'{x:.0f}%' for x in shares)}.", ""]
    errs = [f"{n}/{w}: {x['non_2xx_3xx']} non-2xx/3xx" for n, sc in s.items() for w, x in sc.items() if x.get("non_2xx_3xx")]
    errs += [f"login_round_trip/{w}: {x['errors']} failed logins" for w, x in lt.items() if x.get("errors")]
    lines.append("Errors during the run: " + ("; ".join(errs) if errs else "none") + ".")
    if "broker_callback_mean_ms" in r:
        lines.append(f"The broker's own callback handling (token exchange and checks, its metric): "
                     f"{r['broker_callback_mean_ms']:.2f} ms mean.")
    return "\n".join(lines) + "\n"


def plot(r, path):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib missing: no plot")
        return
    s = r["scenarios"]
    fig, axes = plt.subplots(1, 4, figsize=(17, 4.6), gridspec_kw={"width_ratios": [2, 4, 4, 6]})
    colors = {"broker": "#2b6cb0", "mod_auth_openidc": "#c05621", "ceiling": "#718096", "apache_no_auth": "#ed8936"}

    def bars(ax, title, items, fmt="{:,.0f}"):
        names = [n for n, _ in items]
        vals = [v for _, v in items]
        ax.bar(range(len(vals)), vals, color=[colors.get(n.split()[0], "#999") for n in names])
        ax.set_xticks(range(len(vals)))
        ax.set_xticklabels([n.replace("_", "\n").replace(" ", "\n") for n in names], fontsize=8)
        ax.set_title(title, fontsize=10)
        for i, v in enumerate(vals):
            ax.text(i, v, fmt.format(v), ha="center", va="bottom", fontsize=8)

    bars(axes[0], "login start, req/s", [(w, x["rps"]) for w, x in s["login_start"].items()])
    bars(axes[1], "authenticated request, req/s", [(w, x["rps"]) for w, x in s["authenticated"].items()])
    bars(axes[2], "authenticated request, p99 ms",
         [(w, x["p99_ms"]) for w, x in s["authenticated"].items()], "{:.2f}")
    # Apache's summed RSS counts the pages its processes share once per
    # process; its PSS counts them once.
    bars(axes[3], "peak memory under load, MiB",
         [(f"{w} {k}", peak_mib(s, w, k.lower())) for w in ("broker", "mod_auth_openidc")
          for k in ("RSS", "PSS", "anon")], "{:.1f}")
    fig.suptitle(f"sso-operator broker vs Apache mod_auth_openidc — {r['date']}, {r['versions']['commit']}, "
                 f"{r['machine']['cores']} cores", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
