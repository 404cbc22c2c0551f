#!/usr/bin/env python3
"""The box UI through OpenWrt's own parts (tests/openwrt/run.sh builds them): ubusd, rpcd with the
package's exec plugin and ACL, uhttpd's /ubus, LuCI's view in Chromium, and the package's files
against shellcheck and procd's procd.sh. Each check asserts and prints its result and time."""
import argparse
import atexit
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.request

ap = argparse.ArgumentParser()
ap.add_argument("--prefix", required=True)
ap.add_argument("--src", required=True)
ap.add_argument("--boxapi", required=True)
ap.add_argument("--root", required=True)
args = ap.parse_args()
P, SRC, BOX, ROOT = args.prefix, args.src, args.boxapi, args.root
PKG = os.path.join(ROOT, "cross/openwrt/boxapi")
FILES = os.path.join(PKG, "files")
METHODS = ["status", "tools", "enable", "disable", "withhold", "allow"]
AUD, ISS = "https://box.test", "https://issuer.test"

work = tempfile.mkdtemp(prefix="boxapi-openwrt.")
procs = []
results = []


def cleanup():
    for p in reversed(procs):
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGTERM)
    for p in procs:
        try:
            p.wait(5)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)


atexit.register(cleanup)  # also when the setup fails before the checks


class Fail(Exception):
    pass


def check(cond, what):
    if not cond:
        raise Fail(what)


def run(name, fn):
    t = time.monotonic()
    try:
        fn()
        ok, why = True, ""
    except Fail as e:
        ok, why = False, str(e)
    except Exception as e:  # a crash in a check is that check's failure, with its cause
        ok, why = False, f"{type(e).__name__}: {e}"
    took = time.monotonic() - t
    results.append((name, ok, took))
    print(f"{'ok  ' if ok else 'FAIL'} {name} ({took:.1f} s){'' if ok else ': ' + why}", flush=True)


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def start(cmd, log, env=None):
    f = open(os.path.join(work, log), "wb")
    p = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    procs.append(p)
    return p


def wait_for(what, cond, timeout=20):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return
        time.sleep(0.1)
    raise Fail(f"timed out waiting for {what}")


def connects(port):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
        return True
    except OSError:
        return False


# --- the box: boxapi with two tools, its control socket, a free port ------------------------------
def sh(*cmd, input=None, env=None):
    return subprocess.run(cmd, input=input, capture_output=True, text=True, env=env, timeout=60)


subprocess.run([os.path.join(ROOT, "certs/make-dev-certs.sh"), os.path.join(work, "certs")],
               check=True, capture_output=True)
tokens = {}
for t in ("alpha", "beta"):
    sh(BOX, "keygen", "--alg", "ES256", "--kid", t, "--out", os.path.join(work, "keys"))
    r = sh(BOX, "token", "--key", os.path.join(work, "keys", f"{t}.private.jwk"), "--tool", t,
           "--scope", "access counters", "--aud", AUD, "--iss", ISS)
    tokens[t] = r.stdout.strip()
API_PORT = free_port()
CTL = os.path.join(work, "control.sock")
CONF = os.path.join(work, "boxapi.toml")
with open(CONF, "w") as f:
    f.write(f"""[server]
listen = ["127.0.0.1:{API_PORT}"]
server_names = ["localhost"]
cert = "certs/server.pem"
key = "certs/server.key"
state_dir = "state"
control_socket = "control.sock"
[auth]
audience = "{AUD}"
issuers = ["{ISS}"]
[[tool]]
id = "alpha"
name = "Alpha Speed"
origins = ["https://alpha.example"]
scopes = ["access", "counters"]
keys = ["keys/alpha.jwk"]
[[tool]]
id = "beta"
origins = ["https://beta.example"]
scopes = ["access", "counters"]
keys = ["keys/beta.jwk"]
[metrics]
wan_interface = "lo"
""")
ctx = ssl.create_default_context(cafile=os.path.join(work, "certs/ca.pem"))


def card(tool):
    req = urllib.request.Request(f"https://localhost:{API_PORT}/v1/access",
                                 headers={"Authorization": "Bearer " + tokens[tool]})
    with urllib.request.urlopen(req, context=ctx, timeout=10) as r:
        check(r.status == 200, f"card for {tool}: HTTP {r.status}")
        return json.load(r)


