// Package selftest is a throwaway test package that proves hack/vm's kernel
// harness: it loads a SchedCLS program, attaches it to a veth (TCX, or legacy
// tc on kernels without TCX), checks that it sees a frame, probes BPF features
// and exercises a cgroup v2 memory controller. Each test reports what it found
// as "PODTAP_FACT key=value" lines, which hack/vm/run.sh turns into columns.
//
// It needs root. Outside the VM it skips what the machine cannot offer; inside
// the VM (PODTAP_VM=1, set by the harness's /init) every check is mandatory.
package selftest
