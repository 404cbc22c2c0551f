#!/usr/bin/env python3
"""Power cuts against the real daemon (contract §7 rev. 3: a change acknowledged by `ctl`
survives a power cut at any moment after the acknowledgement).

`boxapi serve` keeps its state_dir on a LazyFS mount (a FUSE file system that holds every write
not yet fsynced in its own cache). For each cut: a burst of `boxapi ctl` changes from four
concurrent clients, each on keys of its own (mode; ctl revocations; per-tool withholdings of
box/subscription/access; every-tool withholdings of wifi/client/counters), plus API requests so
that the activity file is written too; at a random moment the daemon is killed (SIGKILL) and
LazyFS drops what was not synced, which is what a power cut leaves on the flash. Then every file
in state_dir must parse, and after a restart every key must hold the value of its last
acknowledged change, or of the one change that was in flight (sent, not answered) at the cut.

Run by tests/powercut/run.sh, which finds LazyFS and the binary. Exit 0 only when no
acknowledged change was lost, no file failed to parse and no restart kept a staging file that
a cut left (the daemon removes them at start); the last line gives the figures.
"""
import argparse
import http.client
import json
import os
import random
import select
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time

AUD = "https://box.powercut.test"
ISS = "https://auth.powercut.test"
REVOCABLE = ["r1", "r2", "r3"]
PER_TOOL = ["w1", "w2"]
PER_TOOL_SECTIONS = ["box", "subscription", "access"]
ALL_TOOLS_SECTIONS = ["wifi", "client", "counters"]
# Never revoked nor given per-tool choices: its card shows the every-tool withholdings alone,
# and its requests make the daemon write the activity file.
PLAIN = "act"
TOOLS = REVOCABLE + PER_TOOL + [PLAIN]


class Failure(Exception):
    pass


def log(msg):
    print(msg, flush=True)


def run(cmd, **kw):
    return subprocess.run(cmd, capture_output=True, text=True, **kw)


