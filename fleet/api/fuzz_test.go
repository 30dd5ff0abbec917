package api

import (
	"bytes"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"testing"
)

func fuzzDecode[T any, PT interface {
	*T
	Validator
}](f *testing.F, seeds ...string) {
	for _, s := range seeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		v, err := Decode[T, PT](bytes.NewReader(data), 4096)
		if err != nil {
			var re *RequestError
			if !errors.As(err, &re) || re.Status < 400 || re.Code == "" || re.Reason == "" {
				t.Fatalf("error %v is no RequestError with a status, code and reason", err)
			}
			if v != nil {
				t.Fatal("a value with an error")
			}
			return
		}
		// What was accepted is valid and survives a round trip.
		out, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		again, err := Decode[T, PT](bytes.NewReader(out), 1<<20)
		if err != nil {
			t.Fatalf("re-decoding %s: %v", out, err)
		}
		out2, _ := json.Marshal(again)
		if !bytes.Equal(out, out2) {
			t.Fatalf("round trip: %s != %s", out, out2)
		}
	})
}

func FuzzDecodeEnroll(f *testing.F) {
	fuzzDecode[EnrollRequest](f,
		`{"token":"t","device_id":"10000000abcdef","csr":"-----BEGIN CERTIFICATE REQUEST-----\nMIIB\n-----END CERTIFICATE REQUEST-----\n","hostname":"truck-1","labels":{"site":"berlin"},"version":"v1","slot":"a"}`,
		`{"device_id":"x","csr":"y","extra":1}`, `{"device_id":"x","csr":"y"} {}`, `[]`, `{"labels":{"a/b/c":"x"}}`)
}

func FuzzDecodeHeartbeat(f *testing.F) {
	fuzzDecode[Heartbeat](f,
		`{"version":"v1","slot":"b","role":"server","uptime_seconds":12,"node_ready":true,"not_ready_pods":["kube-system/x"],"mem_used":1,"mem_total":2,"disk_used":3,"disk_total":4,"last_errors":["boom"]}`,
		`{"uptime_seconds":-1}`, `{"mem_used":3,"mem_total":2}`, `null`)
}

func FuzzDecodeAdmin(f *testing.F) {
	fuzzDecode[TokenCreateRequest](f, `{"ttl_seconds":3600,"uses":1,"labels":{"site":"x"},"role":{"kind":"agent","server_url":"https://s:6443","token":"K10"}}`, `{"ttl_seconds":0}`)
}

func FuzzDecodeRollout(f *testing.F) {
	fuzzDecode[RolloutRequest](f, `{"selector":{"site":"berlin"},"waves":[5,25,100],"max_failures":2}`,
		`{"waves":[100],"max_failures":0}`, `{"waves":[50,25,100],"max_failures":2}`, `{"waves":[5,25],"max_failures":2}`,
		`{"waves":[100],"max_failures":101}`, `{"waves":[1e308,100],"max_failures":-0}`, `{"waves":[]}`)
}

func FuzzDecodeHeartbeatUpdate(f *testing.F) {
	fuzzDecode[Heartbeat](f, `{"version":"1","uptime_seconds":1,"mem_used":0,"mem_total":0,"disk_used":0,"disk_total":0,"update":{"version":"2","state":"failed","reason":"health timeout","detail":"node not ready after 300s","downloaded":10,"reused":5,"total":15}}`,
		`{"update":{"version":"2","state":"bogus"}}`, `{"update":{"version":"","state":"trial"}}`, `{"update":{"version":"2 3","state":"trial"}}`)
}

func FuzzDecodeLabels(f *testing.F) {
	fuzzDecode[LabelRequest](f, `{"set":{"a":"b"},"remove":["c"]}`, `{"set":{"":"b"}}`)
}

func TestDecodeRefusals(t *testing.T) {
	for _, c := range []struct {
		body   string
		limit  int64
		status int
		reason string
	}{
		{`{"device_id":"d1","csr":"c","bogus":1}`, 1000, 400, `unknown field "bogus"`},
		{`{"device_id":"d1","csr":"c"}{}`, 1000, 400, "data after the object"},
		{`{"device_id":"d1","csr":"c"`, 1000, 400, "malformed JSON"},
		{`{"device_id":"../etc","csr":"c"}`, 1000, 400, "only letters, digits"},
		{`{"device_id":"d1","csr":"c","hostname":"Bad_Host"}`, 1000, 400, "hostname"},
		{`{"device_id":"d1","csr":"` + strings.Repeat("a", 2000) + `"}`, 1000, 413, "larger than 1000 bytes"},
		{`{"device_id":"d1"}`, 1000, 400, "csr: must be"},
	} {
		_, err := Decode[EnrollRequest](strings.NewReader(c.body), c.limit)
		var re *RequestError
		if !errors.As(err, &re) || re.Status != c.status || !strings.Contains(re.Reason, c.reason) {
			t.Errorf("%.60s: %v, want %d %q", c.body, err, c.status, c.reason)
		}
	}
	// http.MaxBytesReader's error is a 413 too.
	r := http.MaxBytesReader(nil, io_nopCloser(strings.NewReader(strings.Repeat(" ", 100))), 10)
	if _, err := Decode[Heartbeat](r, 1000); err == nil || err.(*RequestError).Status != 413 {
		t.Errorf("MaxBytesReader: %v", err)
	}
}

type nopCloser struct{ *strings.Reader }

func (nopCloser) Close() error { return nil }

func io_nopCloser(r *strings.Reader) nopCloser { return nopCloser{r} }
