package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/podtap/podtap/kube"
	"github.com/podtap/podtap/mem"
	"github.com/spf13/pflag"
)

// resolvePodForMem turns a POD argument into the pod's cgroup directory on
// this node and its app container IDs (containerStatuses[].containerID, in
// any form mem.ReadPod accepts). POD is NAME or NAMESPACE/NAME, found
// through the API server that cfg names. Tests replace it.
var resolvePodForMem = func(ctx context.Context, pod string, cfg kube.Config) (dir string, appContainerIDs []string, err error) {
	kc, err := kube.NewClient(cfg)
	if err != nil {
		return "", nil, err
	}
	return kc.PodCgroup(ctx, pod)
}

const memUsage = `Usage: podtap mem [flags] [POD]

Show a cgroup's memory as kubelet computes it: working set = usage - inactive
file cache, the figure behind container_memory_working_set_bytes and
'kubectl top'. For a pod-level cgroup, each container is shown, the sandbox
(pause) apart, with a pod total that says what it is made of.

Give exactly one target: --pid, --cgroup or POD.

Flags:
`

const defaultWatchInterval = 2 * time.Second

type memOptions struct {
	pid      int
	cgroup   string
	pod      string
	appIDs   []string
	output   string
	watch    time.Duration
	explain  bool
	hasPID   bool
	hasWatch bool
	kube     kube.Config // for a POD
}

// runMem implements `podtap mem`. With --watch it refreshes until SIGINT or
// SIGTERM, then returns nil.
func runMem(args []string, stdout, stderr io.Writer) error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return memMain(ctx, args, stdout, stderr)
}

func memMain(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	opts, err := parseMemFlags(args, stdout)
	if err != nil {
		return err
	}

	var dir string
	appIDs := opts.appIDs
	switch {
	case opts.pod != "":
		d, ids, err := resolvePodForMem(ctx, opts.pod, opts.kube)
		if err != nil {
			return fmt.Errorf("find cgroup of pod %s: %w", opts.pod, err)
		}
		dir = d
		if len(appIDs) == 0 {
			appIDs = ids
		}
	case opts.hasPID:
		d, err := mem.CgroupOfPID(opts.pid)
		if err != nil {
			return err
		}
		dir = d
	default:
		fi, err := os.Stat(opts.cgroup)
		if err != nil {
			if errors.Is(err, os.ErrNotExist) {
				return fmt.Errorf("cgroup %s: no such directory", opts.cgroup)
			}
			return fmt.Errorf("cgroup %s: %w", opts.cgroup, err)
		}
		if !fi.IsDir() {
			return fmt.Errorf("cgroup %s: not a directory", opts.cgroup)
		}
		dir = strings.TrimRight(opts.cgroup, "/")
		if dir == "" {
			dir = "/"
		}
	}

	if !opts.hasWatch {
		return showMem(stdout, dir, appIDs, opts, time.Now())
	}
	tick := time.NewTicker(opts.watch)
	defer tick.Stop()
	for {
		if err := showMem(stdout, dir, appIDs, opts, time.Now()); err != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
	}
}

