#!/bin/sh
# Runs in the box VM (init.sh), in /box, as root: starts the shipped boxapi with its root drop and
# prints what the host checks (tests/box/check.py), one "@@begin NAME" ... "@@end NAME SECONDS"
# section per check. Boot 1 ends with "@@reset": the host then forces a reboot from the qemu
# monitor; boot 2 checks that every ctl change acknowledged before survived it.
#   in-vm.sh 1|2
PHASE=$1
IP=/bin/ip
SOCK=/run/boxapi/control.sock
now() { cut -d' ' -f1 /proc/uptime; }
begin() { SECTION=$1; T=$(now); echo "@@begin $1"; }
end() { echo "@@end $SECTION $(awk -v a="$T" -v b="$(now)" 'BEGIN{printf "%.2f", b-a}')"; }
# Each call's output is printed between "@@call WHAT" and "@@rc STATUS".
ctl() { echo "@@call ctl $*"; ./boxapi ctl --socket $SOCK "$@"; rc=$?; echo; echo "@@rc $rc"; }
# get NS ADDR PATH TOKEN: one HTTPS request through openssl s_client, the raw response printed.
get() {
    echo "@@call get $1 $2 $3"
    printf 'GET %s HTTP/1.1\r\nHost: box.test\r\nAuthorization: Bearer %s\r\nConnection: close\r\n\r\n' "$3" "$4" |
        $IP netns exec "$1" timeout 30 openssl s_client -quiet -connect "$2" -servername box.test \
            -CAfile certs/ca.pem -verify_return_error 2>/tmp/s_client.err
    rc=$?; echo; echo "@@rc $rc"
}
# connect NS ADDR PORT: does a TCP connection open? (busybox nc; rc 0 = it did)
connect() {
    $IP netns exec "$1" nc -w 3 "$2" "$3" </dev/null >/dev/null 2>/tmp/nc.err
    echo "connect $1 $2 $3 rc=$? $(head -c 200 /tmp/nc.err)"
}
procstatus() { grep -E '^(Uid|Gid|CapInh|CapPrm|CapEff|CapBnd|CapAmb):' "/proc/$PID/status"; }
mkdir -p /run/boxapi /data/state
cat > boxapi.toml <<CONF
[server]
listen_interfaces = ["br-lan", "wlan0"]
port = 443
server_names = ["box.test"]
cert = "certs/server.pem"
key = "certs/server.key"
state_dir = "/data/state"
control_socket = "$SOCK"
interface_poll_ms = 200
user = "boxapi"
[auth]
audience = "https://box.test"
issuers = ["https://issuer.test"]
[[tool]]
id = "vmtool"
origins = ["https://tool.test"]
scopes = ["access", "counters"]
keys = ["keys/vmtool.jwk"]
[[tool]]
id = "othertool"
origins = ["https://other.test"]
scopes = ["access", "counters"]
keys = ["keys/othertool.jwk"]
[metrics]
wan_interface = "wan0"
CONF
start() {
    ./boxapi serve --config boxapi.toml 2>/tmp/boxapi.log &
    PID=$!
    i=0
    while [ $i -lt 300 ] && ! ./boxapi ctl --socket $SOCK status >/dev/null 2>&1; do sleep 0.1; i=$((i+1)); done
    if [ "$1" = listening ]; then
        i=0; while [ $i -lt 300 ] && ! grep -q '"listening"' /tmp/boxapi.log; do sleep 0.1; i=$((i+1)); done
    fi
}
VM=$(cat token.vmtool) OTHER=$(cat token.othertool)

if [ "$PHASE" = 1 ]; then
    begin start
    echo "sha256 $(sha256sum boxapi | cut -d' ' -f1)"
    start listening
    echo "pid $PID"
    procstatus
    netstat -ltn
    end

    begin lan4
    echo "peer_mac $($IP netns exec lan cat /sys/class/net/eth0/address)"
    get lan 192.168.60.1:443 /v1/access "$VM"
    echo "neigh $($IP neigh show 192.168.60.2)"
    end

    begin lan6
    get lan '[fd60::1]:443' /v1/access "$VM"
    echo "neigh $($IP -6 neigh show fd60::2)"
    end

    begin wan
    $IP netns exec wan ping -c 1 -W 2 10.99.0.1 >/dev/null 2>&1; echo "ping 10.99.0.1 rc=$?"
    $IP netns exec wan ping -c 1 -W 2 192.168.60.1 >/dev/null 2>&1; echo "ping 192.168.60.1 rc=$?"
    $IP netns exec wan ping -6 -c 1 -W 2 fd60::1 >/dev/null 2>&1; echo "ping fd60::1 rc=$?"
    connect wan 10.99.0.1 443
    connect wan 192.168.60.1 443
    connect wan fd99::1 443
    connect wan fd60::1 443
    connect lan 192.168.60.1 443
    end

    begin counters
    get lan 192.168.60.1:443 /v1/counters "$VM"
    echo "sysfs_before $(cat /sys/class/net/wan0/statistics/rx_bytes) $(cat /sys/class/net/wan0/statistics/tx_bytes)"
    # About 320 KB each way across wan0: the WAN host's pings to the box (8 KB, fragmented).
    $IP netns exec wan ping -q -c 40 -i 0.02 -s 8000 -W 2 10.99.0.1 >/dev/null 2>&1; echo "ping rc=$?"
    echo "sysfs_after $(cat /sys/class/net/wan0/statistics/rx_bytes) $(cat /sys/class/net/wan0/statistics/tx_bytes)"
    get lan 192.168.60.1:443 /v1/counters "$VM"
    end

    begin wifi
    $IP netns exec sta ping -q -c 10 -i 0.1 -s 1200 -W 1 192.168.50.1 >/dev/null 2>&1
    get sta 192.168.50.1:443 /v1/access "$VM"
    iw dev wlan0 station dump | grep -E 'Station|signal:|bitrate'
    end

    begin rebind
    ctl disable
    connect lan 192.168.60.1 443
    ctl enable
    i=0; while [ $i -lt 50 ] && ! $IP netns exec lan nc -w 1 192.168.60.1 443 </dev/null >/dev/null 2>&1; do sleep 0.1; i=$((i+1)); done
    get lan 192.168.60.1:443 /v1/access "$VM"
    procstatus
    end

    begin persist
    ctl revoke vmtool
    ctl withhold wifi --tool othertool
    ctl disable
    # The control: written like the state but never synced, it must not survive the reset.
    echo unsynced > /data/unsynced
    end
    # The host sends system_reset as soon as it reads this: nothing runs after the last ctl.
    echo "@@reset"
    sleep 600
else
    begin reboot
    dmesg | grep -i 'EXT4-fs' | sed 's/^/dmesg /'
    ls -la /data/state | sed 's/^/ls /'
    echo "unsynced $(cat /data/unsynced 2>/dev/null || echo gone)"
    start
    echo "pid $PID"
    ctl status
    ctl tools
    connect lan 192.168.60.1 443
    end

    begin restored
    ctl enable
    i=0; while [ $i -lt 50 ] && ! $IP netns exec lan nc -w 1 192.168.60.1 443 </dev/null >/dev/null 2>&1; do sleep 0.1; i=$((i+1)); done
    get lan 192.168.60.1:443 /v1/access "$OTHER"
    get lan 192.168.60.1:443 /v1/access "$VM"
    end
fi
echo "@@log"
cat /tmp/boxapi.log
