package fetch

// Progress receives progress reports for long-running steps (downloading, hashing,
// decompressing). A step calls Start once, Add any number of times and Done once; a step that
// restarts from the beginning calls Done and then Start again. Implementations must be safe to
// use from the goroutine that calls Base or Download; they are never called concurrently.
type Progress interface {
	// Start begins a step. total is the number of bytes expected, or -1 when unknown.
	Start(name string, total int64)
	// Add reports n more bytes processed.
	Add(n int64)
	// Done ends the step.
	Done()
}

// NopProgress is a Progress that reports nothing.
type NopProgress struct{}

// Start implements Progress.
func (NopProgress) Start(string, int64) {}

// Add implements Progress.
func (NopProgress) Add(int64) {}

// Done implements Progress.
func (NopProgress) Done() {}

var _ Progress = NopProgress{}

// progressWriter counts bytes written through it into a Progress.
type progressWriter struct{ p Progress }

func (w progressWriter) Write(b []byte) (int, error) {
	w.p.Add(int64(len(b)))
	return len(b), nil
}
