// Command etcd is the upstream etcd server, built from podtap's pinned
// module versions by hack/kube/install.sh.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
