package fpu

// cpuid executes the CPUID instruction: the XSAVE layout of this CPU (leaf 0xD) and the
// shadow-stack feature bit (leaf 7) are only available this way without cgo.
func cpuid(leaf, subleaf uint32) (eax, ebx, ecx, edx uint32)

// xgetbv0 reads XCR0, the XSAVE features the kernel enabled on this CPU.
func xgetbv0() (eax, edx uint32)