# --- OpenWrt's parts: ubusd, rpcd (plugin + ACL where it looks), uhttpd with /ubus ---------------
UBUS = os.path.join(work, "ubus.sock")
WWW = os.path.join(work, "www")
HTTP_PORT = free_port()
rpcd_plugins = os.path.join(P, "libexec/rpcd")
acl_d = os.path.join(P, "share/rpcd/acl.d")
confdir = os.path.join(P, "etc/config")  # uci's UCI_CONFDIR in this build (run.sh)
for d in (rpcd_plugins, acl_d, confdir, WWW):
    os.makedirs(d, exist_ok=True)
for f in os.listdir(acl_d):
    os.unlink(os.path.join(acl_d, f))
# As the package installs them (Makefile: Package/boxapi/install).
shutil.copy(os.path.join(FILES, "boxapi.rpcd"), os.path.join(rpcd_plugins, "boxapi"))
os.chmod(os.path.join(rpcd_plugins, "boxapi"), 0o755)
shutil.copy(os.path.join(FILES, "boxapi.acl.json"), os.path.join(acl_d, "luci-app-boxapi.json"))
# Another role, for a user who may log in but was not given the boxapi one; and what LuCI's
# login page itself needs of an unauthenticated session (luci-base's acl.d/luci-base.json).
with open(os.path.join(acl_d, "test-other.json"), "w") as f:
    json.dump({"test-other": {"description": "an unrelated role",
                              "read": {"ubus": {"session": ["access"]}}}}, f)
with open(os.path.join(acl_d, "test-unauthenticated.json"), "w") as f:
    json.dump({"unauthenticated": {"description": "login",
                                   "read": {"ubus": {"session": ["access", "login"]}}}}, f)


def crypt_md5(pw):
    return subprocess.run(["openssl", "passwd", "-1", pw], capture_output=True, text=True,
                          check=True).stdout.strip()


# rpcd's logins (uci config "rpcd", as /etc/config/rpcd on a box): one with the boxapi role,
# one without it. A LuCI user also has luci-base (LuCI's own calls: uci changes, file list; its
# ACL file is installed by luci.py when OPENWRT_SRC has luci/).
with open(os.path.join(confdir, "rpcd"), "w") as f:
    f.write(f"""config rpcd
\toption socket {UBUS}
\toption timeout 30

config login
\toption username 'subscriber'
\toption password '{crypt_md5("box-secret")}'
\tlist read 'luci-base'
\tlist read 'luci-app-boxapi'
\tlist write 'luci-app-boxapi'

config login
\toption username 'guest'
\toption password '{crypt_md5("guest-secret")}'
\tlist read 'test-other'
\tlist write 'test-other'
""")

env = dict(os.environ, BOXAPI_BIN=BOX, BOXAPI_CONFIG=CONF, LD_LIBRARY_PATH=os.path.join(P, "lib"))
env.pop("BOXAPI_SOCKET", None)  # the plugin must find the socket from the configuration
box = start([BOX, "serve", "--config", CONF], "boxapi.log")
wait_for("boxapi's API port", lambda: connects(API_PORT))
ubusd = start([os.path.join(P, "sbin/ubusd"), "-s", UBUS], "ubusd.log", env)
wait_for("ubusd's socket", lambda: os.path.exists(UBUS))
rpcd = start([os.path.join(P, "sbin/rpcd"), "-s", UBUS, "-t", "30"], "rpcd.log", env)


def ubus(*a, input=None):
    return sh(os.path.join(P, "bin/ubus"), "-s", UBUS, *a, env=env)


wait_for("rpcd's session object", lambda: ubus("list", "session").returncode == 0)
wait_for("the boxapi object", lambda: ubus("list", "boxapi").returncode == 0)
uhttpd = start([os.path.join(P, "bin/uhttpd"), "-f", "-p", f"127.0.0.1:{HTTP_PORT}", "-h", WWW,
                "-u", "/ubus", "-U", UBUS, "-T", "30"], "uhttpd.log", env)
wait_for("uhttpd", lambda: connects(HTTP_PORT))

NOBODY = "0" * 32  # rpcd's unauthenticated session, which LuCI uses before login


