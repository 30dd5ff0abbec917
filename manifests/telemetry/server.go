package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"sort"
	"sync"
)

// maxBody bounds one ingest request.
const maxBody = 1 << 20

// Reading is one sensor sample.
type Reading struct {
	Sensor string  `json:"sensor"`
	Metric string  `json:"metric"`
	Value  float64 `json:"value"`
	// Time is the sample time, RFC 3339; optional.
	Time string `json:"time,omitempty"`
}

type server struct {
	mu       sync.Mutex
	accepted uint64
	rejected uint64
	last     map[string]float64 // sensor/metric → last value
}

func newServer() *server { return &server{last: map[string]float64{}} }

func (s *server) routes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /ingest", s.ingest)
	mux.HandleFunc("GET /health", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		io.WriteString(w, "ok\n")
	})
	mux.HandleFunc("GET /metrics", s.metrics)
	return mux
}

// ingest accepts one reading or an array of readings.
func (s *server) ingest(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBody))
	if err != nil {
		s.reject(w, http.StatusRequestEntityTooLarge, "body too large")
		return
	}
	var batch []Reading
	if len(body) > 0 && body[0] == '[' {
		err = strictUnmarshal(body, &batch)
	} else {
		var one Reading
		err = strictUnmarshal(body, &one)
		batch = []Reading{one}
	}
	if err != nil {
		s.reject(w, http.StatusBadRequest, "invalid JSON: "+err.Error())
		return
	}
	for i, rd := range batch {
		if rd.Sensor == "" || rd.Metric == "" {
			s.reject(w, http.StatusBadRequest, fmt.Sprintf("reading %d: sensor and metric are required", i))
			return
		}
	}
	s.mu.Lock()
	for _, rd := range batch {
		s.last[rd.Sensor+"/"+rd.Metric] = rd.Value
	}
	s.accepted += uint64(len(batch))
	s.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusAccepted)
	fmt.Fprintf(w, "{\"accepted\":%d}\n", len(batch))
}

func strictUnmarshal(b []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if dec.More() {
		return fmt.Errorf("trailing data")
	}
	return nil
}

func (s *server) reject(w http.ResponseWriter, code int, msg string) {
	s.mu.Lock()
	s.rejected++
	s.mu.Unlock()
	http.Error(w, msg, code)
}

func (s *server) metrics(w http.ResponseWriter, _ *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	w.Header().Set("Content-Type", "text/plain; version=0.0.4")
	fmt.Fprintf(w, "# HELP telemetry_readings_accepted_total Readings accepted.\n# TYPE telemetry_readings_accepted_total counter\ntelemetry_readings_accepted_total %d\n", s.accepted)
	fmt.Fprintf(w, "# HELP telemetry_requests_rejected_total Ingest requests rejected.\n# TYPE telemetry_requests_rejected_total counter\ntelemetry_requests_rejected_total %d\n", s.rejected)
	keys := make([]string, 0, len(s.last))
	for k := range s.last {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	fmt.Fprintf(w, "# HELP telemetry_last_value Last value per sensor and metric.\n# TYPE telemetry_last_value gauge\n")
	for _, k := range keys {
		var sensor, metric string
		for i := len(k) - 1; i >= 0; i-- {
			if k[i] == '/' {
				sensor, metric = k[:i], k[i+1:]
				break
			}
		}
		fmt.Fprintf(w, "telemetry_last_value{sensor=%q,metric=%q} %g\n", sensor, metric, s.last[k])
	}
}
