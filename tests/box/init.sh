#!/bin/busybox sh
# /init of the box VM (tests/box/image.sh puts it there): a box's network on an ARM kernel.
# br-lan (192.168.60.1, fd60::1) bridges port lan1, a veth whose peer is the wired terminal in
# namespace "lan"; wan0 (10.99.0.1, fd99::1) is a veth to namespace "wan", which routes the
# LAN prefixes through the box; wlan0 is an open hostapd AP (192.168.50.1) with a station
# (wlan1, 192.168.50.2) in namespace "sta". The ext4 disk /dev/vda is /data, where boxapi keeps
# its state; /data/booted tells the second boot (after the host's system_reset) from the first.
# Then /box/in-vm.sh runs the checks; its output goes to the console between @@ markers.
/bin/busybox mkdir -p /proc /sys /dev /run /tmp /bin /sbin /usr/bin /usr/sbin
/bin/busybox --install -s /bin
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev
mount -t tmpfs run /run; mount -t tmpfs tmp /tmp; ln -s /run /var/run 2>/dev/null
echo 1 > /proc/sys/kernel/printk
say() { echo "vm-init: [$(cut -d' ' -f1 /proc/uptime)] $*"; }
die() { say "FATAL: $*"; echo "@@setup-failed"; poweroff -f; sleep 10; }
# busybox sh runs its own applets before PATH: iproute2's ip (netns, veth peers) by its path.
IP=/bin/ip
[ -x $IP ] || die "no iproute2 ip"
for m in $(cat /etc/modules); do
    case $m in
        mac80211_hwsim.ko) insmod /lib/modules/*/$m radios=2 || die "insmod $m" ;;
        *) insmod /lib/modules/*/$m || die "insmod $m" ;;
    esac
done
say "modules loaded"
# Nothing reaches the disk unless it is synced: no periodic journal commit, no timed writeback
# (so the forced reset loses whatever boxapi wrote without fsync).
echo 60000 > /proc/sys/vm/dirty_expire_centisecs
mount -t ext4 -o commit=600 /dev/vda /data || die "mount /dev/vda"
if [ -e /data/booted ]; then PHASE=2; else PHASE=1; echo 1 > /data/booted; sync; fi
say "boot $PHASE, $(uname -m) $(uname -r)"

$IP link set lo up
$IP link add br-lan type bridge || die "bridge"
$IP link add lan1 type veth peer name eth0 || die "veth"
$IP netns add lan || die "netns"
$IP link set eth0 netns lan
$IP link set lan1 master br-lan
$IP link set lan1 up
$IP addr add 192.168.60.1/24 dev br-lan
$IP addr add fd60::1/64 dev br-lan nodad
$IP link set br-lan up
$IP netns exec lan $IP link set lo up
$IP netns exec lan $IP addr add 192.168.60.2/24 dev eth0
$IP netns exec lan $IP addr add fd60::2/64 dev eth0 nodad
$IP netns exec lan $IP link set eth0 up

$IP link add wan0 type veth peer name eth0 || die "veth wan"
$IP netns add wan
$IP link set eth0 netns wan
$IP addr add 10.99.0.1/24 dev wan0
$IP addr add fd99::1/64 dev wan0 nodad
$IP link set wan0 up
$IP netns exec wan $IP link set lo up
$IP netns exec wan $IP addr add 10.99.0.2/24 dev eth0
$IP netns exec wan $IP addr add fd99::2/64 dev eth0 nodad
$IP netns exec wan $IP link set eth0 up
# A WAN host that sends to the box's LAN addresses: the box must still not answer.
$IP netns exec wan $IP route add 192.168.60.0/24 via 10.99.0.1
$IP netns exec wan $IP -6 route add fd60::/64 via fd99::1

i=0; while [ ! -e /sys/class/net/wlan1 ] && [ $i -lt 50 ]; do sleep 0.1; i=$((i+1)); done
[ -e /sys/class/net/wlan1 ] || die "no wlan1"
if [ $PHASE = 1 ]; then
    $IP netns add sta
    iw phy "$(cat /sys/class/net/wlan1/phy80211/name)" set netns name sta || die "iw phy set netns"
    $IP netns exec sta $IP link set lo up
    mkdir -p /run/hostapd /run/wpa_supplicant
    printf 'interface=wlan0\ndriver=nl80211\nctrl_interface=/run/hostapd\nssid=boxapi-test\nhw_mode=g\nchannel=1\nwmm_enabled=1\nieee80211n=1\nht_capab=[HT40+][SHORT-GI-20][SHORT-GI-40]\n' > /tmp/hostapd.conf
    printf 'ctrl_interface=/run/wpa_supplicant\nnetwork={\n ssid="boxapi-test"\n key_mgmt=NONE\n scan_ssid=1\n scan_freq=2412\n freq_list=2412\n}\n' > /tmp/wpa.conf
    hostapd -t -B -P /run/hostapd.pid -f /tmp/hostapd.log /tmp/hostapd.conf || { cat /tmp/hostapd.log; die "hostapd"; }
    i=0; while ! grep -q AP-ENABLED /tmp/hostapd.log && [ $i -lt 200 ]; do sleep 0.1; i=$((i+1)); done
    grep -q AP-ENABLED /tmp/hostapd.log || { cat /tmp/hostapd.log; die "AP not enabled"; }
    $IP addr add 192.168.50.1/24 dev wlan0
    $IP netns exec sta wpa_supplicant -t -B -i wlan1 -c /tmp/wpa.conf -P /run/wpa.pid -f /tmp/wpa.log || die "wpa_supplicant"
    $IP netns exec sta $IP addr add 192.168.50.2/24 dev wlan1
    $IP netns exec sta $IP link set wlan1 up
    i=0; while ! $IP netns exec sta iw dev wlan1 link 2>/dev/null | grep -q Connected && [ $i -lt 300 ]; do sleep 0.1; i=$((i+1)); done
    $IP netns exec sta iw dev wlan1 link | grep -q Connected || { cat /tmp/hostapd.log /tmp/wpa.log; die "station did not associate"; }
    i=0; while ! $IP netns exec sta ping -c1 -W1 192.168.50.1 >/dev/null 2>&1 && [ $i -lt 20 ]; do i=$((i+1)); done
    say "wifi up"
fi
say "network up"
echo "@@ready $PHASE"
( cd /box && sh ./in-vm.sh "$PHASE" ) 2>&1 </dev/null
echo "@@exit $? $PHASE"
sync
poweroff -f
sleep 10
