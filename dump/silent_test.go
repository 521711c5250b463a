package dump

import (
	"strings"
	"testing"
)

// TestCheckFdOwners: an fd whose owner (F_SETOWN) is outside the tree is refused (the
// restore would point it at whatever process then has that number); one owned by a
// process of the tree is not.
func TestCheckFdOwners(t *testing.T) {
	for _, c := range []struct {
		arg     string
		refused bool
	}{{"parent", true}, {"self", false}} {
		t.Run(c.arg, func(t *testing.T) {
			tg := launch(t, "fownout", c.arg)
			var refused Refusals
			fds, err := readFds(tg.Pid)
			if err != nil {
				t.Fatal(err)
			}
			live := &liveProc{pid: tg.Pid, tids: []int{tg.Pid}, fds: fds}
			if err := checkFdOwners([]*liveProc{live}, &refused); err != nil {
				t.Fatal(err)
			}
			if !c.refused {
				if len(refused) != 0 {
					t.Fatalf("refused: %v", refused.err())
				}
				return
			}
			if len(refused) != 1 || refused[0].Fd != 3 || !strings.Contains(refused[0].Error(), "owner") {
				t.Fatalf("refusals %v, want one of fd 3 naming its owner", refused.err())
			}
		})
	}
}
