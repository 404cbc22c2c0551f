#!/usr/bin/env python3
"""Boots one box VM (tests/box/run.sh builds its parts), forces a reboot from the qemu monitor
when boot 1 prints @@reset, and checks every section that in-vm.sh printed. Each check prints
ok/FAIL and the seconds the VM spent on it; exit 1 if any failed or the VM misbehaved."""
import argparse, json, os, re, socket, subprocess, sys, threading, time

QEMU = {
    "armhf": ["qemu-system-arm", "-M", "virt", "-cpu", "cortex-a15"],
    "arm64": ["qemu-system-aarch64", "-M", "virt", "-cpu", "cortex-a57"],
}
LAN_MAC_RE = re.compile(r"lladdr ([0-9a-f:]{17})")


def run_vm(a):
    """Boots the VM twice on the same disk: boot 1 until it prints @@reset, when the qemu
    monitor's system_reset stops it (-no-reboot: qemu exits at the reset instead of booting
    again, see docs/testing.md), then boot 2. Returns (console lines, event times in seconds
    from the start, problems)."""
    os.makedirs(a.out, exist_ok=True)
    mon = os.path.join(a.out, "monitor.sock")
    cmd = QEMU[a.arch] + [
        "-accel", "tcg", "-m", "512", "-smp", "1", "-nographic", "-nodefaults", "-no-reboot",
        "-kernel", a.kernel, "-initrd", a.initrd,
        # BOXAPI_VM_APPEND (e.g. "loglevel=7") adds kernel parameters when a boot needs a closer look.
        "-append", "console=ttyAMA0 rdinit=/init quiet loglevel=1 panic=-1 " + os.environ.get("BOXAPI_VM_APPEND", ""),
        "-serial", "stdio", "-monitor", f"unix:{mon},server=on,wait=off",
        "-drive", f"file={a.disk},if=none,format=raw,id=d0", "-device", "virtio-blk-device,drive=d0",
    ]
    start = time.monotonic()
    deadline = start + a.timeout
    lines, events, problems = [], {}, []
    log = open(os.path.join(a.out, "console.log"), "w")
    for boot in (1, 2):
        if os.path.exists(mon):
            os.unlink(mon)
        events[f"qemu{boot}"] = time.monotonic() - start
        q = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        timer = threading.Timer(max(1.0, deadline - time.monotonic()), q.kill)
        timer.start()
        for raw in q.stdout:
            line = raw.decode("utf-8", "replace").rstrip("\r\n").replace("\r", "")
            lines.append(line)
            t = time.monotonic() - start
            log.write(f"{t:7.1f} {line}\n")
            if line.startswith("@@ready "):
                key = "ready" + line.split()[1]
                if key != f"ready{boot}":
                    problems.append(f"boot {boot} says {line!r} at {t:.1f}s")
                    q.kill()
                events[key] = t
            elif line == "@@reset" and boot == 1:
                events["reset"] = t
                with socket.socket(socket.AF_UNIX) as s:
                    s.connect(mon)
                    s.sendall(b"system_reset\n")
                    time.sleep(0.2)  # let the monitor read it before the socket closes
            elif line.startswith("@@exit ") or line == "@@setup-failed":
                events[f"exit{boot}"] = t
        q.wait()
        timer.cancel()
        events[f"qemu{boot}_exit"] = time.monotonic() - start
        if time.monotonic() >= deadline:
            problems.append(f"timeout after {a.timeout}s (boot {boot})")
            break
        if boot == 1 and "reset" not in events:
            break
    log.close()
    events["qemu_exit"] = time.monotonic() - start
    return lines, events, problems


def parse(lines):
    """Sections: name -> {"lines": [...], "calls": [(what, body, rc)], "secs": float}."""
    sections, cur, call = {}, None, None
    for line in lines:
        if line.startswith("@@begin "):
            cur = {"lines": [], "calls": [], "secs": None}
            sections[line.split(" ", 1)[1]] = cur
        elif line.startswith("@@end ") and cur is not None:
            cur["secs"] = float(line.split()[2])
            cur = None
        elif cur is None:
            continue
        elif line.startswith("@@call "):
            call = [line[7:], []]
        elif line.startswith("@@rc ") and call is not None:
            cur["calls"].append((call[0], "\n".join(call[1]).strip(), int(line.split()[1])))
            call = None
        elif call is not None:
            call[1].append(line)
        else:
            cur["lines"].append(line)
    return sections


