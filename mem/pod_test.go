package mem

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const (
	podUID   = "8d3e2f41-5b6c-4a7d-9e0f-1a2b3c4d5e6f"
	app1ID   = "1111111111111111111111111111111111111111111111111111111111111111"
	app2ID   = "2222222222222222222222222222222222222222222222222222222222222222"
	pauseID  = "9999999999999999999999999999999999999999999999999999999999999999"
	conmonID = "cccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc"
)

// podFixture lays out a pod's cgroups the systemd-driver way (v2) or the
// cgroupfs way (v1), with a fake /proc holding the processes' command
// lines. It returns the pod directory and the fake /proc.
type podFixture struct {
	t        *testing.T
	v        Version
	dir      string
	procRoot string
}

func newPodFixture(t *testing.T, v Version) *podFixture {
	root := t.TempDir()
	var dir string
	if v == V2 {
		dir = filepath.Join(root, "kubepods.slice", "kubepods-burstable.slice",
			"kubepods-burstable-pod"+strings.ReplaceAll(podUID, "-", "_")+".slice")
	} else {
		dir = filepath.Join(root, "kubepods", "besteffort", "pod"+podUID)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	f := &podFixture{t: t, v: v, dir: dir, procRoot: filepath.Join(root, "proc")}
	f.cgroup("", 300<<20, 40<<20, "")
	return f
}

// name is the directory name a runtime gives container id.
func (f *podFixture) name(id string) string {
	if f.v == V2 {
		return "cri-containerd-" + id + ".scope"
	}
	return id
}

// cgroup writes memory files into the pod dir (sub "") or a child.
func (f *podFixture) cgroup(sub string, usage, inactive uint64, limit string) string {
	dir := filepath.Join(f.dir, sub)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		f.t.Fatal(err)
	}
	if f.v == V2 {
		if limit == "" {
			limit = "max"
		}
		v2Fixture(f.t, dir, usage, v2Stat.with("inactive_file", inactive), limit)
	} else {
		if limit == "" {
			limit = "9223372036854771712"
		}
		v1Fixture(f.t, dir, usage, v1Stat.with("total_inactive_file", inactive), limit)
	}
	return dir
}

// procs puts processes with the given command lines into cgroup dir.
func (f *podFixture) procs(dir string, cmdlines map[string]string) {
	var pids []string
	for pid, cmdline := range cmdlines {
		pids = append(pids, pid)
		p := filepath.Join(f.procRoot, pid)
		os.MkdirAll(p, 0o755)
		writeFiles(f.t, p, map[string]string{"cmdline": cmdline})
	}
	writeFiles(f.t, dir, map[string]string{"cgroup.procs": strings.Join(pids, "\n") + "\n"})
}

func (f *podFixture) read(appIDs []string, rf readFileFunc) (Pod, error) {
	if rf == nil {
		rf = os.ReadFile
	}
	return readPod(f.dir, appIDs, f.v, rf, f.procRoot)
}

func ids(cs []Container) []string {
	var out []string
	for _, c := range cs {
		out = append(out, c.ID)
	}
	return out
}

func sameIDs(got []Container, want ...string) bool {
	return strings.Join(ids(got), ",") == strings.Join(want, ",")
}

func TestMemReadPod(t *testing.T) {
	for _, v := range []Version{V1, V2} {
		t.Run(v.String(), func(t *testing.T) {
			f := newPodFixture(t, v)
			a1 := f.cgroup(f.name(app1ID), 120<<20, 30<<20, "")
			a2 := f.cgroup(f.name(app2ID), 60<<20, 10<<20, "")
			pause := f.cgroup(f.name(pauseID), 1<<20, 0, "")
			if v == V2 {
				f.cgroup("crio-conmon-"+conmonID+".scope", 2<<20, 0, "") // not a container
			}
			os.WriteFile(filepath.Join(f.dir, "not-a-dir-"+app1ID), nil, 0o644)
			f.procs(a1, map[string]string{"200": "nginx: master process\x00", "201": "nginx: worker\x00"})
			f.procs(a2, map[string]string{})
			f.procs(pause, map[string]string{"100": "/pause\x00"})

			p, err := f.read(nil, nil)
			if err != nil {
				t.Fatal(err)
			}
			if p.UID != podUID || p.Dir != f.dir {
				t.Errorf("UID, Dir = %q, %q", p.UID, p.Dir)
			}
			if !sameIDs(p.Containers, app1ID, app2ID) || !sameIDs(p.Sandboxes, pauseID) {
				t.Fatalf("containers %v, sandboxes %v", ids(p.Containers), ids(p.Sandboxes))
			}
			if v == V2 && p.Containers[0].Runtime != "containerd" {
				t.Errorf("Runtime = %q, want containerd", p.Containers[0].Runtime)
			}
			if p.Definition != PodCgroup || p.PodCgroupErr != nil {
				t.Errorf("Definition = %q (%v), want %q", p.Definition, p.PodCgroupErr, PodCgroup)
			}
			// The pod total is the pod cgroup's own reading, nothing added.
			own, err := read(f.dir, v, os.ReadFile)
			if err != nil {
				t.Fatal(err)
			}
			if p.Total != own {
				t.Errorf("Total = %+v, want the pod cgroup's own reading %+v", p.Total, own)
			}
			// kubectl top pod: the app containers only.
			want := p.Containers[0].Stats.WorkingSet + p.Containers[1].Stats.WorkingSet
			if p.TopBytes() != want || want != (120<<20-30<<20)+(60<<20-10<<20) {
				t.Errorf("TopBytes = %d, want %d", p.TopBytes(), want)
			}
		})
	}
}