def jsonrpc(sid, obj, method, params=None, rid=1):
    """One call as LuCI's rpc.js makes it: POST /ubus, JSON-RPC 2.0 "call"."""
    body = json.dumps({"jsonrpc": "2.0", "id": rid, "method": "call",
                       "params": [sid, obj, method, params or {}]}).encode()
    req = urllib.request.Request(f"http://127.0.0.1:{HTTP_PORT}/ubus", data=body,
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=40) as r:
        return json.load(r)


def login(user, pw):
    r = jsonrpc(NOBODY, "session", "login", {"username": user, "password": pw})
    check("result" in r and r["result"][0] == 0, f"login {user}: {r}")
    return r["result"][1]["ubus_rpc_session"]


def access(sid, fn):
    r = ubus("call", "session", "access", json.dumps(
        {"ubus_rpc_session": sid, "scope": "ubus", "object": "boxapi", "function": fn}))
    check(r.returncode == 0, f"session.access: {r.stderr}")
    return json.loads(r.stdout)["access"]


def ok_call(sid, method, params=None):
    r = jsonrpc(sid, "boxapi", method, params)
    check("result" in r and r["result"][0] == 0 and len(r["result"]) == 2,
          f"boxapi.{method} {params or ''}: {r}")
    reply = r["result"][1]
    check("error" not in reply, f"boxapi.{method}: the plugin answered an error: {reply}")
    return reply


def state():
    r = sh(BOX, "ctl", "--socket", CTL, "status")
    check(r.returncode == 0, f"ctl status: {r.stderr}")
    return json.loads(r.stdout)


def rpcd_plugin():
    r = ubus("-v", "list", "boxapi")
    check(r.returncode == 0, f"ubus list boxapi: {r.stderr}")
    listed = {}
    for line in r.stdout.splitlines()[1:]:
        name, sig = line.strip().split(":", 1)
        listed[name.strip('"')] = json.loads(sig)
    check(sorted(listed) == sorted(METHODS), f"rpcd lists {sorted(listed)}, not {METHODS}")
    check(listed["withhold"] == {"section": "String", "tool": "String"}, f"withhold: {listed}")
    for m in ("suspend", "resume", "revoke", "unrevoke", "reload"):
        check(m not in listed, f"rpcd exposes the operator's {m}")
    # rpcd runs the plugin, which finds the control socket from the configuration.
    r = ubus("call", "boxapi", "status")
    check(r.returncode == 0, f"ubus call boxapi status: {r.stdout} {r.stderr}")
    check(json.loads(r.stdout).get("state") == "enabled", f"status: {r.stdout}")
    r = ubus("call", "boxapi", "suspend")
    check(r.returncode != 0 and "Method not found" in r.stderr, f"boxapi suspend: {r.stdout} {r.stderr}")


def rpcd_sessions():
    sub, guest = login("subscriber", "box-secret"), login("guest", "guest-secret")
    r = jsonrpc(NOBODY, "session", "login", {"username": "subscriber", "password": "wrong"})
    check(r.get("result", [0])[0] != 0, f"a wrong password logged in: {r}")
    for m in METHODS:
        check(access(sub, m) is True, f"rpcd refuses {m} to the boxapi role")
        check(access(guest, m) is False, f"rpcd grants {m} to a session without the role")
        check(access(NOBODY, m) is False, f"rpcd grants {m} to the unauthenticated session")
    for m in ("suspend", "revoke", "reload", "resume", "unrevoke"):
        check(access(sub, m) is False, f"the boxapi role reaches {m}")


def ubus_http_acl():
    sub, guest = login("subscriber", "box-secret"), login("guest", "guest-secret")
    calls = {"status": None, "tools": None, "disable": None, "enable": None,
             "withhold": {"section": "counters"}, "allow": {"section": "counters"}}
    for m, p in calls.items():
        ok_call(sub, m, p)
        for who, sid in (("a session without the role", guest),
                         ("the unauthenticated session", NOBODY),
                         ("a made-up session", "f" * 32)):
            r = jsonrpc(sid, "boxapi", m, p)
            check(r.get("error", {}).get("code") == -32002,
                  f"{m} by {who}: not refused by rpcd's ACL: {r}")
    before = state()
    for m in ("suspend", "revoke", "reload"):
        r = jsonrpc(sub, "boxapi", m, {"tool": "alpha"})
        check("error" in r, f"boxapi.{m} answered over /ubus: {r}")
    after = state()
    check(after.get("state") == before.get("state") == "enabled", f"state moved: {before} -> {after}")
    check(all(t.get("state") != "revoked" for t in json.loads(sh(BOX, "ctl", "--socket", CTL, "tools").stdout)),
          "a tool was revoked")