class Box:
    """The daemon and its `boxapi ctl` client."""

    def __init__(self, binary, config, socket_path, log_path):
        self.binary, self.config, self.socket = binary, config, socket_path
        self.log_path = log_path
        self.proc = None

    def ctl(self, *args, timeout=15):
        """(acknowledged, reply): acknowledged is exit 0 with an ok reply."""
        try:
            p = run([self.binary, "ctl", "--socket", self.socket, "--timeout", "10", *args],
                    timeout=timeout)
        except subprocess.TimeoutExpired:
            return False, None
        if p.returncode != 0:
            return False, (p.returncode, p.stderr.strip())
        try:
            reply = json.loads(p.stdout)
        except ValueError:
            return False, ("unparsable", p.stdout)
        # `ctl tools` prints the list alone; every other command the whole reply.
        if isinstance(reply, dict) and reply.get("ok") is not True:
            return False, reply
        return True, reply

    def start(self):
        out = open(self.log_path, "ab")
        self.proc = subprocess.Popen([self.binary, "serve", "--config", self.config],
                                     stdout=out, stderr=out, stdin=subprocess.DEVNULL)
        out.close()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise Failure(f"boxapi serve exited with {self.proc.returncode} at start; "
                              f"see {self.log_path}")
            ok, _ = self.ctl("status", timeout=5)
            if ok:
                return
            time.sleep(0.02)
        raise Failure(f"boxapi serve did not answer on its control socket; see {self.log_path}")

    def kill(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        if self.proc:
            self.proc.wait()
        self.proc = None


class LazyFS:
    def __init__(self, binary, work):
        self.binary = binary
        self.mnt = os.path.join(work, "mnt")
        self.root = os.path.join(work, "disk")
        self.fifo = os.path.join(work, "faults.fifo")
        self.done = os.path.join(work, "faults-done.fifo")
        self.cfg = os.path.join(work, "lazyfs.toml")
        self.log = os.path.join(work, "lazyfs.log")
        self.proc = None
        self.done_fd = None
        os.makedirs(self.mnt)
        os.makedirs(self.root)
        with open(self.cfg, "w") as f:
            f.write(f"""[faults]
fifo_path="{self.fifo}"
fifo_path_completed="{self.done}"
[cache]
apply_eviction=false
[cache.simple]
custom_size="64mb"
blocks_per_page=1
[filesystem]
log_all_operations=false
logfile="{self.log}"
""")

    def mount(self):
        out = open(self.log + ".stdout", "ab")
        # LazyFS sets no attribute or entry caching and no keep_cache: a file opened after a cut
        # is read from LazyFS, not from what the kernel remembers from before it.
        self.proc = subprocess.Popen(
            [self.binary, self.mnt, "--config-path", self.cfg, "-o", "modules=subdir",
             "-o", f"subdir={self.root}", "-f"],
            stdout=out, stderr=out, stdin=subprocess.DEVNULL)
        out.close()
        deadline = time.monotonic() + 15
        while not (os.path.ismount(self.mnt) and os.path.exists(self.done)):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise Failure(f"LazyFS did not mount {self.mnt}; see {self.log}.stdout")
            time.sleep(0.05)
        # LazyFS opens the completion FIFO for writing when its fault worker starts: this open
        # returns once it has.
        self.done_fd = os.open(self.done, os.O_RDONLY)

    def clear_cache(self):
        """Drops every write not fsynced, and returns once LazyFS says it has."""
        with open(self.fifo, "w") as f:
            f.write("lazyfs::clear-cache\n")
        buf = b""
        deadline = time.monotonic() + 10
        while b"finished::clear-cache" not in buf:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self.done_fd], [], [], left)[0]:
                raise Failure("LazyFS did not confirm clear-cache within 10 s")
            chunk = os.read(self.done_fd, 256)
            if not chunk:
                raise Failure("LazyFS closed its completion FIFO")
            buf += chunk

    def unmount(self):
        if self.proc and self.proc.poll() is None:
            subprocess.run(["fusermount3", "-u", self.mnt], capture_output=True)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.done_fd is not None:
            os.close(self.done_fd)
            self.done_fd = None


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def setup(args, work):
    fx = os.path.join(work, "fx")
    p = run([os.path.join(args.repo, "certs", "make-dev-certs.sh"), fx])
    if p.returncode != 0:
        raise Failure(f"make-dev-certs.sh: {p.stderr}")
    for t in TOOLS:
        p = run([args.boxapi, "keygen", "--alg", "ES256", "--kid", t, "--out", fx])
        if p.returncode != 0:
            raise Failure(f"boxapi keygen: {p.stderr}")
    lazy = LazyFS(args.lazyfs, work)
    port = free_port()
    tools = "".join(f"""
[[tool]]
id = "{t}"
origins = ["https://{t}.example"]
scopes = ["access", "counters"]
keys = ["{fx}/{t}.jwk"]
""" for t in TOOLS)
    config = os.path.join(work, "box.toml")
    with open(config, "w") as f:
        f.write(f"""[server]
listen = ["127.0.0.1:{port}"]
server_names = ["localhost"]
cert = "{fx}/server.pem"
key = "{fx}/server.key"
state_dir = "{lazy.mnt}/state"
control_socket = "{work}/control.sock"
rate_limit_per_second = 100000
rate_limit_burst = 100000

[auth]
audience = "{AUD}"
issuers = ["{ISS}"]
{tools}
[metrics]
wan_interface = "lo"

[metrics.static]
box = {{ model = "Power Cut Box", firmware_version = "1" }}
subscription = {{ down_kbps = 1000000, up_kbps = 500000 }}
access = {{ technology = "ftth" }}
""")
    p = run([args.boxapi, "check-config", "--config", config])
    if p.returncode != 0:
        raise Failure(f"check-config: {p.stdout}{p.stderr}")
    p = run([args.boxapi, "token", "--key", f"{fx}/{PLAIN}.private.jwk", "--tool", PLAIN,
             "--scope", "access counters", "--aud", AUD, "--iss", ISS])
    if p.returncode != 0:
        raise Failure(f"boxapi token: {p.stderr}")
    token = p.stdout.strip()
    box = Box(args.boxapi, config, os.path.join(work, "control.sock"),
              os.path.join(work, "boxapi.log"))
    return lazy, box, port, token, os.path.join(fx, "ca.pem")


class Model:
    """For each key: the value of its last acknowledged change, and the value of the change in
    flight at the cut (sent, outcome unknown), if any."""

    def __init__(self):
        self.acked = {("mode",): ("enabled", None)}
        for t in REVOCABLE:
            self.acked[("revoked", t)] = False
        for t in PER_TOOL:
            for s in PER_TOOL_SECTIONS:
                self.acked[("withheld", t, s)] = False
        for s in ALL_TOOLS_SECTIONS:
            self.acked[("withheld", "*", s)] = False
        self.maybe = {}
        # This burst's commands: (ms since its start, command, outcome), for the report.
        self.burst = []
        self.burst_start = time.monotonic()
        self.lock = threading.Lock()
        self.acknowledged = 0
        self.unanswered = 0


