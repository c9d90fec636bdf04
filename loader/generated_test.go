package loader

import (
	"crypto/sha256"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite bpf_sources.sum after make generate")

// generatedInputs are the files bpf2go's output depends on, and outputs
// the files it writes; bpf_sources.sum records the hash of both sets.
var (
	generatedInputs  = []string{"../bpf/podtap.c", "../headers/podtap.h", "gen.go"}
	generatedOutputs = []string{"podtap_bpfel.o", "podtap_bpfel.go"}
)

func sumFiles(t *testing.T, files []string) string {
	h := sha256.New()
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(h, "%s %d\n", filepath.Base(f), len(b))
		h.Write(b)
	}
	return fmt.Sprintf("%x", h.Sum(nil))
}

// TestGeneratedUpToDate fails when the BPF C source changed but the
// committed object and bindings were not rebuilt with make generate (or
// were edited by hand).
func TestGeneratedUpToDate(t *testing.T) {
	want := fmt.Sprintf("sources %s\noutputs %s\n", sumFiles(t, generatedInputs), sumFiles(t, generatedOutputs))
	if *update {
		if err := os.WriteFile("bpf_sources.sum", []byte(want), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	got, err := os.ReadFile("bpf_sources.sum")
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != want {
		g, w := strings.Fields(string(got)), strings.Fields(want)
		if len(g) == 4 && g[1] != w[1] {
			t.Fatalf("bpf/podtap.c, headers/podtap.h or gen.go changed since the BPF object was generated: run make generate")
		}
		t.Fatalf("the generated BPF object or bindings do not match bpf_sources.sum: run make generate\n got %q\nwant %q", got, want)
	}
}
