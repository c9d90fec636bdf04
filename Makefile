# podtap: in-kernel filtered packet capture for Kubernetes pods.
#
#   make demo    install what is needed, build, run podtap on a sandbox pod
#   make test    install what is needed and run every test (CI runs this)
#   make bench   benchmarks (not part of make test)

GO        ?= go
BIN       ?= bin
MULTIARCH := $(shell gcc -print-multiarch 2>/dev/null || echo x86_64-linux-gnu)
VERSION   ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)
LDFLAGS   := -X main.version=$(VERSION)

.PHONY: all build deps generate demo test test-go test-kernels kube-assets bench clean

all: build

deps:
	hack/deps.sh

build:
	$(GO) build -ldflags "$(LDFLAGS)" -o $(BIN)/podtap ./cmd/podtap
	$(GO) build -o $(BIN)/podtap-demo-server ./cmd/podtap-demo-server

# Rebuild the BPF object and its Go bindings with Debian's clang, and
# record the sources' hash that a test checks the committed files against.
generate: deps
	cd loader && BPF2GO_CC=clang BPF2GO_STRIP=llvm-strip \
		BPF2GO_CFLAGS="-I/usr/include/$(MULTIARCH)" $(GO) generate ./...
	$(GO) test ./loader/ -run TestGeneratedUpToDate -update

demo: deps build
	hack/demo.sh

test: deps kube-assets test-go test-kernels

# A real kube-apiserver and etcd for the Kubernetes tests, built once from
# the Go module proxy and cached (see hack/kube/README.md).
kube-assets:
	hack/kube/install.sh

test-go:
	$(GO) vet ./...
	PODTAP_KUBE_ASSETS="$$(hack/kube/install.sh --print)" $(GO) test -v -count=1 ./...

# The privileged tests again inside each kernel of hack/vm/kernels.txt
# (Debian's 6.1 and 6.12), booted under qemu: BPF unit tests, attach and
# capture end to end, cgroup v2 memory. hack/vm/run.sh installs what it
# needs (hack/vm/deps.sh) and caches kernels in /var/cache/podtap/vm.
# TestGeneratedUpToDate needs ../bpf, which the VMs do not carry.
test-kernels:
	hack/vm/run.sh --strict ./loader ./mem ./e2e -- -test.short -test.skip '^TestGeneratedUpToDate$$'

bench: deps build
	$(GO) build -o $(BIN)/podtap-bench ./cmd/podtap-bench
	$(BIN)/podtap-bench -podtap $(BIN)/podtap

clean:
	rm -rf $(BIN) demo-out
