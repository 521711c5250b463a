package imgtool

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
)

// inPlace is what an in-place rewrite needs to know of the set it replaces and of the
// caller's working directory. A rewrite puts a new folder at the set's path: a shell
// whose working directory was the set (`cd SET && imgtool encrypt -D .`) is left in the
// old, removed folder, where "." no longer names the set.
type inPlace struct {
	abs       string // the set's absolute path, resolved before the rewrite
	cwdInside bool   // the working directory is the set's folder or below it
}

// resolveInPlace resolves dir before an in-place rewrite.
func resolveInPlace(dir string) (inPlace, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return inPlace{}, err
	}
	ip := inPlace{abs: abs}
	if wd, err := os.Getwd(); err == nil {
		ip.cwdInside = wd == abs || strings.HasPrefix(wd, abs+string(filepath.Separator))
	}
	return ip, nil
}

// note tells the user, after the rewrite, that their working directory was replaced.
func (ip inPlace) note(w io.Writer) {
	if ip.cwdInside {
		fmt.Fprintf(w, "imgtool: note: the working directory was inside %s, which the rewrite replaced: cd %s again to see the new set\n", ip.abs, ip.abs)
	}
}

// checkCwd refuses a relative set path when the working directory was removed (the
// shell sits in a folder an in-place rewrite replaced): "." names nothing any more.
func checkCwd(cmd, dir string) error {
	if filepath.IsAbs(dir) {
		return nil
	}
	var st syscall.Stat_t
	if err := syscall.Stat(".", &st); err == nil && st.Nlink == 0 {
		return fmt.Errorf("%s: the working directory no longer exists (an in-place rewrite replaced it?): cd to the set again, or give its absolute path", cmd)
	}
	return nil
}