def http(body):
    """(status, json or None) of a raw HTTP/1.1 response (Content-Length or chunked)."""
    head, _, rest = body.partition("\n\n") if "\r\n\r\n" not in body else body.partition("\r\n\r\n")
    m = re.match(r"HTTP/1\.1 (\d{3})", head)
    if not m:
        return None, None
    if re.search(r"(?im)^transfer-encoding:\s*chunked", head):
        out, rest = "", rest.replace("\r\n", "\n")
        while rest:
            size, _, rest = rest.partition("\n")
            n = int(size.strip() or "0", 16)
            if n == 0:
                break
            out, rest = out + rest[:n], rest[n:].lstrip("\n")
        rest = out
    try:
        return int(m.group(1)), json.loads(rest.strip()) if rest.strip() else None
    except json.JSONDecodeError:
        return int(m.group(1)), None


class Checks:
    def __init__(self, arch):
        self.arch, self.failed, self.rows = arch, [], []

    def check(self, cond, what):
        print(("  ok   " if cond else "  FAIL ") + what)
        if not cond:
            self.failed.append(what)
        return cond


def calls(sec, prefix):
    return [c for c in sec["calls"] if c[0].startswith(prefix)]


def kv(sec, key):
    """Values of the lines "KEY rest" in a section."""
    return [l.split(" ", 1)[1] if " " in l else "" for l in sec["lines"] if l.split(" ", 1)[0] == key]


def card_of(c, sec, prefix, what, want=200):
    got = calls(sec, prefix)
    if not c.check(len(got) == 1 and got[0][2] == 0, f"{what}: TLS client exit 0"):
        return None
    status, doc = http(got[0][1])
    c.check(status == want, f"{what}: HTTP {want} (got {status})")
    return doc if isinstance(doc, dict) else None


def dropped(c, lines, when):
    st = {l.split(":")[0]: l.split(":", 1)[1].split() for l in lines if ":" in l}
    c.check(st.get("Uid") == ["100"] * 4 and st.get("Gid") == ["101"] * 4, f"{when}: runs as boxapi (uid 100, gid 101), root gone")
    c.check(st.get("CapEff") == ["0000000000000400"] and st.get("CapPrm") == ["0000000000000400"],
            f"{when}: CAP_NET_BIND_SERVICE only (CapEff/CapPrm {st.get('CapEff')}/{st.get('CapPrm')})")
    c.check(st.get("CapInh") == ["0000000000000000"] and st.get("CapAmb") == ["0000000000000000"], f"{when}: nothing inheritable or ambient")


def lan_card(c, sec, what, peer, mac):
    card = card_of(c, sec, "get lan", what)
    cl = (card or {}).get("client") or {}
    c.check(cl.get("connection") == "ethernet", f"{what}: client.connection ethernet (got {cl.get('connection')})")
    # The bridge port is found from the client's MAC (neighbour table -> br-lan's fdb): without
    # the MAC the card could only say br-lan.
    c.check(cl.get("interface") == "lan1", f"{what}: client.interface is the bridge port lan1 (got {cl.get('interface')})")
    c.check(cl.get("link_kbps") == 10_000_000, f"{what}: client.link_kbps from lan1's sysfs speed (got {cl.get('link_kbps')})")
    c.check(cl.get("wifi") is None, f"{what}: client.wifi null")
    neigh = " ".join(kv(sec, "neigh"))
    m = LAN_MAC_RE.search(neigh)
    c.check(m is not None and m.group(1) == mac, f"{what}: the kernel's neighbour entry for {peer} has the client's MAC {mac} ({neigh.strip()})")


