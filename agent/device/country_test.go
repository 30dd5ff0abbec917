package device

import (
	"strings"
	"testing"
)

func TestWiFiCountry(t *testing.T) {
	s, err := ParseSettings([]byte("wifi: {ssid: depot, psk: secretpass, country: GB}\n"))
	if err != nil || s.WiFi.Country != "GB" {
		t.Fatalf("%+v %v", s, err)
	}
	for _, bad := range []string{"gb", "GBR", "G1", "Ö1"} {
		_, err := ParseSettings([]byte("wifi: {ssid: depot, country: " + bad + "}\n"))
		if err == nil || !strings.Contains(err.Error(), "wifi.country") {
			t.Errorf("country %q: %v", bad, err)
		}
	}
}
