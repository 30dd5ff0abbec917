package hw

import "context"

// SlotSwitch is a board's A/B switch as the running device sees it. An update writes the
// inactive slot, calls SetTrial, and reboots with TryReboot; the firmware boots the other slot
// once, and a power cut or crash during that trial boot returns to the default slot. On the
// trial boot the agent checks health and calls Commit to make the slot the default.
type SlotSwitch interface {
	// Active returns the slot the device booted from.
	Active() (Slot, error)
	// Inactive returns the other slot: the only one an update may write.
	Inactive() (Slot, error)
	// IsTrial reports whether this boot is a one-shot trial boot not committed yet: the other
	// slot is still the default, the fallback, and must not be written. Once Commit made the
	// booted slot the default it reports false, and updates may go on during the same boot.
	IsTrial() (bool, error)
	// SetTrial makes the next trial boot (TryReboot) go to slot, without changing the default.
	SetTrial(slot Slot) error
	// TryReboot reboots once into the trial slot.
	TryReboot(ctx context.Context) error
	// Commit makes slot the default boot slot. It must leave the switch in the old or the new
	// state if power is lost at any moment.
	Commit(slot Slot) error
}

// OtherSlot returns the slot of slots that is not s.
func OtherSlot(slots [2]Slot, s Slot) Slot {
	if slots[0].Name == s.Name {
		return slots[1]
	}
	return slots[0]
}

// SlotByBoot returns the slot whose boot partition is number n.
func SlotByBoot(slots [2]Slot, n int) (Slot, bool) {
	for _, s := range slots {
		if s.Boot == n {
			return s, true
		}
	}
	return Slot{}, false
}
