package mem

import (
	"fmt"
	"strconv"
	"strings"
)

// mi is the mebibyte kubectl divides by.
const mi = 1 << 20

// KubectlTop formats a working set the way `kubectl top` prints memory:
// the byte count divided by 1Mi in integer arithmetic (so rounded down)
// followed by "Mi", e.g. "123Mi".
func KubectlTop(workingSet uint64) string {
	return strconv.FormatUint(workingSet/mi, 10) + "Mi"
}

// Explain spells out, with the actual numbers, the files and keys a reading
// came from, how usage becomes the working set, what `kubectl top` would
// show for it, and how it compares with the limit.
func Explain(s Stats) string {
	var b strings.Builder
	explainStats(&b, s, "")
	return b.String()
}

func explainStats(b *strings.Builder, s Stats, indent string) {
	v := s.Version
	fmt.Fprintf(b, "%scgroup %s (cgroup %s, told by its filesystem's statfs magic %#x)\n", indent, s.Dir, v, versionMagic(v))
	fmt.Fprintf(b, "%s  usage       = %s = %d (%s)\n", indent, v.UsageFile(), s.Usage, Human(s.Usage))

	inactive := InactiveFile.Source(v)
	switch {
	case !s.Has(InactiveFile):
		fmt.Fprintf(b, "%s  working_set = %s (%d) - nothing (%s has no %s key, so nothing is subtracted) = %d\n",
			indent, v.UsageFile(), s.Usage, statFile, statKey(InactiveFile, v), s.WorkingSet)
	case s.InactiveFile >= s.Usage:
		fmt.Fprintf(b, "%s  working_set = %s (%d) - %s (%d) = 0 (floored at zero: the inactive file cache is not below usage)\n",
			indent, v.UsageFile(), s.Usage, inactive, s.InactiveFile)
	default:
		fmt.Fprintf(b, "%s  working_set = %s (%d) - %s (%d) = %d (%s)\n",
			indent, v.UsageFile(), s.Usage, inactive, s.InactiveFile, s.WorkingSet, Human(s.WorkingSet))
	}
	if v == V1 {
		fmt.Fprintf(b, "%s                (v1: the hierarchical total_inactive_file, not this cgroup's local inactive_file)\n", indent)
	}
	fmt.Fprintf(b, "%s  kubectl top = %d / %d, rounded down = %s\n", indent, s.WorkingSet, mi, KubectlTop(s.WorkingSet))

	switch {
	case s.Unlimited && v == V1:
		fmt.Fprintf(b, "%s  limit       = %s is at least %d, cgroup v1's \"no limit\": unlimited, so no percentage\n", indent, v.LimitFile(), V1UnlimitedLimit)
	case s.Unlimited:
		fmt.Fprintf(b, "%s  limit       = %s is \"max\": unlimited, so no percentage\n", indent, v.LimitFile())
	default:
		pct, ok := s.LimitPercent()
		if ok {
			fmt.Fprintf(b, "%s  limit       = %s = %d (%s); working_set / limit = %.1f%%\n", indent, v.LimitFile(), s.Limit, Human(s.Limit), pct)
		} else {
			fmt.Fprintf(b, "%s  limit       = %s = %d\n", indent, v.LimitFile(), s.Limit)
		}
	}
}

func versionMagic(v Version) uint64 {
	if v == V2 {
		return cgroup2SuperMagic
	}
	return cgroupSuperMagic
}

// ExplainPod spells out a pod reading: each container's working set, what
// the pod total is made of, and how `kubectl top pod` adds it up.
func ExplainPod(p Pod) string {
	var b strings.Builder
	fmt.Fprintf(&b, "pod cgroup %s", p.Dir)
	if p.UID != "" {
		fmt.Fprintf(&b, " (pod UID %s)", p.UID)
	}
	b.WriteString("\n")
	for _, c := range p.Containers {
		fmt.Fprintf(&b, "app container %s:\n", c.ID)
		explainStats(&b, c.Stats, "  ")
	}
	for _, c := range p.Sandboxes {
		fmt.Fprintf(&b, "sandbox container %s (not an app container: shown apart, not in kubectl top, not summed):\n", c.ID)
		explainStats(&b, c.Stats, "  ")
	}
	switch p.Definition {
	case PodCgroup:
		b.WriteString("pod total, definition \"pod cgroup\": the pod-level cgroup's own files, which already\n" +
			"  include every container, the sandbox and pod-level page cache; nothing is added on top:\n")
		explainStats(&b, p.Total, "  ")
	case SumOfContainers:
		fmt.Fprintf(&b, "pod total, definition \"sum of containers\" (the pod-level cgroup could not be read: %v):\n", p.PodCgroupErr)
		fmt.Fprintf(&b, "  working_set = %s = %d (%s)\n", sumTerms(p.Containers), p.Total.WorkingSet, Human(p.Total.WorkingSet))
	}
	top := p.TopBytes()
	fmt.Fprintf(&b, "kubectl top pod = sum of the app containers' working sets = %s = %d; / %d, rounded down = %s\n",
		sumTerms(p.Containers), top, mi, KubectlTop(top))
	return b.String()
}

func sumTerms(cs []Container) string {
	if len(cs) == 0 {
		return "0 (no app containers)"
	}
	terms := make([]string, len(cs))
	for i, c := range cs {
		terms[i] = strconv.FormatUint(c.Stats.WorkingSet, 10)
	}
	return strings.Join(terms, " + ")
}

// Human formats a byte count with a binary suffix and one decimal, such as
// "64.0Mi"; counts below 1Ki are plain bytes.
func Human(n uint64) string {
	const units = "KMGTPE"
	if n < 1024 {
		return strconv.FormatUint(n, 10) + "B"
	}
	f := float64(n) / 1024
	i := 0
	for f >= 1024 && i < len(units)-1 {
		f /= 1024
		i++
	}
	return strconv.FormatFloat(f, 'f', 1, 64) + string(units[i]) + "i"
}
