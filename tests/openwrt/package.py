"""The OpenWrt package (cross/openwrt/boxapi) against OpenWrt's conventions: shellcheck on its
shell files, and its init script run against procd's own procd.sh and libubox's jshn.sh with a
recording `ubus`, so that what procd would receive is checked, not guessed."""
import json
import os
import re
import shutil
import subprocess


def procd_sh(src):
    """procd.sh from OPENWRT_SRC: procd.sh, or openwrt/package/system/procd/files/procd.sh."""
    for p in ("procd.sh", "openwrt/package/system/procd/files/procd.sh"):
        if os.path.isfile(os.path.join(src, p)):
            return os.path.join(src, p)
    return None


def defined_functions(text):
    """What procd.sh defines: its functions, and those _procd_wrapper makes (procd_x() calls
    _procd_x through the lock)."""
    names = set(re.findall(r"^([A-Za-z_][A-Za-z0-9_]*)\(\)", text, re.M))
    m = re.search(r"^_procd_wrapper \\\n((?:\t\S+(?: \\)?\n)+)", text, re.M)
    if m:
        names |= set(re.findall(r"\t(\S+)", m.group(1)))
    return names


def hook(makefile, name):
    """The Makefile's Package/boxapi/<name> (postinst, postrm), as the shell script opkg runs
    ($$ is make's $)."""
    m = re.search(rf"^define Package/boxapi/{name}\n(.*?)^endef", makefile, re.M | re.S)
    return m.group(1).replace("$$", "$") if m else None


