package sandbox

import "testing"

// TestNewFailsCleanly: a pod that cannot be made returns an error (it
// used to panic while cleaning up through a nil pointer).
func TestNewFailsCleanly(t *testing.T) {
	p, err := New("no/slashes")
	if err == nil {
		p.Close()
		t.Fatal("a namespace name with a slash was accepted")
	}
	if p != nil {
		t.Errorf("got a pod with the error: %+v", p)
	}
}
