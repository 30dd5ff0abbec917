package apply

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/edgeimg/edgeimg/hw"
	"github.com/edgeimg/edgeimg/ota/bundle"
)

// ErrTrialBoot is returned by Apply during a trial boot, when the other slot is the
// fallback and must not be written.
var ErrTrialBoot = errors.New("update refused during a trial boot")

// Partition is a partition of the device's card, open for writing in place.
type Partition interface {
	io.ReaderAt
	io.WriterAt
	Size() int64
	Sync() error
	Close() error
}

// Card opens the card's partitions by number.
type Card interface {
	Partition(n int) (Partition, error)
}

// CardFunc adapts a function to Card.
type CardFunc func(n int) (Partition, error)

// Partition implements Card.
func (f CardFunc) Partition(n int) (Partition, error) { return f(n) }

// Installed describes the release running on the device (/usr/lib/edgeimg/release.json).
type Installed struct {
	Board         string
	LayoutVersion int
	Version       string
}

// Target is everything Apply acts on.
type Target struct {
	Keys      bundle.Keyring // the trusted public keys (/usr/lib/edgeimg/ota/trusted/*.pub)
	Installed Installed
	Switch    hw.SlotSwitch
	Card      Card
}

// Result is what Apply installed.
type Result struct {
	Manifest *bundle.Manifest
	KeyID    string  // the key that signed it
	Slot     hw.Slot // the slot written and armed for a trial boot
}

// headerSize is how much of the boot part is held back and written last: the FAT boot sector
// (and its FSInfo and backup copies). Until the whole bundle has been verified the inactive
// boot partition has no boot sector, so the firmware cannot boot a half-written slot.
const headerSize = 64 << 10

// Apply installs the bundle read from r into the inactive slot and arms a one-shot trial boot
// of it (it does not reboot: call Switch.TryReboot). In order:
//
//  1. the manifest's signature is verified against t.Keys, before anything else is read;
//  2. the manifest is checked against the installed release: board, disk layout version,
//     no downgrade unless marked rollback, the installed version at least its minimum, and
//     every part fitting its partition;
//  3. the inactive boot partition's boot sector is erased, then each part is streamed into the
//     inactive slot's partition while its sha256 is computed (the active slot is never opened
//     for writing);
//  4. when every part has verified, the boot part's held-back first bytes and its per-slot
//     cmdline.txt are written, the card synced, and the trial boot armed.
//
// Any rejection is a *bundle.Error whose Reason says why; the slot is then not bootable
// and the switch is untouched.
func Apply(ctx context.Context, r io.Reader, t Target) (*Result, error) {
	// 1. Signature first.
	br, err := bundle.Open(r, t.Keys)
	if err != nil {
		return nil, err
	}
	m := br.Manifest()

	// 2. Is this release for this device?
	if err := Check(m, t.Installed); err != nil {
		return nil, err
	}
	active, err := t.Switch.Active()
	if err != nil {
		return nil, fmt.Errorf("slot switch: %w", err)
	}
	// On a trial boot the inactive slot is the default one, the fallback: never write it.
	if trial, err := t.Switch.IsTrial(); err != nil {
		return nil, fmt.Errorf("slot switch: %w", err)
	} else if trial {
		return nil, fmt.Errorf("%w: this boot is a trial of slot %s; commit it or go back before installing another update", ErrTrialBoot, active.Name)
	}
	slot, err := t.Switch.Inactive()
	if err != nil {
		return nil, fmt.Errorf("slot switch: %w", err)
	}
	if slot.Name == active.Name || slot.Boot == active.Boot || slot.System == active.System ||
		slot.Boot == active.System || slot.System == active.Boot {
		return nil, fmt.Errorf("slot switch: inactive slot %+v shares a partition with the active slot %+v", slot, active)
	}
	parts := map[string]Partition{}
	defer func() {
		for _, p := range parts {
			p.Close()
		}
	}()
	for _, p := range m.Parts {
		n := partitionOf(slot, p.Name)
		pp, err := t.Card.Partition(n)
		if err != nil {
			return nil, fmt.Errorf("slot %s partition %d (%s): %w", slot.Name, n, p.Name, err)
		}
		parts[p.Name] = pp
		if p.Size > pp.Size() {
			return nil, bundle.Errorf(bundle.ErrTooBig, "part %s is %d bytes, slot %s's partition %d holds %d", p.Name, p.Size, slot.Name, n, pp.Size())
		}
		if p.Patch != nil {
			if _, ok := p.Patch.Slots[slot.Name]; !ok {
				return nil, bundle.Errorf(bundle.ErrMalformed, "part %s has no cmdline for slot %s", p.Name, slot.Name)
			}
		}
	}

	// 3. Unmark the boot partition, then stream every part.
	boot := parts[bundle.PartBoot]
	if boot != nil {
		if _, err := boot.WriteAt(make([]byte, min(headerSize, boot.Size())), 0); err != nil {
			return nil, fmt.Errorf("erasing slot %s's boot sector: %w", slot.Name, err)
		}
		if err := boot.Sync(); err != nil {
			return nil, fmt.Errorf("slot %s boot partition: %w", slot.Name, err)
		}
	}
	var header []byte
	for {
		p, pr, err := br.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, err
		}
		dst := parts[p.Name]
		hold := int64(0)
		if p.Name == bundle.PartBoot {
			hold = min(headerSize, p.Size)
		}
		h, err := stream(ctx, dst, pr, hold)
		if err != nil {
			return nil, fmt.Errorf("writing part %s to slot %s: %w", p.Name, slot.Name, err)
		}
		if err := dst.Sync(); err != nil {
			return nil, fmt.Errorf("syncing part %s: %w", p.Name, err)
		}
		if p.Name == bundle.PartBoot {
			header = h
		}
	}

	// 4. Everything verified: make the boot partition bootable for this slot, then arm it.
	if bp := m.Part(bundle.PartBoot); bp != nil {
		if err := writeBoot(boot, header, bp.Patch, slot.Name); err != nil {
			return nil, fmt.Errorf("slot %s boot partition: %w", slot.Name, err)
		}
	}
	if err := t.Switch.SetTrial(slot); err != nil {
		return nil, fmt.Errorf("arming the trial boot of slot %s: %w", slot.Name, err)
	}
	return &Result{Manifest: m, KeyID: br.KeyID(), Slot: slot}, nil
}