def ubus_http_switch():
    sub = login("subscriber", "box-secret")
    check(connects(API_PORT), "the API port is closed before the test")
    ok_call(sub, "disable")
    wait_for("the API port to close", lambda: not connects(API_PORT), 10)
    check(ok_call(sub, "status").get("state") == "disabled", "status is not disabled")
    ok_call(sub, "enable")
    wait_for("the API port to reopen", lambda: connects(API_PORT), 10)
    check(isinstance(card("alpha").get("box"), dict), "no card after enable")


def ubus_http_withhold():
    sub = login("subscriber", "box-secret")
    check(isinstance(card("alpha").get("wifi"), dict), "alpha's card has no wifi before")
    ok_call(sub, "withhold", {"section": "wifi", "tool": "alpha"})
    a, b = card("alpha"), card("beta")
    check(a.get("wifi", "absent") is None and a.get("withheld") == ["wifi"], f"alpha: {a}")
    check(isinstance(b.get("wifi"), dict), f"beta lost its wifi: {b}")
    tools = ok_call(sub, "tools")["tools"]
    alpha = [t for t in tools if t["id"] == "alpha"]
    check(alpha and alpha[0].get("withheld") == ["wifi"], f"tools: {tools}")
    ok_call(sub, "allow", {"section": "wifi", "tool": "alpha"})
    check(isinstance(card("alpha").get("wifi"), dict), "allow did not give wifi back")
    # Arguments from a form reach boxapi as data, never as shell: a hostile tool id is refused,
    # and nothing it names is run.
    pwned = os.path.join(work, "pwned")
    for payload in (f"x\"; touch {pwned}; \"", f"$(touch {pwned})", f"`touch {pwned}`"):
        r = jsonrpc(sub, "boxapi", "withhold", {"section": "wifi", "tool": payload})
        check(r.get("result", [1])[0] != 0 or "error" in r["result"][1], f"hostile tool id: {r}")
        check(not os.path.exists(pwned), f"the tool id {payload!r} ran a command")


try:
    run("rpcd lists the plugin's six methods and runs it", rpcd_plugin)
    run("rpcd sessions: the boxapi role may call every method; others and nobody may not", rpcd_sessions)
    run("uhttpd /ubus: the role's calls pass, others are refused by rpcd (-32002), no operator method", ubus_http_acl)
    run("uhttpd /ubus: disable closes the API port, enable reopens it", ubus_http_switch)
    run("uhttpd /ubus: withhold wifi --tool alpha nulls alpha's wifi only", ubus_http_withhold)
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import package  # noqa: E402  (the package's files: shellcheck, conventions, procd.sh)
    package.checks(run, check, P, SRC, PKG, work)
    if os.path.isdir(os.path.join(SRC, "luci")):
        import luci  # noqa: E402  (the LuCI view in Chromium)
        luci.checks(run, check, SRC, ROOT, WWW, acl_d, HTTP_PORT, API_PORT, work, login,
                    lambda: json.loads(sh(BOX, "ctl", "--socket", CTL, "tools").stdout))
    elif os.environ.get("BOXAPI_OPENWRT_NO_LUCI") == "1":
        print("skip LuCI view: BOXAPI_OPENWRT_NO_LUCI=1; its 3 checks did not run")
    else:
        # The issue asks for the view in a browser: sources without LuCI are not a passing run.
        run("LuCI sources present (OPENWRT_SRC/luci, or BOXAPI_OPENWRT_NO_LUCI=1 to leave them out)",
            lambda: check(False, f"no {os.path.join(SRC, 'luci')}"))
finally:
    cleanup()
    failed = [n for n, ok, _ in results if not ok]
    print(f"test-openwrt: {len(results)} checks, {len(failed)} failed, "
          f"{sum(t for _, _, t in results):.1f} s")
    if failed:
        print(f"logs kept in {work}")
    else:
        shutil.rmtree(work, ignore_errors=True)
sys.exit(1 if failed else 0)