def verify(a, sections, c):
    s = sections
    def sec(name):
        if name not in s:
            c.check(False, f"section {name} printed by the VM")
            return None
        return s[name]
    if x := sec("start"):
        c.check(kv(x, "sha256") == [a.sha256], "the VM runs the exact bytes make cross shipped (sha256)")
        dropped(c, x["lines"], "after start")
        listen = {l.split()[3] for l in x["lines"] if l.startswith("tcp") and "LISTEN" in l}
        api = {l for l in listen if l.endswith(":443")}
        for want in ["192.168.60.1:443", "fd60::1:443", "192.168.50.1:443"]:
            c.check(want in api, f"listens on {want} (LAN addresses on port 443)")
        c.check(not any(l.split(":443")[0] in ("0.0.0.0", "::", ":::") or l.startswith(":::") for l in api),
                f"no wildcard listener on 443 ({sorted(api)})")
        c.check(not any(l.startswith("10.99.") or l.startswith("fd99:") for l in listen), "nothing listens on a WAN address")
    mac = None
    if x := sec("lan4"):
        mac = (kv(x, "peer_mac") or [""])[0].strip()
        lan_card(c, x, "LAN IPv4 card", "192.168.60.2", mac)
    if x := sec("lan6"):
        lan_card(c, x, "LAN IPv6 card (rtnetlink neighbour dump)", "fd60::2", mac)
    if x := sec("wan"):
        res = {" ".join(l.split()[1:4]): l for l in x["lines"] if l.startswith("connect ")}
        pings = {l.split()[1]: l.split()[2] for l in x["lines"] if l.startswith("ping ")}
        for addr in ["10.99.0.1", "192.168.60.1", "fd60::1"]:
            c.check(pings.get(addr) == "rc=0", f"the WAN host reaches the box's {addr} (ping)")
        for key in ["wan 10.99.0.1 443", "wan 192.168.60.1 443", "wan fd99::1 443", "wan fd60::1 443"]:
            line = res.get(key, "")
            c.check(line != "" and "rc=0" not in line, f"WAN side gets no TCP connection: {key.split(' ', 1)[1]} ({line.split('rc=', 1)[-1].strip()})")
        c.check("rc=0" in res.get("lan 192.168.60.1 443", ""), "the LAN side does connect to 192.168.60.1:443 (control)")
    if x := sec("counters"):
        got = calls(x, "get lan")
        docs = [http(g[1])[1] if g[2] == 0 else None for g in got]
        before = [int(v) for v in (kv(x, "sysfs_before") or ["0 0"])[0].split()]
        after = [int(v) for v in (kv(x, "sysfs_after") or ["0 0"])[0].split()]
        if c.check(len(docs) == 2 and all(isinstance(d, dict) and d.get("wan") for d in docs), "two /v1/counters answers with wan counters"):
            w1, w2 = docs[0]["wan"], docs[1]["wan"]
            for i, k in enumerate(["rx_bytes", "tx_bytes"]):
                c.check(w2[k] - w1[k] >= 320_000, f"wan.{k} moved by the 320 KB sent across wan0 ({w1[k]} -> {w2[k]})")
                c.check(w1[k] <= before[i] and w2[k] >= after[i], f"wan.{k} is wan0's sysfs counter (api {w1[k]} <= sysfs {before[i]}, sysfs {after[i]} <= api {w2[k]})")
            cl = docs[1].get("client")
            c.check(isinstance(cl, dict) and cl.get("rx_bytes", 0) > 0, f"the LAN client's own counters (lan1 alone on its port): {cl}")
    if x := sec("wifi"):
        card = card_of(c, x, "get sta", "Wi-Fi card")
        cl = (card or {}).get("client") or {}
        w = cl.get("wifi") or {}
        c.check(cl.get("connection") == "wifi" and cl.get("interface") == "wlan0", f"the station is a Wi-Fi terminal on wlan0 ({cl.get('connection')}, {cl.get('interface')})")
        c.check(isinstance(cl.get("wifi"), dict), "client.wifi is an object (nl80211 station info)")
        c.check(all(k in w for k in ["band", "standard", "signal_dbm", "tx_kbps", "rx_kbps"]), f"client.wifi has band, standard, signal_dbm, tx_kbps, rx_kbps: {json.dumps(w)}")
        c.check(w.get("band") == "2.4GHz" and w.get("standard") == "n", "band 2.4GHz, standard n")
        c.check(isinstance(w.get("signal_dbm"), int) and w["signal_dbm"] < 0, "signal_dbm negative")
        c.check(isinstance(w.get("tx_kbps"), int) and w["tx_kbps"] > 0 and isinstance(w.get("rx_kbps"), int) and w["rx_kbps"] > 0, "tx_kbps and rx_kbps > 0")
        c.check(w.get("channel") == 1 and w.get("frequency_mhz") == 2412 and w.get("channel_width_mhz") == 40, "channel 1, 2412 MHz, 40 MHz wide")
        radios = ((card or {}).get("wifi") or {}).get("radios") or []
        c.check(len(radios) == 1 and radios[0].get("band") == "2.4GHz" and radios[0].get("channel_width_mhz") == 40, f"one radio (the AP's phy), 2.4GHz, 40 MHz: {radios}")
    if x := sec("rebind"):
        ctls = {w: rc for w, _, rc in calls(x, "ctl")}
        c.check(ctls.get("ctl disable") == 0 and ctls.get("ctl enable") == 0, "ctl disable, ctl enable answered")
        conn = [l for l in x["lines"] if l.startswith("connect lan")]
        c.check(len(conn) == 1 and "rc=0" not in conn[0], f"disabled: no connection on 443 ({conn[0] if conn else ''})")
        card_of(c, x, "get lan", "enabled again after the root drop: port 443 rebound")
        dropped(c, x["lines"], "after ctl enable")
    if x := sec("persist"):
        ctls = {w: rc for w, _, rc in calls(x, "ctl")}
        for w in ["ctl revoke vmtool", "ctl withhold wifi --tool othertool", "ctl disable"]:
            c.check(ctls.get(w) == 0, f"{w}: answered (exit 0)")
    if x := sec("reboot"):
        ext4 = [l for l in x["lines"] if l.startswith("dmesg")]
        print("  (ext4 after the reset: " + "; ".join(l[6:].split("]", 1)[-1].strip() for l in ext4) + ")")
        c.check(kv(x, "unsynced") in (["gone"], [""]), f"control: a file written without fsync before the reset is lost ({kv(x, 'unsynced')})")
        got = {w: (b, rc) for w, b, rc in calls(x, "ctl")}
        try:
            status = json.loads(got.get("ctl status", ("", 1))[0])
        except json.JSONDecodeError:
            status = {}
        c.check(status.get("state") == "disabled", f"after the forced reboot: state disabled (got {status.get('state')})")
        c.check("state_damaged" not in json.dumps(status.get("warnings")), f"the state file is intact (warnings {status.get('warnings')})")
        try:
            tools = json.loads(got.get("ctl tools", ("", 1))[0])
        except json.JSONDecodeError:
            tools = []
        tools = tools.get("tools", tools) if isinstance(tools, dict) else tools
        by_id = {t.get("id"): t for t in tools if isinstance(t, dict)}
        c.check(by_id.get("vmtool", {}).get("state") == "revoked", f"after the forced reboot: vmtool revoked (got {by_id.get('vmtool', {}).get('state')})")
        c.check("wifi" in (by_id.get("othertool", {}).get("withheld") or []), f"after the forced reboot: wifi withheld from othertool (got {by_id.get('othertool', {}).get('withheld')})")
        conn = [l for l in x["lines"] if l.startswith("connect lan")]
        c.check(len(conn) == 1 and "rc=0" not in conn[0], f"started disabled: no connection on 443 ({conn[0] if conn else ''})")
    if x := sec("restored"):
        got = calls(x, "ctl enable")
        c.check(len(got) == 1 and got[0][2] == 0, "ctl enable answered")
        other = [g for g in calls(x, "get lan")]
        if c.check(len(other) == 2, "two cards asked for after enable"):
            st, card = http(other[0][1]) if other[0][2] == 0 else (None, None)
            c.check(st == 200 and isinstance(card, dict), f"othertool gets its card (HTTP {st})")
            card = card or {}
            c.check("wifi" in card and card["wifi"] is None and card.get("withheld") == ["wifi"], f"othertool's card: wifi null, withheld [\"wifi\"] (got {card.get('withheld')})")
            st, _ = http(other[1][1]) if other[1][2] == 0 else (None, None)
            c.check(st == 401, f"vmtool (revoked) is refused: HTTP 401 (got {st})")


