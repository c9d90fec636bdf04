package loader

// The generated files are committed; `make generate` rebuilds them with
// Debian's clang and records the sources' hash (see sources_test.go).
//go:generate go tool bpf2go -tags linux -target bpfel -type pt_record -type pt_pred -type pt_pattern -type pt_str podtap ../bpf/podtap.c -- -I../headers -O2 -g -Wall -Werror -mcpu=v3
