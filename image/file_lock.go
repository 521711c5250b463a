package image

// File locks (filelocks.img, file_lock_entry): CRIU's lock kinds, in field flag, and the
// bits of field type beyond F_RDLCK/F_WRLCK (criu/include/file-lock.h).
const (
	FileLockPosix = 1 // FL_POSIX: fcntl F_SETLK, owned by the process
	FileLockFlock = 2 // FL_FLOCK: flock, owned by the open file description
	FileLockOFD   = 4 // FL_OFD: fcntl F_OFD_SETLK, owned by the open file description
	FileLockLease = 8 // FL_LEASE: fcntl F_SETLEASE

	FileLockLeaseBreaking = 4  // LEASE_BREAKING: a lease being broken
	FileLockMand          = 32 // LOCK_MAND: a mandatory flock
)
