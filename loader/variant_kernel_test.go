package loader_test

import (
	"os"
	"slices"
	"testing"

	"github.com/podtap/podtap/filter"
	"github.com/podtap/podtap/loader"
)

// TestBestVariant: the scan variant BestVariant picks, and every worse one,
// load on this kernel (the worse ones are what --scan-loop forces, and what
// kernels without bpf_loop get); every better one is refused by it, so
// BestVariant picks the best the kernel has. forEachVariant skips the
// variants above BestVariant; this is where that is justified.
//
// It prints the variant as "PODTAP_FACT scan=..." for hack/vm's summary,
// and checks it against PODTAP_EXPECT_SCAN when hack/vm sets that from
// hack/vm/kernels.txt.
func TestBestVariant(t *testing.T) {
	requireBPF(t)
	best := loader.BestVariant()
	t.Logf("PODTAP_FACT scan=%s", best)
	if want := os.Getenv("PODTAP_EXPECT_SCAN"); want != "" && string(best) != want {
		t.Errorf("BestVariant() = %s; hack/vm/kernels.txt expects %s of this kernel", best, want)
	}
	prog, err := filter.Compile(filter.Contains("lbtest"), "lbtest")
	if err != nil {
		t.Fatal(err)
	}
	order := []loader.Variant{loader.VariantIter, loader.VariantLoop, loader.VariantBounded} // best first
	bi := slices.Index(order, best)
	if bi < 0 {
		t.Fatalf("BestVariant() = %q, not a variant", best)
	}
	for i, v := range order {
		objs, err := loader.Load(loader.Options{Filter: prog, Variant: v, RingSize: 4096})
		switch {
		case i < bi && err == nil:
			objs.Close()
			t.Errorf("the %s variant loads, but BestVariant() = %s", v, best)
		case i < bi:
			t.Logf("%s: refused by this kernel, as BestVariant said: %v", v, err)
		case err != nil:
			t.Errorf("the %s variant does not load (BestVariant() = %s): %v", v, best, err)
		default:
			objs.Close()
		}
	}
	objs, err := loader.Load(loader.Options{Filter: prog, RingSize: 4096})
	if err != nil {
		t.Fatalf("load with the default variant: %v", err)
	}
	defer objs.Close()
	if objs.Variant != best {
		t.Errorf("Load without a variant chose %s, BestVariant() = %s", objs.Variant, best)
	}
}
