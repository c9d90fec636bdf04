#!/usr/bin/env bash
# Build kube-apiserver and etcd for podtap's integration tests, once per
# set of inputs, and print the directory that holds them on the last line
# of stdout. See README.md in this directory.
#
#   hack/kube/install.sh           build if not cached, print the directory
#   hack/kube/install.sh --print   print the directory only, build nothing
#
# Environment:
#   PODTAP_CACHE       cache root (default /var/cache/podtap)
#   PODTAP_BUILD_JOBS  go build -p (default 2)
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cache_root=${PODTAP_CACHE:-/var/cache/podtap}
jobs=${PODTAP_BUILD_JOBS:-2}

print_only=false
case "${1:-}" in
	"") ;;
	--print) print_only=true ;;
	*) echo "usage: $0 [--print]" >&2; exit 2 ;;
esac

log() { echo "install.sh: $*" >&2; }

# module_version FILE MODULE prints MODULE's required version in go.mod FILE.
module_version() {
	awk -v m="$2" '
		$1 == m && $2 ~ /^v/ { print $2; exit }
		$1 == "require" && $2 == m { print $3; exit }
	' "$1"
}

kube_version=$(module_version "$here/go.mod" k8s.io/kubernetes)
etcd_version=$(module_version "$here/etcd/go.mod" go.etcd.io/etcd/server/v3)
if [[ -z $kube_version || -z $etcd_version ]]; then
	log "cannot read the kubernetes or etcd version from $here/go.mod, $here/etcd/go.mod"
	exit 1
fi

# The same toolchain must build every time: never switch toolchains, never
# touch go.mod, never stamp VCS data (the binaries would differ per checkout).
export GOTOOLCHAIN=local CGO_ENABLED=0
export GOFLAGS="-mod=readonly -buildvcs=false"
go_version=$(go env GOVERSION)

kube_ldflags="-s -w -X k8s.io/component-base/version.gitVersion=$kube_version"
kube_minor=${kube_version#v*.}
kube_minor=${kube_minor%%.*}
kube_major=${kube_version#v}
kube_major=${kube_major%%.*}
kube_ldflags+=" -X k8s.io/component-base/version.gitMajor=$kube_major"
kube_ldflags+=" -X k8s.io/component-base/version.gitMinor=$kube_minor"
etcd_ldflags="-s -w -X go.etcd.io/etcd/api/v3/version.GitSHA=$etcd_version"

# Everything that changes the binaries is in the key: both build modules,
# etcd's main, the toolchain and the flags.
key=$(
	{
		printf '%s\n' "$go_version" "$CGO_ENABLED" "$kube_ldflags" "$etcd_ldflags"
		cat "$here/go.mod" "$here/go.sum" \
			"$here/etcd/go.mod" "$here/etcd/go.sum" "$here/etcd/main.go"
	} | sha256sum | cut -c1-12
)
dir=$cache_root/kube/$kube_version-$key

if $print_only; then
	echo "$dir"
	exit 0
fi

cached() { [[ -x $dir/kube-apiserver && -x $dir/etcd ]]; }

if cached; then
	log "cached: kube-apiserver $kube_version, etcd $etcd_version"
	echo "$dir"
	exit 0
fi

mkdir -p "$cache_root/kube"
# Two concurrent runs must not build twice or see a half-written directory.
exec 9>"$cache_root/kube/.lock"
flock 9
if cached; then
	log "built meanwhile by another run: $dir"
	echo "$dir"
	exit 0
fi

tmp=$(mktemp -d "$cache_root/kube/.build.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

start=$SECONDS
log "building etcd $etcd_version with $go_version"
(cd "$here/etcd" && go build -p "$jobs" -trimpath -ldflags "$etcd_ldflags" -o "$tmp/etcd" .)
log "etcd built in $((SECONDS - start)) s"

start=$SECONDS
log "building kube-apiserver $kube_version with $go_version (cold: several minutes)"
(cd "$here" && go build -p "$jobs" -trimpath -ldflags "$kube_ldflags" \
	-o "$tmp/kube-apiserver" k8s.io/kubernetes/cmd/kube-apiserver)
log "kube-apiserver built in $((SECONDS - start)) s"

"$tmp/kube-apiserver" --version >&2
"$tmp/etcd" --version >&2

chmod 0755 "$tmp"
rm -rf "$dir"
mv -T "$tmp" "$dir"
trap - EXIT
echo "$dir"
