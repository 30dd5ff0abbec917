package apply

import (
	"bytes"
	"context"
	"errors"
	"math/rand/v2"
	"testing"

	"github.com/edgeimg/edgeimg/hw/filecard"
	"github.com/edgeimg/edgeimg/ota/bundle"
	"github.com/edgeimg/edgeimg/ota/otatest"
)

var errPowerCut = errors.New("power cut")

// cutPartition is a partition on a card that loses power once budget bytes have been written
// to the card (the bytes before the cut stay written).
type cutPartition struct {
	Partition
	budget *int64
}

func (p cutPartition) WriteAt(b []byte, off int64) (int, error) {
	if *p.budget <= 0 {
		return 0, errPowerCut
	}
	if int64(len(b)) > *p.budget {
		n, _ := p.Partition.WriteAt(b[:*p.budget], off)
		*p.budget = 0
		return n, errPowerCut
	}
	*p.budget -= int64(len(b))
	return p.Partition.WriteAt(b, off)
}

// TestApplyPowerCut cuts power at 40 random points of writing an update into slot B. After
// each, the card boots the old slot; a trial boot finds slot B unbootable unless the cut came
// after every byte of it was written and verified; the active slot is unchanged.
func TestApplyPowerCut(t *testing.T) {
	sk, pk := otatest.Key(t, 1)
	rel := newRelease("2", 9, 100000)
	b := rel.Bundle(t, sk)
	total := int64(headerSize + len(rel.Boot) + len(rel.System) + len(otatest.CmdB))
	r := rand.New(rand.NewPCG(5, 5))
	card := otatest.NewCard(t)
	activeBoot, activeSys := otatest.PartSum(t, card, 2), otatest.PartSum(t, card, 5)
	for i := range 40 {
		budget := r.Int64N(total + 1)
		if i == 0 {
			budget = total + headerSize // no cut
		}
		// A fresh slot B each time: erase its boot sector as a previous cut might not have.
		p, err := card.Partition(3)
		must(t, err)
		_, err = p.WriteAt(make([]byte, 512), 0)
		must(t, err)
		p.Close()

		tg := target(card, bundle.NewKeyring(pk), "1")
		tg.Card = CardFunc(func(n int) (Partition, error) {
			p, err := card.Partition(n)
			if err != nil {
				return nil, err
			}
			return cutPartition{p, &budget}, nil
		})
		_, err = Apply(context.Background(), bytes.NewReader(b), tg)
		complete := err == nil
		if !complete && !errors.Is(err, errPowerCut) {
			t.Fatalf("cut at %d: %v", budget, err)
		}
		if s, err := card.PowerOn(); err != nil || s.Name != "a" {
			t.Fatalf("cut at %d: boots %v, %v", budget, s, err)
		}
		must(t, card.Switch().TryReboot(context.Background()))
		s, err := card.PowerOn()
		switch {
		case err == nil && s.Name == "b":
			if !bytes.Equal(otatest.PartBytes(t, card, 6, len(rel.System)), rel.System) {
				t.Fatalf("cut at %d: trial boots slot B with an incomplete system", budget)
			}
		case errors.Is(err, filecard.ErrNoBoot):
			if complete {
				t.Fatal("a complete update is not bootable")
			}
		default:
			t.Fatalf("cut at %d: trial boot %v, %v", budget, s, err)
		}
		if s, err := card.PowerOn(); err != nil || s.Name != "a" {
			t.Fatalf("cut at %d: after the trial boots %v, %v", budget, s, err)
		}
		if otatest.PartSum(t, card, 2) != activeBoot || otatest.PartSum(t, card, 5) != activeSys {
			t.Fatalf("cut at %d: the active slot changed", budget)
		}
	}
}
