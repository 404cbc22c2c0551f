#!/bin/bash
# Runs inside the VM (vm.sh --run), on the AP side: boxapi serves wlan0 as the box would, and the
# station (netns sta, associated over the simulated air) asks for its card. Prints the card and
# the counters between markers for run.sh to check; iw's own view for the log.
set -u
cd /box
cat > boxapi.toml <<CONF
[server]
listen_interfaces = ["wlan0"]
port = 8443
server_names = ["box.test"]
cert = "certs/server.pem"
key = "certs/server.key"
state_dir = "/tmp/state"
control_socket = "/tmp/control.sock"
interface_poll_ms = 200
[auth]
audience = "https://box.test"
issuers = ["https://issuer.test"]
[[tool]]
id = "vmtool"
origins = ["https://tool.test"]
scopes = ["access", "counters"]
keys = ["keys/vmtool.jwk"]
[metrics]
wan_interface = "lo"
CONF
./boxapi serve --config boxapi.toml 2>/tmp/boxapi.log &
ask() {
  ip netns exec sta curl -sS --max-time 20 --cacert certs/ca.pem --resolve box.test:8443:192.168.50.1 \
    -H "Authorization: Bearer $(cat token)" "https://box.test:8443$1"
}
for _ in $(seq 100); do grep -q '"listening"' /tmp/boxapi.log && break; sleep 0.2; done
# Some traffic first, so that the rate statistics reflect data frames.
ip netns exec sta ping -q -c 10 -i 0.1 -s 1200 192.168.50.1 >/dev/null 2>&1
sleep 1.5
echo "===CARD==="; ask /v1/access; echo
echo "===COUNTERS==="; ask /v1/counters; echo
echo "===END==="
echo "--- iw dev wlan0 station dump"; iw dev wlan0 station dump | grep -E 'Station|signal:|bitrate'
echo "--- boxapi log"; cat /tmp/boxapi.log
kill %1 2>/dev/null
exit 0
