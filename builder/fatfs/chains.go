package fatfs

import "fmt"

// CheckChains reports a cluster chain that loops in a FAT of n entries, where next gives an
// entry's successor. go-diskfs follows chains without a bound, so readers of untrusted FAT
// filesystems call this first. It takes O(n) time and n bytes.
func CheckChains(n uint32, next func(cluster uint32) uint32) error {
	state := make([]uint8, n) // 0 unseen, 1 on the current chain, 2 known to end
	var chain []uint32
	for c := uint32(2); c < n; c++ {
		chain = chain[:0]
		cur := c
		for cur >= 2 && cur < n && state[cur] == 0 {
			state[cur] = 1
			chain = append(chain, cur)
			cur = next(cur)
		}
		if cur >= 2 && cur < n && state[cur] == 1 {
			return fmt.Errorf("cluster chain through cluster %d loops back on itself", cur)
		}
		for _, x := range chain {
			state[x] = 2
		}
	}
	return nil
}
