package spec

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestOTA(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "edgeimg.yaml")
	if err := os.WriteFile(p, []byte("name: gw\nboard: rpi4\nota:\n  signingKey: keys/ota.key\n  trustedKeys: [keys/ota.pub, /etc/old.pub]\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	s, err := Load(p)
	if err != nil {
		t.Fatal(err)
	}
	if s.OTA.SigningKey != filepath.Join(dir, "keys/ota.key") || s.OTA.TrustedKeys[0] != filepath.Join(dir, "keys/ota.pub") || s.OTA.TrustedKeys[1] != "/etc/old.pub" {
		t.Fatalf("paths not resolved against %s: %+v", dir, s.OTA)
	}
	s.SetDefaults(testDefaults)
	if err := s.Validate(); err != nil {
		t.Fatal(err)
	}
	if s.OTA.HealthTimeout != DefaultHealthTimeout || s.OTA.HealthTimeoutSeconds() != 600 {
		t.Errorf("default health timeout %q", s.OTA.HealthTimeout)
	}
	if s.OTA.MinVersion != "0" || s.OTA.Rollback {
		t.Errorf("default minVersion %q, rollback %v", s.OTA.MinVersion, s.OTA.Rollback)
	}

	s, err = Decode(strings.NewReader("name: gw\nboard: rpi4\n"), "e.yaml")
	if err != nil {
		t.Fatal(err)
	}
	s.SetDefaults(testDefaults)
	if s.OTA != nil {
		t.Error("SetDefaults made an ota section")
	}

	for _, c := range []struct{ yaml, want string }{
		{"ota: {}", "ota: set signingKey, trustedKeys or both"},
		{"ota: {signingKey: k, healthTimeout: 10}", `ota.healthTimeout: "10" is not a duration`},
		{"ota: {signingKey: k, healthTimeout: 30s}", "ota.healthTimeout: 30s is out of range"},
		{"ota: {signingKey: k, healthTimeout: 3h}", "ota.healthTimeout: 3h is out of range"},
		{"ota: {signingKey: k, healthTimeout: 90.5s}", "not a whole number of seconds"},
		{`ota: {trustedKeys: [""]}`, `ota.trustedKeys[0]: "" is not a path`},
		{"version: 2\nota: {signingKey: k, minVersion: 2.1}", "ota.minVersion: 2.1 is above the release's version 2"},
		{"version: 2\nota: {signingKey: k, minVersion: v1}", `ota.minVersion: "v1" is not a valid version`},
		{"version: 2\nota: {signingKey: k, minVersion: 1..2}", `ota.minVersion: "1..2" is not a valid version`},
	} {
		s, err := Decode(strings.NewReader("name: gw\nboard: rpi4\n"+c.yaml+"\n"), "e.yaml")
		if err != nil {
			t.Fatalf("%s: %v", c.yaml, err)
		}
		s.SetDefaults(testDefaults)
		wantErrs(t, s.Validate(), c.want)
	}
	for _, y := range []string{"version: 2\nota: {signingKey: k, minVersion: 2}", "version: 2.1\nota: {signingKey: k, minVersion: 1.9, rollback: true}"} {
		s, err := Decode(strings.NewReader("name: gw\nboard: rpi4\n"+y+"\n"), "e.yaml")
		if err != nil {
			t.Fatalf("%s: %v", y, err)
		}
		s.SetDefaults(testDefaults)
		if err := s.Validate(); err != nil {
			t.Errorf("%s: %v", y, err)
		}
	}
	if _, err := Decode(strings.NewReader("name: gw\nota: {signingkey: k}\n"), "e.yaml"); err == nil {
		t.Error("unknown field ota.signingkey accepted")
	}
}
