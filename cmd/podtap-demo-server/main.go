// Command podtap-demo-server is the HTTP server that runs inside podtap's
// sandbox pod (make demo). It is not part of podtap itself.
package main

import (
	"flag"
	"fmt"
	"net"
	"os"

	"github.com/podtap/podtap/internal/demoserver"
)

func main() {
	addr := flag.String("listen", ":8080", "address to listen on")
	flag.Parse()
	l, err := net.Listen("tcp", *addr)
	if err != nil {
		fmt.Fprintf(os.Stderr, "podtap-demo-server: %v\n", err)
		os.Exit(1)
	}
	fmt.Fprintf(os.Stderr, "podtap-demo-server: listening on %s\n", l.Addr())
	if err := demoserver.Serve(l); err != nil {
		fmt.Fprintf(os.Stderr, "podtap-demo-server: %v\n", err)
		os.Exit(1)
	}
}
