# shellcheck shell=bash
# Simulated Bluetooth LE for the network-namespace lab (tools/lab sources
# this file when it exists).  The lab's buses ($LAB/hK/bus) have system.conf's
# default-deny policy: org.bluez may be owned only with the policy fragment
# tools/bluez-sim/bluetooth.conf (what BlueZ's package installs).  When the
# host's bus.conf ($LAB/hK/bus.conf, written by tools/lab) lacks it,
# lab_ble_up adds an <include> of it there and asks that dbus-daemon to
# ReloadConfig.
#
#   lab_ble_up K      start the air once ($LAB/air.sock), then host K's
#                     simulated bluetoothd (adapter AA:BB:CC:DD:EE:0K, hex)
#                     inside host K's namespace, on $LAB/hK/bus
#   lab_ble_down      stop every simulated bluetoothd, then the air
#   lab_ble_ctl ARGS  a control command for the air (air.py ctl): profile P,
#                     drop-notify P, disconnect-after-bytes N,
#                     disconnect [ADDR [ADDR]], out-of-range ADDR,
#                     in-range ADDR, adapter-off ADDR, adapter-on ADDR, status
#
# Settings: LAB_BLE_PROFILE (phone), LAB_BLE_SEED (0), LAB_BLE_DROP_NOTIFY (0).
# The namespace of host K is $(lab_ns K) when tools/lab defines lab_ns,
# otherwise pks-hK; without that namespace bluetoothd runs in the current
# one (it needs no network).  Without root, use tools/bluez-sim/simlab.py.

LAB_BLE_SIM="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/bluez-sim"
LAB_BLE_PYTHON=/usr/bin/python3

lab_ble_dir() {
	echo "${LAB:-${PKSYNC_LAB:-/run/pksync-lab}}"
}

lab_ble_alive() { # PIDFILE
	[ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null
}

lab_ble_spawn_air() { # DIR (backgrounded here so $! is the air's pid)
	"$LAB_BLE_PYTHON" "$LAB_BLE_SIM/air.py" --socket "$1/air.sock" \
		--profile "${LAB_BLE_PROFILE:-phone}" --seed "${LAB_BLE_SEED:-0}" \
		--drop-notify "${LAB_BLE_DROP_NOTIFY:-0}" >"$1/air.log" 2>&1 &
	echo $! >"$1/air.pid"
}

lab_ble_spawn_bluetoothd() { # DIR K NS
	local dir=$1 k=$2 ns=$3
	local -a pre=()
	if [ -n "$ns" ] && ip netns list 2>/dev/null | grep -qw -- "$ns"; then
		pre=(ip netns exec "$ns")
	fi
	"${pre[@]}" "$LAB_BLE_PYTHON" "$LAB_BLE_SIM/bluetoothd.py" \
		--bus "unix:path=$dir/h$k/bus" --air "$dir/air.sock" \
		--address "$(printf 'AA:BB:CC:DD:EE:%02X' "$k")" --name "h$k" \
		>"$dir/h$k/bluetoothd.log" 2>&1 &
	echo $! >"$dir/h$k/bluetoothd.pid"
}

lab_ble_wait() { # SECONDS TEST...: poll until TEST succeeds (bounded)
	local n=$(($1 * 10))
	shift
	while ! "$@"; do
		n=$((n - 1))
		[ "$n" -gt 0 ] || return 1
		sleep 0.1
	done
}

lab_ble_policy() { # DIR K: let org.bluez live on host K's bus
	local conf=$1/h$2/bus.conf
	[ -f "$conf" ] || return 0 # not a tools/lab bus: nothing to do
	grep -qs "bluez-sim/bluetooth.conf" "$conf" && return 0
	sed -i "s|</busconfig>|  <!-- added by tools/lab-ble.sh -->\n  <include ignore_missing=\"yes\">$LAB_BLE_SIM/bluetooth.conf</include>\n</busconfig>|" "$conf"
	"$LAB_BLE_PYTHON" -c '
import sys, dbus
dbus.bus.BusConnection(sys.argv[1]).call_blocking(
    "org.freedesktop.DBus", "/org/freedesktop/DBus", "org.freedesktop.DBus",
    "ReloadConfig", "", ())' "unix:path=$1/h$2/bus"
}

lab_ble_up() { # K
	local k=${1:?usage: lab_ble_up K} dir ns
	dir=$(lab_ble_dir)
	mkdir -p "$dir/h$k"
	lab_ble_policy "$dir" "$k" || {
		echo "lab-ble: could not add the org.bluez policy to h$k's bus" >&2
		return 1
	}
	if ! lab_ble_alive "$dir/air.pid"; then
		lab_ble_spawn_air "$dir"
		if ! lab_ble_wait 5 grep -qs "air: listening" "$dir/air.log"; then
			echo "lab-ble: the air did not start:" >&2
			tail -5 "$dir/air.log" >&2
			return 1
		fi
	fi
	if lab_ble_alive "$dir/h$k/bluetoothd.pid"; then
		return 0
	fi
	if declare -F lab_ns >/dev/null; then
		ns=$(lab_ns "$k")
	else
		ns=pks-h$k
	fi
	lab_ble_spawn_bluetoothd "$dir" "$k" "$ns"
	if ! lab_ble_wait 10 grep -qs "^ready" "$dir/h$k/bluetoothd.log"; then
		echo "lab-ble: bluetoothd of h$k did not start:" >&2
		tail -5 "$dir/h$k/bluetoothd.log" >&2
		if grep -qs "not allowed to own" "$dir/h$k/bluetoothd.log"; then
			echo "lab-ble: the bus of h$k must include $LAB_BLE_SIM/bluetooth.conf" >&2
		fi
		return 1
	fi
}

lab_ble_down() {
	local dir f
	dir=$(lab_ble_dir)
	for f in "$dir"/h*/bluetoothd.pid "$dir/air.pid"; do
		[ -e "$f" ] || continue
		if lab_ble_alive "$f"; then
			kill "$(cat "$f")" 2>/dev/null
			lab_ble_wait 5 eval "! kill -0 $(cat "$f") 2>/dev/null" ||
				kill -9 "$(cat "$f")" 2>/dev/null
		fi
		rm -f "$f"
	done
	rm -f "$dir/air.sock"
	return 0
}

lab_ble_ctl() { # ARGS...
	"$LAB_BLE_PYTHON" "$LAB_BLE_SIM/air.py" ctl "$(lab_ble_dir)/air.sock" "$@"
}
