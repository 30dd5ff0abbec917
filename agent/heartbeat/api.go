package heartbeat

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
)

// API is a client of the Kubernetes API named by a Kube's kubeconfig: its server, certificate
// authority and client certificate. Other agent packages read objects with it (the OTA trial
// boot's K3s health check).
type API struct {
	c      *http.Client
	server string
}

// API reads the kubeconfig and returns a client of its API. Close it when done.
func (k Kube) API() (*API, error) {
	c, server, err := k.client()
	if err != nil {
		return nil, err
	}
	return &API{c: c, server: server}, nil
}

// APIError is an answer of the API other than 200 OK.
type APIError struct {
	// Path is the path asked for.
	Path string
	// StatusCode is the HTTP status (404: no such object).
	StatusCode int
	// Message is the Status object's message, if the answer had one.
	Message string
}

func (e *APIError) Error() string {
	s := fmt.Sprintf("GET %s: %d %s", e.Path, e.StatusCode, http.StatusText(e.StatusCode))
	if e.Message != "" {
		s += ": " + e.Message
	}
	return s
}

// Get reads the object (or list) at path, such as /apis/apps/v1/namespaces/NS/deployments/NAME,
// and decodes its JSON into out. An answer other than 200 OK is an *APIError.
func (a *API) Get(ctx context.Context, path string, out any) error {
	if !strings.HasPrefix(path, "/") {
		return fmt.Errorf("GET %s: not an absolute API path", path)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, a.server+path, nil)
	if err != nil {
		return err
	}
	req.Header.Set("Accept", "application/json")
	resp, err := a.c.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body := io.LimitReader(resp.Body, 32<<20)
	if resp.StatusCode != http.StatusOK {
		var st struct {
			Message string `json:"message"`
		}
		b, _ := io.ReadAll(io.LimitReader(body, 64<<10))
		_ = json.Unmarshal(b, &st)
		return &APIError{Path: path, StatusCode: resp.StatusCode, Message: st.Message}
	}
	if err := json.NewDecoder(body).Decode(out); err != nil {
		return fmt.Errorf("GET %s: %w", path, err)
	}
	return nil
}

// Close closes the client's idle connections.
func (a *API) Close() { a.c.CloseIdleConnections() }
