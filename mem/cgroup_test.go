package mem

import (
	"errors"
	"io/fs"
	"strings"
	"testing"
)

// hybridMountinfo is this machine's layout: v1 controllers, a v2 unified
// mount without memory.
const hybridMountinfo = `23 1 254:0 / / rw,relatime - ext4 /dev/vda rw
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
`

const hybridProcCgroup = `9:name=systemd:/
4:memory:/kubepods/burstable/pod8d3e2f41-5b6c-4a7d-9e0f-1a2b3c4d5e6f/abc
1:cpu:/
0::/
`

// v2Mountinfo is a pure cgroup v2 host (systemd driver).
const v2Mountinfo = `23 1 254:0 / / rw,relatime - ext4 /dev/vda rw
30 23 0:26 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:9 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot
`

const v2ProcCgroup = "0::/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod1_2.slice/cri-containerd-abc.scope\n"

// controllers fakes the cgroup.controllers file of each v2 mount point.
func controllers(byMount map[string]string) readFileFunc {
	return func(name string) ([]byte, error) {
		mount, ok := strings.CutSuffix(name, "/cgroup.controllers")
		if c, found := byMount[mount]; ok && found {
			return []byte(c), nil
		}
		return nil, fs.ErrNotExist
	}
}

func TestMemCgroupDirFromProc(t *testing.T) {
	for _, tc := range []struct {
		name                 string
		procCgroup, mountinf string
		ctl                  map[string]string
		want                 string
		wantErr              string
	}{
		{
			name: "hybrid: v1 memory wins", procCgroup: hybridProcCgroup, mountinf: hybridMountinfo,
			ctl:  map[string]string{"/sys/fs/cgroup/unified": "hugetlb\n"},
			want: "/sys/fs/cgroup/memory/kubepods/burstable/pod8d3e2f41-5b6c-4a7d-9e0f-1a2b3c4d5e6f/abc",
		},
		{
			name: "hybrid even if v2 also had memory", procCgroup: hybridProcCgroup, mountinf: hybridMountinfo,
			ctl:  map[string]string{"/sys/fs/cgroup/unified": "memory pids\n"},
			want: "/sys/fs/cgroup/memory/kubepods/burstable/pod8d3e2f41-5b6c-4a7d-9e0f-1a2b3c4d5e6f/abc",
		},
		{
			name: "pure v2", procCgroup: v2ProcCgroup, mountinf: v2Mountinfo,
			ctl:  map[string]string{"/sys/fs/cgroup": "cpuset cpu io memory hugetlb pids rdma misc\n"},
			want: "/sys/fs/cgroup/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod1_2.slice/cri-containerd-abc.scope",
		},
		{
			name: "v2 without the memory controller", procCgroup: v2ProcCgroup, mountinf: v2Mountinfo,
			ctl:     map[string]string{"/sys/fs/cgroup": "cpu io pids\n"},
			wantErr: "no cgroup v2 mount has the memory controller",
		},
		{
			name: "v1 memory co-mounted with cpu", procCgroup: "3:cpu,memory:/a/b\n0::/\n",
			mountinf: "35 31 0:32 / /sys/fs/cgroup/cpu,memory rw,relatime - cgroup cgroup rw,cpu,memory\n",
			want:     "/sys/fs/cgroup/cpu,memory/a/b",
		},
		{
			name: "the root cgroup", procCgroup: "4:memory:/\n", mountinf: hybridMountinfo,
			want: "/sys/fs/cgroup/memory",
		},
		{
			name: "mount of a subtree (inside a container)", procCgroup: "4:memory:/kubepods/pod1/abc/sub\n",
			mountinf: "35 31 0:32 /kubepods/pod1/abc /sys/fs/cgroup/memory ro,relatime - cgroup cgroup rw,memory\n",
			want:     "/sys/fs/cgroup/memory/sub",
		},
		{
			name: "mount point with a space", procCgroup: "4:memory:/x\n",
			mountinf: `35 31 0:32 / /mnt/cg\040mem rw,relatime - cgroup cgroup rw,memory` + "\n",
			want:     "/mnt/cg mem/x",
		},
		{
			name: "optional mountinfo fields", procCgroup: "4:memory:/x\n",
			mountinf: "35 31 0:32 / /cg/memory rw,relatime shared:14 master:2 - cgroup cgroup rw,memory\n",
			want:     "/cg/memory/x",
		},
		{
			name: "cgroup outside the mounted subtree", procCgroup: "4:memory:/other\n",
			mountinf: "35 31 0:32 /kubepods /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n",
			wantErr:  "outside /kubepods",
		},
		{
			name: "prefix that is not a parent", procCgroup: "4:memory:/kubepods2/x\n",
			mountinf: "35 31 0:32 /kubepods /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n",
			wantErr:  "outside /kubepods",
		},
		{
			name: "outside our cgroup namespace", procCgroup: "4:memory:/../../x\n", mountinf: hybridMountinfo,
			wantErr: "outside this process's cgroup namespace",
		},
		{
			name: "v1 memory listed but not mounted", procCgroup: "4:memory:/x\n0::/\n",
			mountinf: "41 31 0:38 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw\n",
			ctl:      map[string]string{"/sys/fs/cgroup/unified": "memory"},
			// v1 memory exists for the process but is not mounted: fall
			// back to v2 when it has memory.
			want: "/sys/fs/cgroup/unified",
		},
		{
			name: "no memory anywhere", procCgroup: "1:cpu:/\n", mountinf: hybridMountinfo,
			wantErr: "no memory controller",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := memoryCgroupDir([]byte(tc.procCgroup), []byte(tc.mountinf), controllers(tc.ctl))
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Errorf("got %q, %v; want an error containing %q", got, err, tc.wantErr)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Errorf("got %q, %v; want %q", got, err, tc.want)
			}
		})
	}

	// A v2 cgroup that was removed while the process (a zombie) was in it.
	_, err := memoryCgroupDir([]byte("0::/gone (deleted)\n"), []byte(v2Mountinfo), controllers(map[string]string{"/sys/fs/cgroup": "memory"}))
	if !errors.Is(err, ErrGone) {
		t.Errorf("deleted cgroup: %v, want ErrGone", err)
	}
}