func TestMemPodSumOfContainers(t *testing.T) {
	f := newPodFixture(t, V2)
	f.cgroup(f.name(app1ID), 50<<20, 80<<20, "104857600") // inactive above usage: working set 0
	f.cgroup(f.name(app2ID), 60<<20, 10<<20, "209715200")
	f.procs(f.cgroup(f.name(pauseID), 1<<20, 0, ""), map[string]string{"100": "/pause\x00"})
	// app2's memory.stat lacks sock; the pod-level cgroup has no memory files.
	writeFiles(t, filepath.Join(f.dir, f.name(app2ID)), map[string]string{"memory.stat": v2Stat.without("sock").String()})
	os.Remove(filepath.Join(f.dir, "memory.current"))

	p, err := f.read(nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if p.Definition != SumOfContainers || !errors.Is(p.PodCgroupErr, ErrNoMemory) {
		t.Fatalf("Definition = %q, PodCgroupErr = %v; want %q with ErrNoMemory", p.Definition, p.PodCgroupErr, SumOfContainers)
	}
	c1, c2 := p.Containers[0].Stats, p.Containers[1].Stats
	if p.Total.Usage != c1.Usage+c2.Usage {
		t.Errorf("Total.Usage = %d, want the app containers' %d + %d (sandbox left out)", p.Total.Usage, c1.Usage, c2.Usage)
	}
	// The sum of working sets, not sum(usage) - sum(inactive): the first
	// container's floor at zero must not eat into the second's.
	if c1.WorkingSet != 0 || p.Total.WorkingSet != c2.WorkingSet || p.TopBytes() != c2.WorkingSet {
		t.Errorf("working sets %d + %d, Total %d, TopBytes %d", c1.WorkingSet, c2.WorkingSet, p.Total.WorkingSet, p.TopBytes())
	}
	if p.Total.Anon != c1.Anon+c2.Anon || !p.Total.Has(Anon) {
		t.Errorf("Total.Anon = %d, want %d", p.Total.Anon, c1.Anon+c2.Anon)
	}
	if p.Total.Has(Sock) || p.Total.Sock != 0 {
		t.Errorf("Total has sock (%d) though one container lacks it", p.Total.Sock)
	}
	if p.Total.Unlimited || p.Total.Limit != 100<<20+200<<20 {
		t.Errorf("Total limit = %d (unlimited %v), want the sum of the containers' limits", p.Total.Limit, p.Total.Unlimited)
	}
	if p.Total.Dir != f.dir || p.Total.Version != V2 {
		t.Errorf("Total Dir, Version = %q, %v", p.Total.Dir, p.Total.Version)
	}

	// One container without a limit makes the sum unlimited.
	writeFiles(t, filepath.Join(f.dir, f.name(app2ID)), map[string]string{"memory.max": "max\n"})
	if p, err = f.read(nil, nil); err != nil || !p.Total.Unlimited || p.Total.Limit != 0 {
		t.Errorf("with an unlimited container: Limit %d, Unlimited %v, err %v", p.Total.Limit, p.Total.Unlimited, err)
	}
}

func TestMemPodSandboxDetection(t *testing.T) {
	f := newPodFixture(t, V1)
	dirs := map[string]string{}
	for _, id := range []string{app1ID, app2ID, pauseID} {
		dirs[id] = f.cgroup(f.name(id), 10<<20, 1<<20, "")
	}

	for _, tc := range []struct {
		name         string
		cmdlines     map[string]map[string]string // id -> pid -> cmdline
		appIDs       []string
		wantApps     []string
		wantSandboxs []string
	}{
		{
			name: "pause binary by path",
			cmdlines: map[string]map[string]string{
				pauseID: {"100": "/pause\x00"}, app1ID: {"200": "/usr/bin/app\x00-pause\x00"}, app2ID: {"300": "sh\x00pause\x00"},
			},
			wantApps: []string{app1ID, app2ID}, wantSandboxs: []string{pauseID},
		},
		{
			name: "pause in a directory, among other processes",
			cmdlines: map[string]map[string]string{
				pauseID: {"101": "/usr/local/bin/pause\x00", "102": "/bin/sh\x00"}, app1ID: {"201": "pause-helper\x00"}, app2ID: {"301": "/opt/nopause\x00"},
			},
			wantApps: []string{app1ID, app2ID}, wantSandboxs: []string{pauseID},
		},
		{
			name:     "no pause process: nothing is the sandbox",
			cmdlines: map[string]map[string]string{pauseID: {}, app1ID: {}, app2ID: {}},
			wantApps: []string{app1ID, app2ID, pauseID},
		},
		{
			name:     "app IDs given in containerStatus and bare forms win over command lines",
			cmdlines: map[string]map[string]string{pauseID: {"100": "/bin/sleep\x00"}, app1ID: {"200": "/pause\x00"}, app2ID: {}},
			appIDs:   []string{"containerd://" + app1ID, app2ID},
			wantApps: []string{app1ID, app2ID}, wantSandboxs: []string{pauseID},
		},
		{
			name:     "cri-o IDs",
			cmdlines: map[string]map[string]string{pauseID: {}, app1ID: {}, app2ID: {}},
			appIDs:   []string{"cri-o://" + pauseID},
			wantApps: []string{pauseID}, wantSandboxs: []string{app1ID, app2ID},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			os.RemoveAll(f.procRoot)
			for id, procs := range tc.cmdlines {
				f.procs(dirs[id], procs)
			}
			p, err := f.read(tc.appIDs, nil)
			if err != nil {
				t.Fatal(err)
			}
			if !sameIDs(p.Containers, tc.wantApps...) || !sameIDs(p.Sandboxes, tc.wantSandboxs...) {
				t.Errorf("apps %v, sandboxes %v; want %v, %v", ids(p.Containers), ids(p.Sandboxes), tc.wantApps, tc.wantSandboxs)
			}
			for _, c := range p.Sandboxes {
				if !c.Sandbox {
					t.Errorf("sandbox %s not marked Sandbox", c.ID)
				}
			}
		})
	}
}