def checks(run, check, prefix, src, pkg, work):
    files = os.path.join(pkg, "files")
    makefile = open(os.path.join(pkg, "Makefile")).read()
    init = os.path.join(files, "boxapi.init")
    init_text = open(init).read()

    def shellcheck():
        check(shutil.which("shellcheck"), "shellcheck is missing (make deps)")
        scripts = []
        for name in ("postinst", "postrm"):
            text = hook(makefile, name)
            check(text, f"the Makefile has no Package/boxapi/{name}")
            scripts.append(os.path.join(work, f"{name}.sh"))
            with open(scripts[-1], "w") as f:
                f.write(text)
        # OpenWrt's /bin/sh is busybox ash: checked as POSIX sh (shellcheck has no ash dialect).
        targets = [init, os.path.join(files, "boxapi.rpcd"),
                   os.path.join(files, "boxapi.uci-defaults"), *scripts,
                   os.path.join(os.path.dirname(os.path.abspath(__file__)), "run.sh")]
        r = subprocess.run(["shellcheck", "-s", "sh"] + targets[:-1], capture_output=True, text=True)
        check(r.returncode == 0, "shellcheck -s sh:\n" + r.stdout + r.stderr)
        r = subprocess.run(["shellcheck", targets[-1]], capture_output=True, text=True)
        check(r.returncode == 0, "shellcheck run.sh:\n" + r.stdout + r.stderr)

    def conventions():
        check(re.search(r"^USE_PROCD=1$", init_text, re.M), "the init script does not set USE_PROCD=1")
        check(init_text.startswith("#!/bin/sh /etc/rc.common\n"), "the init script is not an rc.common script")
        for f in ("start_service", "reload_service"):
            check(re.search(rf"^{f}\(\) {{", init_text, re.M), f"the init script defines no {f}")
        # procd's reload triggers fire on uci changes (config.change); boxapi's configuration is
        # the contract's TOML, so both are absent for a reason the package must state.
        check(re.search(r"^service_triggers\(\) {\n\tprocd_add_reload_trigger ", init_text, re.M)
              or "# No service_triggers:" in init_text,
              "no service_triggers with a reload trigger, and no stated reason ('# No service_triggers:')")
        # An installed uci config, or the stated reason (the reason's own words name the path,
        # so the path alone proves nothing).
        check(re.search(r"\$\(1\)/etc/config/boxapi\b", makefile)
              or "# Not /etc/config/boxapi:" in makefile,
              "no /etc/config/boxapi installed, and no stated reason ('# Not /etc/config/boxapi:')")
        # LuCI caches its menu index and modules in /tmp: the new menu entry shows only once
        # they are cleared (luci.mk's postinst does it); rpcd forgets a removed plugin on reload.
        for name, needles in (("postinst", ("/tmp/luci-indexcache", "/tmp/luci-modulecache",
                                             "/etc/init.d/rpcd reload")),
                              ("postrm", ("/etc/init.d/rpcd reload",))):
            body = hook(makefile, name)
            check(body is not None, f"the Makefile defines no Package/boxapi/{name}")
            for n in needles:
                check(body is not None and n in body, f"{name} does not {n}")
        for needle, what in [
            ("include $(TOPDIR)/rules.mk", "rules.mk"),
            ("include $(INCLUDE_DIR)/package.mk", "package.mk"),
            ("$(eval $(call BuildPackage,boxapi))", "BuildPackage"),
            ("$(INSTALL_BIN) ./files/boxapi.init $(1)/etc/init.d/boxapi", "the init script in /etc/init.d"),
            ("$(INSTALL_BIN) ./files/boxapi.uci-defaults $(1)/etc/uci-defaults/", "the uci-defaults"),
            ("$(INSTALL_BIN) ./files/boxapi.rpcd $(1)/usr/libexec/rpcd/boxapi", "the rpcd plugin"),
            ("$(INSTALL_DATA) ./files/boxapi.acl.json $(1)/usr/share/rpcd/acl.d/", "the ACL in rpcd's acl.d"),
            ("$(INSTALL_CONF) ./files/boxapi.toml $(1)/etc/boxapi/boxapi.toml", "the configuration"),
        ]:
            check(needle in makefile, f"the Makefile does not install {what} as OpenWrt does: {needle}")
        m = re.search(r"^define Package/boxapi/conffiles\n(.*?)^endef", makefile, re.M | re.S)
        check(m and "/etc/boxapi/boxapi.toml\n" in m.group(1),
              "conffiles must keep /etc/boxapi/boxapi.toml across upgrades")
        # uci-defaults scripts are deleted once they exit 0: every path ends in exit 0.
        ud = open(os.path.join(files, "boxapi.uci-defaults")).read()
        check(ud.rstrip().endswith("exit 0"), "the uci-defaults script does not end with exit 0")
        # The LuCI menu entry opens the installed view, for users with the ACL's role.
        menu = json.load(open(os.path.join(files, "luci/menu.json")))
        acl = json.load(open(os.path.join(files, "boxapi.acl.json")))
        entry = menu["admin/services/boxapi"]
        check(f"/www/luci-static/resources/view/{entry['action']['path']}.js" in makefile.replace("$(1)", ""),
              f"menu.json's view {entry['action']['path']} is not installed")
        check(entry["depends"]["acl"] == list(acl), f"menu depends on {entry['depends']['acl']}, ACL is {list(acl)}")

    def procd():
        p = procd_sh(src)
        check(p, "no procd.sh in OPENWRT_SRC (procd.sh, or openwrt/package/system/procd/files/procd.sh)")
        defined = defined_functions(open(p).read())
        called = set(re.findall(r"\b(procd_[a-z_]+)\b", init_text))
        missing = sorted(called - defined)
        check(not missing, f"the init script calls what procd.sh does not define: {missing}")
        # Run it as rc.common would, with procd.sh and jshn.sh; `ubus` records what procd gets.
        root = os.path.join(work, "procd-root")
        for d in ("usr/share/libubox", "var/lock", "stub", "etc"):
            os.makedirs(os.path.join(root, d), exist_ok=True)
        shutil.copy(os.path.join(prefix, "share/libubox/jshn.sh"), os.path.join(root, "usr/share/libubox/jshn.sh"))
        log = os.path.join(root, "ubus.log")
        with open(os.path.join(root, "stub/ubus"), "w") as f:
            f.write('#!/bin/sh\nprintf \'%s %s\\t%s\\n\' "$1" "$2 $3" "$4" >> "$UBUS_LOG"\n')
        with open(os.path.join(root, "stub/boxapi"), "w") as f:  # an enrolment that fails
            f.write('#!/bin/sh\n[ "$1" = enrol ] && exit 1\nexit 0\n')
        for s in ("ubus", "boxapi"):
            os.chmod(os.path.join(root, "stub", s), 0o755)
        with open(os.path.join(root, "etc/enrolling.toml"), "w") as f:
            f.write('[enrol]\nzone = "box.example"\n')

        def service(extra):
            if os.path.exists(log):
                os.unlink(log)
            script = f"""
initscript=/etc/init.d/boxapi
# rc.common's default, which the init script may replace (procd_close_service calls it).
service_triggers() {{ return 0; }}
. "{p}"
. "{init}"
# The box's directories are not this PC's: rc.common's functions run, the file system is left alone.
mkdir() {{ :; }}
chmod() {{ :; }}
{extra}
procd_open_service boxapi "$initscript"
start_service
procd_close_service
reload_service
"""
            env = dict(os.environ, IPKG_INSTROOT=root, UBUS_LOG=log,
                       PATH=f"{root}/stub:{prefix}/bin:{os.environ['PATH']}",
                       LD_LIBRARY_PATH=os.path.join(prefix, "lib"))
            r = subprocess.run(["busybox", "sh", "-c", script], capture_output=True, text=True, env=env,
                               timeout=30)
            check(r.returncode == 0, f"the init script under procd.sh: {r.stdout} {r.stderr}")
            calls = [line.split("\t", 1) for line in open(log).read().splitlines()]
            check([c[0] for c in calls] == ["call service set", "call service signal"],
                  f"procd got {[c[0] for c in calls]}, not set then signal ({r.stderr})")
            return json.loads(calls[0][1]), json.loads(calls[1][1])

        svc, sig = service("")
        check(svc["name"] == "boxapi" and svc["script"] == "/etc/init.d/boxapi", f"service: {svc}")
        inst = svc["instances"]["instance1"]
        check(inst["command"] == ["/usr/bin/boxapi", "serve", "--config", "/etc/boxapi/boxapi.toml"],
              f"command: {inst['command']}")
        check(inst["respawn"] == ["3600", "5", "5"], f"respawn: {inst['respawn']}")
        check(inst["stderr"] is True and inst["term_timeout"] == 10, f"instance: {inst}")
        if "# No service_triggers:" not in init_text:
            trig = svc.get("triggers")
            check(trig and all(t[0] == "config.change" for t in trig), f"triggers: {trig}")
        check(sig == {"name": "boxapi", "signal": 1}, f"reload: {sig} (not HUP to every instance)")
        # A box that still has to enrol: retried every minute without limit.
        svc, _ = service(f'CONF="{root}/etc/enrolling.toml"; PROG="{root}/stub/boxapi"')
        check(svc["instances"]["instance1"]["respawn"] == ["60", "60", "0"],
              f"enrolling respawn: {svc['instances']['instance1']['respawn']}")

    run("package: shellcheck on the init script, rpcd plugin, uci-defaults, postinst, postrm", shellcheck)
    run("package: OpenWrt conventions (Makefile installs, conffiles, USE_PROCD, LuCI menu)", conventions)
    run("package: the init script under procd's own procd.sh (calls, argument shapes, triggers)", procd)
