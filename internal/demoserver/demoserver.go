// Package demoserver is the HTTP server of podtap's sandbox pod: it
// answers every request with a short text naming the path, so captures of
// requests and their responses are easy to read.
package demoserver

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"time"
)

// Handler answers GET with "hello from PATH" and other methods with the
// number of body bytes received.
func Handler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		if r.Method == http.MethodGet || r.Method == http.MethodHead {
			fmt.Fprintf(w, "hello from %s\n", r.URL.RequestURI())
			return
		}
		n, _ := io.Copy(io.Discard, r.Body)
		fmt.Fprintf(w, "%s %s: got %d bytes\n", r.Method, r.URL.RequestURI(), n)
	})
}

// Serve serves Handler on l until l is closed.
func Serve(l net.Listener) error {
	srv := &http.Server{Handler: Handler(), ReadHeaderTimeout: 10 * time.Second}
	return srv.Serve(l)
}