func TestMemPodErrors(t *testing.T) {
	// No container children: not a pod.
	f := newPodFixture(t, V2)
	f.cgroup("crio-conmon-"+conmonID+".scope", 1<<20, 0, "")
	f.cgroup("init.scope", 1<<20, 0, "")
	if _, err := f.read(nil, nil); !errors.Is(err, ErrNotPod) {
		t.Errorf("pod without containers: %v, want ErrNotPod", err)
	}

	// A container that exits while the pod is read is left out.
	f.cgroup(f.name(app1ID), 10<<20, 0, "")
	gone := f.cgroup(f.name(app2ID), 10<<20, 0, "")
	rf := func(name string) ([]byte, error) {
		if strings.HasPrefix(name, gone+"/") {
			os.RemoveAll(gone)
		}
		return os.ReadFile(name)
	}
	p, err := f.read(nil, rf)
	if err != nil || !sameIDs(p.Containers, app1ID) {
		t.Errorf("container gone mid-read: containers %v, err %v; want only %s", ids(p.Containers), err, app1ID)
	}

	// The pod itself gone: a one-line ErrGone.
	rf = func(name string) ([]byte, error) {
		if name == filepath.Join(f.dir, "memory.current") {
			os.RemoveAll(f.dir)
		}
		return os.ReadFile(name)
	}
	_, err = f.read(nil, rf)
	if want := "read memory of pod cgroup " + f.dir + ": cgroup no longer exists"; !errors.Is(err, ErrGone) || err.Error() != want {
		t.Errorf("pod gone mid-read: %v, want %q", err, want)
	}
	if _, err := f.read(nil, nil); !errors.Is(err, ErrGone) {
		t.Errorf("pod gone before the read: %v, want ErrGone", err)
	}
}