func parseMemFlags(args []string, stdout io.Writer) (memOptions, error) {
	var o memOptions
	fs := pflag.NewFlagSet("podtap mem", pflag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.IntVar(&o.pid, "pid", 0, "show the memory cgroup of process `PID`")
	fs.StringVar(&o.cgroup, "cgroup", "", "show cgroup directory `PATH` (a pod-level cgroup shows its containers)")
	fs.StringSliceVar(&o.appIDs, "app-container-ids", nil, "the pod's app container `IDs` (containerd://ID, cri-o://ID, docker://ID or bare); other container cgroups are the sandbox")
	fs.StringVarP(&o.output, "output", "o", "table", "output format: table or json")
	fs.DurationVar(&o.watch, "watch", 0, "refresh every `INTERVAL` until interrupted (--watch alone: 2s)")
	fs.Lookup("watch").NoOptDefVal = defaultWatchInterval.String()
	fs.BoolVar(&o.explain, "explain", false, "spell out, with the numbers, how usage becomes the working set and what kubectl top shows")
	fs.StringVarP(&o.kube.Namespace, "namespace", "n", "", "namespace of POD (default: the kubeconfig context's, else \"default\"; NAMESPACE/NAME overrides it)")
	fs.StringVar(&o.kube.Kubeconfig, "kubeconfig", "", "kubeconfig file (default: $KUBECONFIG, ~/.kube/config, else in-cluster)")
	fs.StringVar(&o.kube.Context, "context", "", "kubeconfig context (default: its current context)")
	fs.StringVar(&o.kube.Node, "node", "", "this node's name (default: $NODE_NAME, else the host name)")
	fs.Usage = func() {
		fmt.Fprint(stdout, memUsage)
		fmt.Fprint(stdout, fs.FlagUsages())
	}

	if err := fs.Parse(joinWatchInterval(args)); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			return o, errHelp
		}
		return o, usageErrorf("mem: %v", err)
	}
	o.hasPID = fs.Changed("pid")
	o.hasWatch = fs.Changed("watch")

	if fs.NArg() > 1 {
		return o, usageErrorf("mem: one POD at most, got %d arguments: %s", fs.NArg(), strings.Join(fs.Args(), " "))
	}
	if fs.NArg() == 1 {
		o.pod = fs.Arg(0)
	}
	targets := 0
	for _, given := range []bool{o.hasPID, fs.Changed("cgroup"), o.pod != ""} {
		if given {
			targets++
		}
	}
	switch {
	case targets == 0:
		return o, usageErrorf("mem: no target: give --pid, --cgroup or a POD")
	case targets > 1:
		return o, usageErrorf("mem: give exactly one of --pid, --cgroup or a POD")
	case o.hasPID && o.pid <= 0:
		return o, usageErrorf("mem: --pid must be a positive process ID, got %d", o.pid)
	case fs.Changed("cgroup") && o.cgroup == "":
		return o, usageErrorf("mem: --cgroup needs a directory")
	case o.output != "table" && o.output != "json":
		return o, usageErrorf("mem: -o must be table or json, got %q", o.output)
	case o.hasWatch && o.watch <= 0:
		return o, usageErrorf("mem: --watch interval must be positive, got %v", o.watch)
	}
	if o.pod == "" {
		for _, name := range []string{"namespace", "kubeconfig", "context", "node"} {
			if fs.Changed(name) {
				return o, usageErrorf("mem: --%s needs a POD", name)
			}
		}
	}
	return o, nil
}

// joinWatchInterval lets `--watch 5s` mean `--watch=5s`: pflag does not
// take a separate value for a flag whose value is optional, and would take
// "5s" as the POD.
func joinWatchInterval(args []string) []string {
	out := make([]string, 0, len(args))
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			return append(out, args[i:]...)
		}
		if a == "--watch" && i+1 < len(args) {
			if _, err := time.ParseDuration(args[i+1]); err == nil {
				out = append(out, "--watch="+args[i+1])
				i++
				continue
			}
		}
		out = append(out, a)
	}
	return out
}

// showMem reads dir once and prints it: the pod view when dir is a
// pod-level cgroup with container cgroups under it, else the cgroup alone.
func showMem(w io.Writer, dir string, appIDs []string, o memOptions, now time.Time) error {
	pod, err := mem.ReadPod(dir, appIDs)
	if errors.Is(err, mem.ErrNotPod) {
		s, err := mem.Read(dir)
		if err != nil {
			return err
		}
		return printCgroup(w, s, o, now)
	}
	if err != nil {
		return err
	}
	return printPod(w, pod, o, now)
}

// JSON output. Byte counts are exact; a figure the kernel did not report is
// left out; limit_bytes and working_set_percent_of_limit are null when
// there is no limit.
type memStatsJSON struct {
	Cgroup                   string   `json:"cgroup"`
	CgroupVersion            int      `json:"cgroup_version"`
	UsageBytes               uint64   `json:"usage_bytes"`
	WorkingSetBytes          uint64   `json:"working_set_bytes"`
	AnonBytes                *uint64  `json:"anon_bytes,omitempty"`
	FileBytes                *uint64  `json:"file_bytes,omitempty"`
	ActiveAnonBytes          *uint64  `json:"active_anon_bytes,omitempty"`
	InactiveAnonBytes        *uint64  `json:"inactive_anon_bytes,omitempty"`
	ActiveFileBytes          *uint64  `json:"active_file_bytes,omitempty"`
	InactiveFileBytes        *uint64  `json:"inactive_file_bytes,omitempty"`
	MappedFileBytes          *uint64  `json:"mapped_file_bytes,omitempty"`
	ShmemBytes               *uint64  `json:"shmem_bytes,omitempty"`
	KernelBytes              *uint64  `json:"kernel_bytes,omitempty"`
	SockBytes                *uint64  `json:"sock_bytes,omitempty"`
	SlabBytes                *uint64  `json:"slab_bytes,omitempty"`
	SlabReclaimableBytes     *uint64  `json:"slab_reclaimable_bytes,omitempty"`
	SlabUnreclaimableBytes   *uint64  `json:"slab_unreclaimable_bytes,omitempty"`
	LimitBytes               *uint64  `json:"limit_bytes"`
	Unlimited                bool     `json:"unlimited"`
	WorkingSetPercentOfLimit *float64 `json:"working_set_percent_of_limit"`
}