// Check compares a verified manifest with the installed release.
func Check(m *bundle.Manifest, in Installed) error {
	if !m.RunsOn(in.Board) {
		return bundle.Errorf(bundle.ErrWrongBoard, "release %s %s is for %s, this device is %s", m.Name, m.Version, m.Board, in.Board)
	}
	if m.LayoutVersion != in.LayoutVersion {
		return bundle.Errorf(bundle.ErrLayout, "release %s has disk layout version %d, this card has %d (updates never rewrite the partition table: reflash)", m.Version, m.LayoutVersion, in.LayoutVersion)
	}
	c, err := bundle.CompareVersions(m.Version, in.Version)
	if err != nil {
		return bundle.Errorf(bundle.ErrMalformed, "comparing versions: %v", err)
	}
	if c <= 0 && !m.Rollback {
		return bundle.Errorf(bundle.ErrDowngrade, "release %s is not newer than the installed %s and is not marked as a rollback", m.Version, in.Version)
	}
	c, err = bundle.CompareVersions(in.Version, m.MinVersion)
	if err != nil {
		return bundle.Errorf(bundle.ErrMalformed, "comparing versions: %v", err)
	}
	if c < 0 {
		return bundle.Errorf(bundle.ErrMinVersion, "release %s updates from %s or newer, the installed release is %s", m.Version, m.MinVersion, in.Version)
	}
	return nil
}

func partitionOf(s hw.Slot, part string) int {
	if part == bundle.PartBoot {
		return s.Boot
	}
	return s.System
}

// stream copies r into dst from offset 0, except that the first hold bytes are returned
// instead of written. r fails at its end if the hash is wrong.
func stream(ctx context.Context, dst io.WriterAt, r io.Reader, hold int64) ([]byte, error) {
	header := make([]byte, hold)
	if _, err := io.ReadFull(r, header); err != nil {
		return nil, err
	}
	buf := make([]byte, 1<<20)
	off := hold
	for {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		n, err := r.Read(buf)
		if n > 0 {
			if _, werr := dst.WriteAt(buf[:n], off); werr != nil {
				return nil, werr
			}
			off += int64(n)
		}
		if err == io.EOF {
			return header, nil
		}
		if err != nil {
			return nil, err
		}
	}
}

// writeBoot writes the slot's cmdline.txt variant and then the held-back header.
func writeBoot(dst Partition, header []byte, p *bundle.Patch, slot string) error {
	if p != nil {
		v := []byte(p.Slots[slot])
		end := p.Offset + int64(len(v))
		// The part of the patch inside the header goes into the header; the rest is written.
		hl := int64(len(header))
		if p.Offset < hl {
			copy(header[p.Offset:], v)
		}
		if end > hl {
			from := max(p.Offset, hl)
			if _, err := dst.WriteAt(v[from-p.Offset:], from); err != nil {
				return err
			}
		}
	}
	if err := dst.Sync(); err != nil {
		return err
	}
	if _, err := dst.WriteAt(header, 0); err != nil {
		return err
	}
	return dst.Sync()
}