def main():
    p = argparse.ArgumentParser()
    for k in ["arch", "kernel", "initrd", "disk", "sha256", "out"]:
        p.add_argument("--" + k, required=True)
    p.add_argument("--timeout", type=float, default=300)
    p.add_argument("--replay", help="check a console.log kept from an earlier run, without a VM")
    a = p.parse_args()
    if a.replay:
        lines = [re.sub(r"^ *\d+\.\d ", "", l, count=1) for l in open(a.replay).read().splitlines()]
        ev = {"ready1": 0, "reset": 0, "ready2": 0, "qemu_exit": 0}  # no times: not measured
        problems = []
    else:
        lines, ev, problems = run_vm(a)
    c = Checks(a.arch)
    sections = parse(lines)
    ok_boot = c.check("ready1" in ev, "boot 1: kernel, modules, network and Wi-Fi up")
    if ok_boot:
        c.check("reset" in ev, "boot 1 reached @@reset (all ctl changes answered)")
        c.check("qemu1_exit" in ev or a.replay, "qemu stopped at the system_reset from its monitor")
        c.check("ready2" in ev, "boot 2 from the same disk")
        c.check(any(l.startswith("@@exit 0 2") for l in lines), "boot 2 ran to its end")
    for pr in problems:
        c.check(False, pr)
    verify(a, sections, c)
    t = lambda k: ev.get(k)
    print(f"  timings ({a.arch}): boot 1 ready at {t('ready1') or 0:.1f}s, @@reset at {t('reset') or 0:.1f}s,"
          f" qemu stopped {(t('qemu1_exit') or 0) - (t('reset') or 0):.1f}s after it; boot 2 ready"
          f" {(t('ready2') or 0) - (t('qemu2') or 0):.1f}s after its start; all done at {t('qemu_exit'):.1f}s")
    print("  per check (seconds in the VM): " + ", ".join(f"{n} {v['secs']}" for n, v in sections.items()))
    if c.failed:
        print(f"  {len(c.failed)} FAILED; console: {os.path.join(a.out, 'console.log')}")
        tail = [l for l in lines if not l.startswith("@@")][-60:]
        print("\n".join("  | " + l for l in tail))
        sys.exit(1)


if __name__ == "__main__":
    main()
