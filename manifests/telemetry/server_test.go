package main

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestIngestHealthMetrics(t *testing.T) {
	srv := httptest.NewServer(newServer().routes())
	defer srv.Close()
	post := func(body string) int {
		resp, err := http.Post(srv.URL+"/ingest", "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if c := post(`{"sensor":"floor2-room7","metric":"temperature_c","value":21.5}`); c != http.StatusAccepted {
		t.Fatalf("one reading: %d", c)
	}
	if c := post(`[{"sensor":"ahu1","metric":"co2_ppm","value":612},{"sensor":"ahu1","metric":"rh","value":40}]`); c != http.StatusAccepted {
		t.Fatalf("batch: %d", c)
	}
	for _, bad := range []string{`{`, `{"sensor":"x","metric":"y","value":1,"extra":1}`, `{"metric":"y"}`, `not json`} {
		if c := post(bad); c != http.StatusBadRequest {
			t.Errorf("%s: %d, want 400", bad, c)
		}
	}
	resp, err := http.Get(srv.URL + "/health")
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("health: %v %v", resp, err)
	}
	resp.Body.Close()
	resp, err = http.Get(srv.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{"telemetry_readings_accepted_total 3", "telemetry_requests_rejected_total 4", `telemetry_last_value{sensor="ahu1",metric="co2_ppm"} 612`} {
		if !strings.Contains(string(b), want) {
			t.Errorf("metrics lack %q:\n%s", want, b)
		}
	}
}
