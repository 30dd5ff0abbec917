package retry

import (
	"context"
	"testing"
	"time"
)

func TestJitter(t *testing.T) {
	for _, d := range []time.Duration{0, 1, 2 * time.Second, time.Hour} {
		for range 100 {
			if j := Jitter(d); j < d/2 || j > d {
				t.Fatalf("Jitter(%v) = %v, outside [d/2, d]", d, j)
			}
		}
	}
}

func TestSleepEndsWithContext(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if Sleep(ctx, time.Hour) {
		t.Fatal("Sleep of an ended context returned true")
	}
	if !Sleep(context.Background(), time.Millisecond) {
		t.Fatal("Sleep returned false without the context ending")
	}
}
