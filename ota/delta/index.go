package delta

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"regexp"

	"github.com/restic/chunker"
)

// Chunking parameters. They are part of the format: changing them changes every index.
const (
	// Polynomial is the irreducible polynomial of the Rabin fingerprint (fixed, so that the
	// builder, the fleet server and every device cut the same bytes the same way).
	Polynomial = chunker.Pol(0x3DA3358B4DC173)
	MinChunk   = 64 << 10  // bytes
	MaxChunk   = 1 << 20   // bytes
	AvgBits    = 18        // average chunk size 2^18 = 256 KiB
	Format     = 1         // Index.Format
	MaxChunks  = 1 << 24   // chunks of one part (16 TiB at the minimum size)
	MaxIndex   = 160 << 20 // bytes of an index's JSON
)

// Chunk is one chunk of a part: Size bytes whose sha256 is SHA256. Its offset in the part
// is the sum of the sizes before it.
type Chunk struct {
	Size   int64  `json:"size"`
	SHA256 string `json:"sha256"`
}

// Index lists the chunks of a part, in order.
type Index struct {
	Format int     `json:"format"`
	Part   string  `json:"part"`   // the part's name (bundle.PartBoot, bundle.PartSystem)
	Size   int64   `json:"size"`   // the part's size: the sum of the chunks' sizes
	SHA256 string  `json:"sha256"` // the part's sha256, as in the signed manifest
	Chunks []Chunk `json:"chunks"`
}

var hexSumRE = regexp.MustCompile(`^[0-9a-f]{64}$`)

// Split cuts r into chunks and returns their index; the part's sha256 is computed on the way.
func Split(part string, r io.Reader) (*Index, error) {
	ix := &Index{Format: Format, Part: part, Chunks: []Chunk{}} // "chunks":[] for an empty part, not null
	h := sha256.New()
	err := Chunks(io.TeeReader(r, h), func(off int64, data []byte) error {
		s := sha256.Sum256(data)
		ix.Chunks = append(ix.Chunks, Chunk{Size: int64(len(data)), SHA256: hex.EncodeToString(s[:])})
		ix.Size += int64(len(data))
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("chunking part %s: %w", part, err)
	}
	ix.SHA256 = hex.EncodeToString(h.Sum(nil))
	return ix, nil
}

// Chunks cuts r into chunks and calls fn with each chunk's offset and bytes (valid only
// during the call).
func Chunks(r io.Reader, fn func(off int64, data []byte) error) error {
	c := chunker.NewWithBoundaries(r, Polynomial, MinChunk, MaxChunk)
	c.SetAverageBits(AvgBits)
	buf := make([]byte, MaxChunk)
	var off int64
	for {
		ch, err := c.Next(buf)
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		if err := fn(off, ch.Data); err != nil {
			return err
		}
		off += int64(ch.Length)
	}
}

// Marshal returns the index's canonical JSON.
func (ix *Index) Marshal() ([]byte, error) {
	if err := ix.Validate(); err != nil {
		return nil, err
	}
	return json.Marshal(ix)
}

// Validate checks the index's fields: sizes within the chunking bounds (only the last chunk
// may be shorter than MinChunk) adding up to Size, and well-formed hashes.
func (ix *Index) Validate() error {
	if ix.Format != Format {
		return fmt.Errorf("index format %d, this build reads %d", ix.Format, Format)
	}
	if ix.Part == "" || len(ix.Part) > 64 {
		return errors.New("index: bad part name")
	}
	if !hexSumRE.MatchString(ix.SHA256) {
		return fmt.Errorf("index of %s: sha256 %q is not 64 lower-case hex digits", ix.Part, ix.SHA256)
	}
	if len(ix.Chunks) > MaxChunks {
		return fmt.Errorf("index of %s: %d chunks, at most %d", ix.Part, len(ix.Chunks), MaxChunks)
	}
	var sum int64
	for i, c := range ix.Chunks {
		if c.Size <= 0 || c.Size > MaxChunk || (c.Size < MinChunk && i != len(ix.Chunks)-1) {
			return fmt.Errorf("index of %s: chunk %d has size %d, outside %d..%d", ix.Part, i, c.Size, MinChunk, MaxChunk)
		}
		if !hexSumRE.MatchString(c.SHA256) {
			return fmt.Errorf("index of %s: chunk %d: sha256 %q is not 64 lower-case hex digits", ix.Part, i, c.SHA256)
		}
		sum += c.Size
	}
	if sum != ix.Size {
		return fmt.Errorf("index of %s: chunks add up to %d bytes, the part has %d", ix.Part, sum, ix.Size)
	}
	return nil
}

// ParseIndex decodes an index from an untrusted source strictly (at most MaxIndex bytes, no
// unknown fields, nothing after it) and checks it against the part it must describe: name,
// size and sha256 from the signed manifest.
func ParseIndex(b []byte, part string, size int64, sum string) (*Index, error) {
	if len(b) > MaxIndex {
		return nil, fmt.Errorf("index of %s: %d bytes, at most %d", part, len(b), MaxIndex)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	var ix Index
	if err := dec.Decode(&ix); err != nil {
		return nil, fmt.Errorf("index of %s: %w", part, err)
	}
	if dec.More() || dec.InputOffset() != int64(len(b)) {
		return nil, fmt.Errorf("index of %s: data after the index", part)
	}
	if err := ix.Validate(); err != nil {
		return nil, err
	}
	if ix.Part != part || ix.Size != size || ix.SHA256 != sum {
		return nil, fmt.Errorf("index is of part %s (%d bytes, sha256 %s), the manifest's %s has %d bytes, sha256 %s",
			ix.Part, ix.Size, ix.SHA256, part, size, sum)
	}
	return &ix, nil
}
