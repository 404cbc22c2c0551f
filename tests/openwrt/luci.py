"""The package's LuCI view (files/luci/rights.js) in Chromium, on LuCI's own client-side runtime
(luci-base's htdocs from OPENWRT_SRC/luci, unchanged) served by uhttpd and talking to the real
/ubus. LuCI's server-side dispatcher (ucode) is not built: the page it would render for the view
(luci-base's ucode/template/view.ut with header.ut's `new LuCI(env)`) is written here, with the
session logged in through /ubus as its login page does."""
import json
import os
import shutil
import subprocess


def page(sid, docroot, theme):
    env = {
        "media": "/luci-static/bootstrap", "resource": "/luci-static/resources",
        "scriptname": "/cgi-bin/luci", "pathinfo": "/admin/services/boxapi",
        "documentroot": docroot, "requestpath": ["admin", "services", "boxapi"],
        "dispatchpath": ["admin", "services", "boxapi"], "pollinterval": 5, "ubuspath": "/ubus/",
        "sessionid": sid, "token": "0" * 32,
        "nodespec": {"action": {"type": "view", "path": "boxapi/rights"}},
        "apply_rollback": 90, "apply_holdoff": 4, "apply_timeout": 5, "apply_display": 1.5,
        "rollback_token": None,
    }
    css = '<link rel="stylesheet" href="/luci-static/bootstrap/cascade.css">' if theme else ""
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Measurement API - LuCI</title>{css}
<script src="/luci-static/resources/cbi.js"></script></head>
<body class="lang_en">
<header><a class="brand" href="/">box</a><ul class="nav" id="topmenu" style="display:none"></ul>
<div id="indicators" class="pull-right"></div></header>
<div id="maincontent" class="container"><div id="tabmenu" style="display:none"></div>
<script type="text/javascript" src="/luci-static/resources/promis.min.js"></script>
<script type="text/javascript" src="/luci-static/resources/luci.js"></script>
<script type="text/javascript">
	L = new LuCI({json.dumps(env)});
</script>
<div id="view">
	<div class="spinning">Loading view…</div>
	<script type="text/javascript">
		L.require('ui').then(function(ui) {{
			ui.instantiateView('boxapi/rights');
		}});
	</script>
</div>
</div></body></html>
"""


def checks(run, check, src, root, www, acl_d, http_port, api_port, work, login, tools):
    luci = os.path.join(src, "luci")
    htdocs = os.path.join(luci, "modules/luci-base/htdocs")
    e2e = os.path.join(root, "tests/e2e")
    steps = {}

    def view():
        check(os.path.isfile(os.path.join(htdocs, "luci-static/resources/luci.js")),
              f"no LuCI runtime in {htdocs} (OPENWRT_SRC/luci: openwrt/luci)")
        check(shutil.which("node") and os.path.exists("/usr/bin/chromium"),
              "node or Debian's chromium is missing (make test-e2e installs them)")
        if not os.path.isdir(os.path.join(e2e, "node_modules/playwright-core")):
            subprocess.run(["npm", "install", "--no-audit", "--no-fund"], cwd=e2e, check=True,
                           capture_output=True, timeout=300)
        # As the packages install them: luci-base's static files, the theme, the package's view.
        shutil.copytree(os.path.join(htdocs, "luci-static"), os.path.join(www, "luci-static"),
                        dirs_exist_ok=True)
        theme = os.path.join(luci, "themes/luci-theme-bootstrap/htdocs/luci-static")
        if os.path.isdir(theme):
            shutil.copytree(theme, os.path.join(www, "luci-static"), dirs_exist_ok=True)
        shutil.copy(os.path.join(luci, "modules/luci-base/root/usr/share/rpcd/acl.d/luci-base.json"),
                    acl_d)
        dest = os.path.join(www, "luci-static/resources/view/boxapi")
        os.makedirs(dest, exist_ok=True)
        shutil.copy(os.path.join(root, "cross/openwrt/boxapi/files/luci/rights.js"), dest)
        with open(os.path.join(www, "boxapi.html"), "w") as f:
            f.write(page(login("subscriber", "box-secret"), www, os.path.isdir(theme)))
        shots = os.path.join(os.environ.get("OUT", os.path.join(root, "tests/out")), "openwrt")
        os.makedirs(shots, exist_ok=True)
        r = subprocess.run(["node", os.path.join(os.path.dirname(os.path.abspath(__file__)), "luci.mjs"),
                            f"http://127.0.0.1:{http_port}/boxapi.html", str(api_port), shots],
                           capture_output=True, text=True, timeout=180)
        for line in r.stdout.splitlines():
            try:
                v = json.loads(line)
                steps[v["step"]] = v
            except ValueError:
                pass
        check("crashed" not in steps, f"the browser run: {steps.get('crashed')} {r.stderr[-2000:]}")
        loaded = steps.get("loaded")
        check(loaded, f"no view rendered: {r.stdout[-2000:]} {r.stderr[-2000:]}")
        v = loaded["view"]
        check(v["state"].startswith("State: enabled") and v["button"] == "Switch off", f"first render: {v}")
        names = [row[0] for row in v["rows"]]
        check(len(names) == 2 and names[0].startswith("Alpha Speed") and "alpha" in names[0]
              and "beta" in names[1], f"tools listed: {v['rows']}")
        print(f"     LuCI runtime booted and rendered the view in {loaded['ms'] / 1000:.1f} s; "
              f"what failed in the browser (no server-side dispatcher, no rpcd luci/file objects): "
              f"{sorted(set(e.splitlines()[0] for e in steps.get('errors', loaded)['errors']))}")

    def switch():
        check("loaded" in steps, "the view did not render")
        off, on = steps.get("off"), steps.get("on")
        check(off and off["view"]["state"].startswith("State: disabled") and off["view"]["button"] == "Switch on",
              f"after Switch off: {off}")
        check(off["calls"] == 1, f"boxapi.disable calls sent by rpc.js: {off['calls']}")
        check(off["port_open"] is False, "the API port is still open after Switch off")
        print(f"     browser: Switch off {off['ms'] / 1000:.1f} s, Switch on {on['ms'] / 1000:.1f} s")
        check(on and on["view"]["state"].startswith("State: enabled") and on["port_open"] is True,
              f"after Switch on: {on}")

    def withhold():
        w = steps.get("withhold")
        check(w and w["ticked"] is False, f"the wifi tick box: {w}")
        sent = [c for c in w["calls"] if isinstance(c, list) or isinstance(c, dict)]
        check(sent, f"rpc.js sent no withhold: {w}")
        alpha = [t for t in tools() if t["id"] == "alpha"]
        check(alpha and alpha[0].get("withheld") == ["wifi"], f"ctl tools after unticking: {alpha}")

    run("LuCI: rights.js on LuCI's runtime in Chromium lists the tools", view)
    run("LuCI: its switch turns the API off (port closed) and on (port open)", switch)
    run("LuCI: unticking wifi for a tool withholds it (ctl tools)", withhold)