func statsJSON(s mem.Stats) memStatsJSON {
	opt := func(f mem.Field) *uint64 {
		if v, ok := s.Value(f); ok {
			return &v
		}
		return nil
	}
	j := memStatsJSON{
		Cgroup: s.Dir, CgroupVersion: int(s.Version),
		UsageBytes: s.Usage, WorkingSetBytes: s.WorkingSet,
		AnonBytes: opt(mem.Anon), FileBytes: opt(mem.File),
		ActiveAnonBytes: opt(mem.ActiveAnon), InactiveAnonBytes: opt(mem.InactiveAnon),
		ActiveFileBytes: opt(mem.ActiveFile), InactiveFileBytes: opt(mem.InactiveFile),
		MappedFileBytes: opt(mem.MappedFile), ShmemBytes: opt(mem.Shmem),
		KernelBytes: opt(mem.Kernel), SockBytes: opt(mem.Sock),
		SlabBytes: opt(mem.Slab), SlabReclaimableBytes: opt(mem.SlabReclaimable),
		SlabUnreclaimableBytes: opt(mem.SlabUnreclaimable),
		Unlimited:              s.Unlimited,
	}
	if !s.Unlimited {
		limit := s.Limit
		j.LimitBytes = &limit
	}
	if pct, ok := s.LimitPercent(); ok {
		j.WorkingSetPercentOfLimit = &pct
	}
	return j
}

type memCgroupJSON struct {
	Kind string `json:"kind"` // "cgroup"
	Time string `json:"time"`
	memStatsJSON
	KubectlTop string `json:"kubectl_top"`
	Explain    string `json:"explain,omitempty"`
}

type memContainerJSON struct {
	ID      string `json:"id"`
	Runtime string `json:"runtime,omitempty"`
	memStatsJSON
	KubectlTop string `json:"kubectl_top"`
}

type memPodJSON struct {
	Kind            string             `json:"kind"` // "pod"
	Time            string             `json:"time"`
	PodCgroup       string             `json:"pod_cgroup"`
	PodUID          string             `json:"pod_uid,omitempty"`
	TotalDefinition string             `json:"total_definition"`
	PodCgroupError  string             `json:"pod_cgroup_error,omitempty"`
	Total           memStatsJSON       `json:"total"`
	KubectlTop      string             `json:"kubectl_top"`
	KubectlTopBytes uint64             `json:"kubectl_top_bytes"`
	Containers      []memContainerJSON `json:"containers"`
	Sandboxes       []memContainerJSON `json:"sandboxes"`
	Explain         string             `json:"explain,omitempty"`
}

func containersJSON(cs []mem.Container) []memContainerJSON {
	out := make([]memContainerJSON, 0, len(cs))
	for _, c := range cs {
		out = append(out, memContainerJSON{ID: c.ID, Runtime: c.Runtime, memStatsJSON: statsJSON(c.Stats), KubectlTop: mem.KubectlTop(c.Stats.WorkingSet)})
	}
	return out
}

func writeJSON(w io.Writer, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("encode json: %w", err)
	}
	_, err = w.Write(append(b, '\n'))
	return err
}

func printCgroup(w io.Writer, s mem.Stats, o memOptions, now time.Time) error {
	if o.output == "json" {
		j := memCgroupJSON{Kind: "cgroup", Time: now.UTC().Format(time.RFC3339Nano), memStatsJSON: statsJSON(s), KubectlTop: mem.KubectlTop(s.WorkingSet)}
		if o.explain {
			j.Explain = mem.Explain(s)
		}
		return writeJSON(w, j)
	}
	if o.hasWatch {
		fmt.Fprintf(w, "%s\n", now.Format(time.RFC3339))
	}
	fmt.Fprintf(w, "cgroup %s (cgroup %s)\n", s.Dir, s.Version)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "usage\t%s\t%d\t%s\n", mem.Human(s.Usage), s.Usage, s.Version.UsageFile())
	fmt.Fprintf(tw, "working set\t%s\t%d\tusage - %s\n", mem.Human(s.WorkingSet), s.WorkingSet, orNone(mem.InactiveFile.Source(s.Version)))
	for f := mem.Field(0); f < mem.NumFields; f++ {
		if v, ok := s.Value(f); ok {
			fmt.Fprintf(tw, "%s\t%s\t%d\t%s\n", f, mem.Human(v), v, f.Source(s.Version))
		} else if src := f.Source(s.Version); src != "" {
			fmt.Fprintf(tw, "%s\t-\t\tnot reported (no %s)\n", f, src)
		} else {
			fmt.Fprintf(tw, "%s\t-\t\tnot in cgroup %s\n", f, s.Version)
		}
	}
	if s.Unlimited {
		fmt.Fprintf(tw, "limit\tunlimited\t\t%s\n", s.Version.LimitFile())
	} else {
		fmt.Fprintf(tw, "limit\t%s\t%d\t%s\n", mem.Human(s.Limit), s.Limit, s.Version.LimitFile())
	}
	fmt.Fprintf(tw, "working set / limit\t%s\t\t\n", percent(s))
	fmt.Fprintf(tw, "kubectl top\t%s\t\tworking set in Mi, rounded down\n", mem.KubectlTop(s.WorkingSet))
	if err := tw.Flush(); err != nil {
		return err
	}
	if o.explain {
		fmt.Fprintf(w, "\n%s", mem.Explain(s))
	}
	if o.hasWatch {
		fmt.Fprintln(w)
	}
	return nil
}