def observe(box):
    """Every key's value as `ctl status` and `ctl tools` show it."""
    ok, status = box.ctl("status")
    if not ok:
        raise Failure(f"ctl status after restart: {status}")
    ok, tools = box.ctl("tools")
    if not ok:
        raise Failure(f"ctl tools after restart: {tools}")
    seen = {("mode",): (status["state"], status.get("retry_after"))}
    by_id = {t["id"]: t for t in status["tools"]}
    for t in REVOCABLE:
        seen[("revoked", t)] = by_id[t]["revoked_by"] == "ctl"
    withheld = {t["id"]: set(t["withheld"]) for t in tools}
    for t in PER_TOOL:
        for s in PER_TOOL_SECTIONS:
            seen[("withheld", t, s)] = s in withheld[t]
    for s in ALL_TOOLS_SECTIONS:
        seen[("withheld", "*", s)] = s in withheld[PLAIN]
    return seen


def worker(box, model, stop, rng, choose):
    """Sends changes one after another until the cut; records what was acknowledged."""
    while not stop.is_set():
        key, value, args = choose(rng)
        ok, reply = box.ctl(*args)
        with model.lock:
            at = round((time.monotonic() - model.burst_start) * 1000)
            model.burst.append((at, " ".join(args), "ok" if ok else f"no answer: {reply}"))
            if ok:
                model.acked[key] = value
                model.maybe.pop(key, None)
                model.acknowledged += 1
            else:
                # Killed before it answered (or it refused): either outcome is allowed, and
                # nothing this client sends after it, so it stays the one in flight.
                model.maybe[key] = value
                model.unanswered += 1
                return


def mode_change(rng):
    c = rng.choice(["disable", "enable", "suspend", "resume"])
    if c == "suspend":
        n = rng.randint(1, 100000)
        return ("mode",), ("suspended", n), ["suspend", "--retry-after", str(n)]
    return ("mode",), ("disabled" if c == "disable" else "enabled", None), [c]


def revocation_change(rng):
    t = rng.choice(REVOCABLE)
    revoke = rng.random() < 0.5
    return ("revoked", t), revoke, ["revoke" if revoke else "unrevoke", t]


def per_tool_change(rng):
    t, s = rng.choice(PER_TOOL), rng.choice(PER_TOOL_SECTIONS)
    hold = rng.random() < 0.5
    return ("withheld", t, s), hold, ["withhold" if hold else "allow", s, "--tool", t]


def all_tools_change(rng):
    s = rng.choice(ALL_TOOLS_SECTIONS)
    hold = rng.random() < 0.5
    return ("withheld", "*", s), hold, ["withhold" if hold else "allow", s]


def requests(port, token, ca, stop):
    """API requests from the plain tool, so that the daemon writes its activity file."""
    ctx = ssl.create_default_context(cafile=ca)
    while not stop.is_set():
        try:
            c = http.client.HTTPSConnection("localhost", port, context=ctx, timeout=2)
            c.request("GET", "/v1/counters", headers={"Authorization": f"Bearer {token}"})
            c.getresponse().read()
            c.close()
        except (OSError, http.client.HTTPException):
            time.sleep(0.01)


