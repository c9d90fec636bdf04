#!/usr/bin/env bash
# make demo: build a sandbox pod (network namespace + veth + memory cgroup +
# an HTTP server inside), send it a few requests, and let podtap capture
# only the interesting ones, filtered in the kernel. tcpdump takes a full
# capture beside it, and tshark shows that podtap's file holds exactly what
# Wireshark's display filter selects from the full one. Everything made
# here is removed at the end, however the script ends.
set -euo pipefail
cd "$(dirname "$0")/.."

BIN=${BIN:-bin}
OUT=${OUT:-demo-out}
NS=podtap-demo
HOSTIF=podtap-demo0
CG=/sys/fs/cgroup/memory/podtap-demo
HOST4=198.18.255.253 POD4=198.18.255.254
HOST6=fd00:7064:ffff::1 POD6=fd00:7064:ffff::2
PORT=8080

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

server=""
cleanup() {
	set +e
	[ -n "$server" ] && kill "$server" 2>/dev/null && wait "$server" 2>/dev/null
	ip netns del "$NS" 2>/dev/null
	ip link del "$HOSTIF" 2>/dev/null
	[ -d "$CG" ] && rmdir "$CG" 2>/dev/null
	return 0
}
trap cleanup EXIT
trap 'exit 130' INT TERM
cleanup # whatever an interrupted earlier run left

say "sandbox pod: netns $NS, veth $HOSTIF <-> eth0, memory cgroup $CG"
ip netns add "$NS"
ip link add "$HOSTIF" type veth peer name eth0 netns "$NS"
ip addr add "$HOST4/30" dev "$HOSTIF"
ip -6 addr add "$HOST6/64" dev "$HOSTIF" nodad
ip link set "$HOSTIF" up
ip -n "$NS" addr add "$POD4/30" dev eth0
ip -n "$NS" -6 addr add "$POD6/64" dev eth0 nodad
ip -n "$NS" link set eth0 up
ip -n "$NS" link set lo up
mkdir "$CG"
# Join the cgroup before `ip netns exec`, which remounts /sys.
sh -c 'echo $$ > "$1/cgroup.procs" && exec ip netns exec "$2" "$3" -listen ":$4"' \
	sh "$CG" "$NS" "$BIN/podtap-demo-server" "$PORT" 2>/dev/null &
server=$!
for _ in $(seq 50); do
	curl -s -o /dev/null "http://$POD4:$PORT/" && break
	sleep 0.1
done
echo "HTTP server up in the pod (pid $server) at $POD4:$PORT and [$POD6]:$PORT"

traffic() {
	curl -s -o /dev/null "http://$POD4:$PORT/mytest"
	curl -s -o /dev/null "http://$POD4:$PORT/other"
	curl -s -o /dev/null "http://$POD4:$PORT/mytest?id=42"
	curl -s -o /dev/null -X POST --data "payload with lbtest inside" "http://$POD4:$PORT/upload"
	curl -s -o /dev/null "http://$POD4:$PORT/other?q=lbtest"
	curl -s -o /dev/null "http://[$POD6]:$PORT/mytest"
	curl -s -o /dev/null -X POST --data "no marker here" "http://[$POD6]:$PORT/upload"
}

# capture NAME PODTAP-FLAGS...: podtap and a full tcpdump side by side.
capture() {
	local name=$1
	shift
	tcpdump -i "$HOSTIF" -w "$OUT/$name-full.pcap" --immediate-mode -B 65536 -Z root 2>"$OUT/$name-full.log" &
	local td=$!
	"$BIN/podtap" capture --netns "$NS" -q "$@" 2>"$OUT/$name.log" &
	local pt=$!
	for _ in $(seq 200); do
		grep -q "capturing on" "$OUT/$name.log" && grep -q "listening on" "$OUT/$name-full.log" && break
		sleep 0.05
	done
	traffic
	sleep 0.5 # tcpdump stops reading at SIGINT: let it catch up
	kill -INT "$pt" "$td"
	wait "$pt"
	wait "$td" || true
	cat "$OUT/$name.log"
}

# compare NAME FILE WIRESHARK-FILTER: podtap's file against what the
# display filter selects from the full capture, packet by packet.
compare() {
	local fields=(-o tcp.desegment_tcp_streams:FALSE -T fields -e frame.len -e ip.src -e ipv6.src -e tcp.srcport -e tcp.seq_raw)
	tshark -r "$2" "${fields[@]}" 2>/dev/null >"$OUT/$1.podtap.txt"
	tshark -r "$OUT/$1-full.pcap" -Y "$3" "${fields[@]}" 2>/dev/null >"$OUT/$1.tshark.txt"
	if cmp -s "$OUT/$1.podtap.txt" "$OUT/$1.tshark.txt"; then
		echo "same $(wc -l <"$OUT/$1.podtap.txt") packets as tshark -Y '$3' selects from the full capture ($(tshark -r "$OUT/$1-full.pcap" 2>/dev/null | wc -l) packets)"
	else
		echo "DIFFERENT from tshark -Y '$3' on the full capture:" >&2
		diff "$OUT/$1.podtap.txt" "$OUT/$1.tshark.txt" >&2
		return 1
	fi
}

mkdir -p "$OUT"
say "podtap capture --netns $NS --uri /mytest -w $OUT/uri.pcap"
capture uri --uri /mytest -w "$OUT/uri.pcap"
tshark -r "$OUT/uri.pcap" 2>/dev/null
compare uri "$OUT/uri.pcap" 'http.request.uri == "/mytest"'

say "podtap capture --netns $NS --contains lbtest -w $OUT/contains.pcapng"
capture contains --contains lbtest -w "$OUT/contains.pcapng"
tshark -r "$OUT/contains.pcapng" -T fields -e frame.number -e ip.src -e http.request.method \
	-e http.request.uri -e frame.comment 2>/dev/null
compare contains "$OUT/contains.pcapng" 'tcp contains "lbtest"'

say "podtap mem --pid $server --explain"
"$BIN/podtap" mem --pid "$server" --explain

say "done: files in $OUT/; the sandbox pod is removed"
