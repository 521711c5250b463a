package image

// VMA status bits: vma_entry.status in mm-PID.img (CRIU's VMA_* of criu/include/image.h).
// A status combines one area kind with how the area is backed.
const (
	VMAAreaRegular  = 1 << 0  // an area CRIU dumps and restores (not vsyscall)
	VMAAreaStack    = 1 << 1  // the main stack (only older images set it)
	VMAAreaVsyscall = 1 << 2  // [vsyscall]
	VMAAreaVDSO     = 1 << 3  // [vdso]
	VMAAreaHeap     = 1 << 5  // [heap]
	VMAFilePrivate  = 1 << 6  // MAP_PRIVATE file mapping; shmid is its reg-file id
	VMAFileShared   = 1 << 7  // MAP_SHARED file mapping; shmid is its reg-file id
	VMAAnonShared   = 1 << 8  // MAP_SHARED|MAP_ANONYMOUS memory (older images; now memfd)
	VMAAnonPrivate  = 1 << 9  // MAP_PRIVATE|MAP_ANONYMOUS memory
	VMAAreaSysVIPC  = 1 << 10 // System V shared memory
	VMAAreaSocket   = 1 << 11 // a mapped socket (packet rings)
	VMAAreaVVAR     = 1 << 12 // [vvar] (and [vvar_vclock], merged into one entry by CRIU 4.2)
	VMAAreaAIORing  = 1 << 13 // an AIO ring
	VMAAreaMemfd    = 1 << 14 // a memfd (or /dev/zero shared memory); shmid is its file id
	VMAExtPlugin    = 1 << 27 // an area a CRIU plugin handles
	VMAAreaUnsupp   = 1 << 31 // an area CRIU cannot handle
)
