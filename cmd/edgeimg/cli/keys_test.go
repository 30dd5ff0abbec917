package cli

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/edgeimg/edgeimg/ota/bundle"
)

func TestKeysCreate(t *testing.T) {
	prefix := filepath.Join(t.TempDir(), "keys", "ota")
	out, _, err := execute(t, "keys", "create", "--out", prefix)
	if err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(prefix + ".key")
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Errorf("ota.key mode %v, want 0600", st.Mode().Perm())
	}
	kb, _ := os.ReadFile(prefix + ".key")
	pb, _ := os.ReadFile(prefix + ".pub")
	sk, err := bundle.ParsePrivateKey(kb)
	if err != nil {
		t.Fatal(err)
	}
	pk, err := bundle.ParsePublicKey(pb)
	if err != nil {
		t.Fatal(err)
	}
	if !pk.Equal(sk.Public()) {
		t.Fatal("ota.pub is not ota.key's public key")
	}
	if !strings.Contains(out, bundle.KeyID(pk)) {
		t.Errorf("output does not name the key id:\n%s", out)
	}
	// Never replaces a key.
	if _, _, err := execute(t, "keys", "create", "--out", prefix); err == nil || !strings.Contains(err.Error(), "exists") {
		t.Errorf("second create: %v", err)
	}
	if again, _ := os.ReadFile(prefix + ".key"); string(again) != string(kb) {
		t.Error("the key was replaced")
	}
}