def check_files(state_dir, known_bad):
    """Every file the cut left in state_dir, read from the disk under LazyFS, must parse; a
    staging file (never renamed into place) is not state, but is counted. A file the daemon set
    aside as unreadable counts once, at the cut that made it."""
    bad, staging = [], 0
    if not os.path.isdir(state_dir):
        return bad, staging
    for name in sorted(os.listdir(state_dir)):
        path = os.path.join(state_dir, name)
        if name.startswith(".") and name.endswith(".tmp"):
            staging += 1
            continue
        if ".broken-" in name:
            if name not in known_bad:
                known_bad.add(name)
                bad.append(f"{name}: a file the daemon set aside as unreadable")
            continue
        with open(path, "rb") as f:
            data = f.read()
        try:
            if name in ("state.json", "state.json.prev", "activity.json"):
                v = json.loads(data)
                if not isinstance(v, dict) or "version" not in v:
                    raise ValueError("not a boxapi state object")
            else:
                bad.append(f"{name}: unexpected file ({len(data)} bytes)")
                continue
        except ValueError as e:
            bad.append(f"{name} ({len(data)} bytes): {e}")
    return bad, staging


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--lazyfs", required=True)
    ap.add_argument("--boxapi", required=True)
    ap.add_argument("--repo", required=True)
    ap.add_argument("--cuts", type=int, default=200)
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--max-seconds", type=float, default=540,
                    help="stop starting cuts after this long (the run stays bounded)")
    ap.add_argument("--burst-ms", type=int, default=400,
                    help="the cut falls uniformly within this long after the burst starts")
    args = ap.parse_args()
    seed = args.seed if args.seed is not None else random.randrange(1 << 32)
    rng = random.Random(seed)
    # No "-o" anywhere in the path: LazyFS takes a --config-path value containing "-o" (any
    # case) for an option and falls back to config/default.toml (its main.cpp, strcasestr), so a
    # random suffix starting with "o" failed the mount one run in about 27.
    work = tempfile.mkdtemp(prefix="boxapi_powercut_")
    log(f"power cuts: seed {seed}, work dir {work}")
    start = time.monotonic()
    lazy = box = None
    lost, unparsable, staging_max, cuts, in_flight_applied = [], [], 0, 0, 0
    leftover, activity_cuts = [], 0
    model = Model()
    try:
        lazy, box, port, token, ca = setup(args, work)
        lazy.mount()
        state_disk = os.path.join(lazy.root, "state")
        known_bad = set()
        box.start()
        for cut in range(1, args.cuts + 1):
            if time.monotonic() - start > args.max_seconds:
                log(f"time bound reached after {cuts} cuts")
                break
            stop = threading.Event()
            threads = [threading.Thread(target=worker,
                                        args=(box, model, stop, random.Random(rng.random()), c))
                       for c in (mode_change, revocation_change, per_tool_change,
                                 all_tools_change)]
            threads.append(threading.Thread(target=requests, args=(port, token, ca, stop)))
            model.burst, model.burst_start = [], time.monotonic()
            for t in threads:
                t.start()
            time.sleep(rng.uniform(0.005, args.burst_ms / 1000))
            # The cut: the daemon dies with whatever it was doing, then everything not fsynced
            # is gone. Nothing is sent after this (stop), and what was in flight gets no answer.
            stop.set()
            cut_at = round((time.monotonic() - model.burst_start) * 1000)
            box.kill()
            lazy.clear_cache()
            for t in threads:
                t.join()
            cuts += 1
            before = dict(model.acked)
            bad, staging = check_files(state_disk, known_bad)
            # The requests made the daemon write activity.json too (at once after a quiet
            # minute, so at most once per burst): count the cuts that found it on the disk.
            activity_cuts += os.path.exists(os.path.join(state_disk, "activity.json"))
            for b in bad:
                log(f"cut {cut}: UNPARSABLE {b}")
            unparsable += bad
            staging_max = max(staging_max, staging)
            box.start()
            seen = observe(box)
            # The daemon removes the staging files of dead writers at start: a cut during a
            # write must not leave a file on the flash for good.
            _, kept = check_files(state_disk, known_bad)
            if kept:
                leftover.append((cut, kept))
                log(f"cut {cut}: {kept} staging files still there after the restart")
            lost_before = len(lost)
            for key, want in before.items():
                got = seen[key]
                if got == want:
                    continue
                if key in model.maybe and got == model.maybe[key]:
                    in_flight_applied += 1
                    continue
                lost.append((cut, key, want, got))
                log(f"cut {cut}: LOST {key}: acknowledged {want}, found {got} "
                    f"(in flight: {model.maybe.get(key)})")
            if bad or len(lost) > lost_before:
                log(f"cut {cut} at {cut_at} ms; the burst's commands (ms, command, outcome):")
                for entry in sorted(model.burst):
                    log(f"    {entry}")
            # What the daemon holds now is the starting point of the next burst.
            model.acked = seen
            model.maybe = {}
            if cut % 25 == 0:
                log(f"{cut} cuts, {model.acknowledged} changes acknowledged, {len(lost)} lost, "
                    f"{len(unparsable)} unparsable, {time.monotonic() - start:.0f} s")
    except Failure as e:
        log(f"FAIL: {e}")
        return 1
    finally:
        if box:
            box.kill()
        if lazy:
            lazy.unmount()
    elapsed = time.monotonic() - start
    log(f"power cuts: {cuts} cuts, {model.acknowledged} changes acknowledged, "
        f"{model.unanswered} in flight at a cut ({in_flight_applied} of them found applied), "
        f"{len(lost)} acknowledged changes lost, {len(unparsable)} files unparsable "
        f"(activity.json among them after {activity_cuts} cuts), "
        f"at most {staging_max} staging files left by a cut, {len(leftover)} restarts that kept "
        f"some, {elapsed:.0f} s (seed {seed})")
    ok = (cuts >= min(args.cuts, 1) and not lost and not unparsable and not leftover
          and model.acknowledged > 0)
    if ok:
        subprocess.run(["rm", "-rf", work])
    else:
        log(f"kept {work} (boxapi.log, lazyfs.log, disk/state)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
