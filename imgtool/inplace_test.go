package imgtool

import (
	"fmt"
	"strings"
	"testing"
)

// TestInPlaceFromInsideTheSet: `cd SET && imgtool encrypt -D .` counts the new set (not
// the removed folder the shell is left in) and says the working directory was replaced;
// a later command given "." from that removed folder says why it cannot read it.
func TestInPlaceFromInsideTheSet(t *testing.T) {
	set := copySet(t, fixtureDir+"/counter")
	cert, key := writeKeyPair(t, t.TempDir(), "me")
	files, size := dirBytes(set)
	t.Chdir(set)
	out, errOut, err := runApp(t, "encrypt", "-D", ".", "--cert", cert)
	if err != nil {
		t.Fatal(err)
	}
	want := fmt.Sprintf("encrypted . with aes-256-gcm: %d files (header included)", files+1)
	if !strings.Contains(out, want) {
		t.Errorf("encrypt from inside the set said %q, want %q", out, want)
	}
	if !strings.Contains(errOut, "the working directory was inside "+set+", which the rewrite replaced") {
		t.Errorf("no note about the replaced working directory: %q", errOut)
	}
	_, _, err = runApp(t, "decrypt", ".", "--tls-key", key)
	if err == nil || !strings.Contains(err.Error(), "the working directory no longer exists") {
		t.Errorf("decrypt of . in the removed folder: %v", err)
	}
	t.Chdir(set)
	out, errOut, err = runApp(t, "decrypt", ".", "--tls-key", key)
	if err != nil {
		t.Fatal(err)
	}
	if want := fmt.Sprintf("decrypted .: %d files, %s", files, humanBytes(size)); !strings.Contains(out, want) {
		t.Errorf("decrypt from inside the set said %q, want %q", out, want)
	}
	if !strings.Contains(errOut, "which the rewrite replaced") {
		t.Errorf("no note after decrypt: %q", errOut)
	}
}
