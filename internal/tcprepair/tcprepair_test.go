package tcprepair

import "testing"

// TestClampWl1: a snd_wl1 at or before rcv_nxt is kept; one beyond it (set by a segment
// received out of order, which is not saved) becomes rcv_nxt, across the wrap of the
// sequence space too. The values of the first case are those of a dump that zdtm's
// socket-tcpbuf-local, loaded, could not restore (TCP_REPAIR_WINDOW: EINVAL).
func TestClampWl1(t *testing.T) {
	for _, c := range []struct{ wl1, rcvNxt, want uint32 }{
		{2134483899, 2134221967, 2134221967},
		{2134221967, 2134221967, 2134221967},
		{2134156484, 2134221967, 2134156484},
		{10, 0xfffffff0, 0xfffffff0},         // beyond, across the wrap
		{0xfffffff0, 10, 0xfffffff0},         // before, across the wrap
		{4197523527, 4197523527, 4197523527}, // equal
	} {
		if got := ClampWl1(c.wl1, c.rcvNxt); got != c.want {
			t.Errorf("ClampWl1(%d, %d) = %d, want %d", c.wl1, c.rcvNxt, got, c.want)
		}
	}
}