func printPod(w io.Writer, p mem.Pod, o memOptions, now time.Time) error {
	if o.output == "json" {
		j := memPodJSON{
			Kind: "pod", Time: now.UTC().Format(time.RFC3339Nano),
			PodCgroup: p.Dir, PodUID: p.UID, TotalDefinition: string(p.Definition),
			Total:      statsJSON(p.Total),
			KubectlTop: mem.KubectlTop(p.TopBytes()), KubectlTopBytes: p.TopBytes(),
			Containers: containersJSON(p.Containers), Sandboxes: containersJSON(p.Sandboxes),
		}
		if p.PodCgroupErr != nil {
			j.PodCgroupError = p.PodCgroupErr.Error()
		}
		if o.explain {
			j.Explain = mem.ExplainPod(p)
		}
		return writeJSON(w, j)
	}
	if o.hasWatch {
		fmt.Fprintf(w, "%s\n", now.Format(time.RFC3339))
	}
	fmt.Fprintf(w, "pod cgroup %s (cgroup %s", p.Dir, p.Total.Version)
	if p.UID != "" {
		fmt.Fprintf(w, ", pod UID %s", p.UID)
	}
	fmt.Fprintln(w, ")")
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "ROLE\tCONTAINER\tUSAGE\tWORKING SET\tANON\tFILE\tACTIVE_FILE\tINACTIVE_FILE\tKERNEL\tSOCK\tSLAB\tLIMIT\tWSET%\tKUBECTL TOP\t")
	row := func(role, id string, s mem.Stats, top string) {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t", role, id, mem.Human(s.Usage), mem.Human(s.WorkingSet))
		for _, f := range []mem.Field{mem.Anon, mem.File, mem.ActiveFile, mem.InactiveFile, mem.Kernel, mem.Sock, mem.Slab} {
			if v, ok := s.Value(f); ok {
				fmt.Fprintf(tw, "%s\t", mem.Human(v))
			} else {
				fmt.Fprint(tw, "-\t")
			}
		}
		limit := "unlimited"
		if !s.Unlimited {
			limit = mem.Human(s.Limit)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t\n", limit, percent(s), top)
	}
	for _, c := range p.Containers {
		row("app", shortID(c.ID), c.Stats, mem.KubectlTop(c.Stats.WorkingSet))
	}
	for _, c := range p.Sandboxes {
		row("sandbox", shortID(c.ID), c.Stats, "-")
	}
	row("pod total", "("+string(p.Definition)+")", p.Total, mem.KubectlTop(p.TopBytes()))
	if err := tw.Flush(); err != nil {
		return err
	}
	switch p.Definition {
	case mem.PodCgroup:
		fmt.Fprintln(w, "pod total: the pod-level cgroup's own figures, which include every container and the sandbox; nothing is added on top")
	case mem.SumOfContainers:
		fmt.Fprintf(w, "pod total: the app containers added up, sandbox left out (pod-level cgroup unreadable: %v)\n", p.PodCgroupErr)
	}
	fmt.Fprintf(w, "kubectl top pod: %s, the app containers' working sets added up (sandbox left out)\n", mem.KubectlTop(p.TopBytes()))
	if o.explain {
		fmt.Fprintf(w, "\n%s", mem.ExplainPod(p))
	}
	if o.hasWatch {
		fmt.Fprintln(w)
	}
	return nil
}

func percent(s mem.Stats) string {
	if pct, ok := s.LimitPercent(); ok {
		return strconv.FormatFloat(pct, 'f', 1, 64) + "%"
	}
	return "-"
}

func shortID(id string) string {
	if len(id) > 12 {
		return id[:12]
	}
	return id
}

func orNone(s string) string {
	if s == "" {
		return "nothing"
	}
	return s
}
