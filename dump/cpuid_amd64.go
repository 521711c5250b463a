package dump

// cpuid executes the CPUID instruction; the XSAVE layout (leaf 0xD) and the shadow-stack
// feature bit (leaf 7) are only available this way without cgo.
func cpuid(leaf, subleaf uint32) (eax, ebx, ecx, edx uint32)
