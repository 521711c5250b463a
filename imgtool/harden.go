package imgtool

import "golang.org/x/sys/unix"

// Harden keeps imgtool's memory out of core dumps: it holds file keys, private keys
// and plaintext pages. The process is made non-dumpable (no core file, whatever the
// core pattern: a pipe to a crash collector ignores RLIMIT_CORE; and no ptrace or
// /proc/PID/mem by other processes of the same user) and its soft RLIMIT_CORE is 0.
// The hard limit is left alone: restored processes set their own limits from the
// image, and could not raise a hard limit of 0 back. Processes imgtool executes (the
// restore's helper) are dumpable again after exec, as any program.
func Harden() error {
	if err := unix.Prctl(unix.PR_SET_DUMPABLE, 0, 0, 0, 0); err != nil {
		return err
	}
	var core unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_CORE, &core); err != nil {
		return err
	}
	core.Cur = 0
	return unix.Setrlimit(unix.RLIMIT_CORE, &core)
}
