package rootfs

import (
	"bytes"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/edgeimg/edgeimg/builder/tree"
)

// User is a login user the image gets.
type User struct {
	Name              string
	UID               int // 0: the first free id from 1000
	Groups            []string
	Shell             string
	SSHAuthorizedKeys []string
	PasswordHash      string // crypt(3) hash; empty locks password login
}

// colonFile is a parsed /etc/passwd-style file: lines of colon-separated fields.
type colonFile struct {
	path  string
	lines [][]string
}

func readColon(t *tree.Tree, p string, fields int) (*colonFile, error) {
	b, err := t.ReadFile(p)
	if err != nil {
		return nil, fmt.Errorf("base root filesystem: %w", err)
	}
	f := &colonFile{path: p}
	for i, l := range strings.Split(string(b), "\n") {
		if strings.TrimSpace(l) == "" {
			continue
		}
		parts := strings.Split(l, ":")
		if len(parts) != fields {
			return nil, fmt.Errorf("base root filesystem: /%s line %d: %d fields, want %d", p, i+1, len(parts), fields)
		}
		f.lines = append(f.lines, parts)
	}
	return f, nil
}

func (f *colonFile) find(name string) []string {
	for _, l := range f.lines {
		if l[0] == name {
			return l
		}
	}
	return nil
}

func (f *colonFile) bytes() []byte {
	var b bytes.Buffer
	for _, l := range f.lines {
		b.WriteString(strings.Join(l, ":") + "\n")
	}
	return b.Bytes()
}

func (f *colonFile) write(t *tree.Tree, epoch time.Time) error {
	old := t.Get(f.path)
	mode, uid, gid := uint32(0o644), uint32(0), uint32(0)
	if old != nil {
		mode, uid, gid = old.Mode, old.UID, old.GID
	}
	data := f.bytes()
	return t.Put(&tree.Entry{Path: f.path, Kind: tree.Regular, Mode: mode, UID: uid, GID: gid,
		ModTime: epoch, Size: int64(len(data)), Content: tree.Bytes(data)})
}

func usedIDs(f *colonFile, col int) map[int]bool {
	used := map[int]bool{}
	for _, l := range f.lines {
		if n, err := strconv.Atoi(l[col]); err == nil {
			used[n] = true
		}
	}
	return used
}

// AddUsers adds login users to /etc/passwd, /etc/shadow, /etc/group and /etc/gshadow of t,
// each with a primary group of its own name, a home directory, its SSH authorized keys and,
// for members of sudo without a password, a sudoers drop-in (as Raspberry Pi OS does for its
// first user). It returns the paths it wrote.
func AddUsers(t *tree.Tree, users []User, epoch time.Time) ([]string, error) {
	if len(users) == 0 {
		return nil, nil
	}
	passwd, err := readColon(t, "etc/passwd", 7)
	if err != nil {
		return nil, err
	}
	group, err := readColon(t, "etc/group", 4)
	if err != nil {
		return nil, err
	}
	shadow, err := readColon(t, "etc/shadow", 9)
	if err != nil {
		return nil, err
	}
	gshadow, err := optionalColon(t, "etc/gshadow", 4)
	if err != nil {
		return nil, err
	}
	uids, gids := usedIDs(passwd, 2), usedIDs(group, 2)
	days := strconv.FormatInt(epoch.Unix()/86400, 10)
	var wrote []string
	for i, u := range users {
		field := fmt.Sprintf("users[%d]", i)
		if passwd.find(u.Name) != nil {
			return nil, fmt.Errorf("%s.name: user %q already exists in the base image", field, u.Name)
		}
		uid := u.UID
		if uid == 0 {
			for uid = 1000; uids[uid] || gids[uid]; uid++ {
			}
		} else if uids[uid] {
			return nil, fmt.Errorf("%s.uid: %d is already used in the base image", field, uid)
		}
		gid := uid
		for gids[gid] {
			gid++
		}
		uids[uid], gids[gid] = true, true
		shell := u.Shell
		if shell == "" {
			shell = "/bin/bash"
		}
		home := "/home/" + u.Name
		passwd.lines = append(passwd.lines, []string{u.Name, "x", strconv.Itoa(uid), strconv.Itoa(gid), u.Name, home, shell})
		hash := u.PasswordHash
		if hash == "" {
			hash = "!"
		}
		shadow.lines = append(shadow.lines, []string{u.Name, hash, days, "0", "99999", "7", "", "", ""})
		if group.find(u.Name) != nil {
			return nil, fmt.Errorf("%s.name: group %q already exists in the base image", field, u.Name)
		}
		group.lines = append(group.lines, []string{u.Name, "x", strconv.Itoa(gid), ""})
		if gshadow != nil {
			gshadow.lines = append(gshadow.lines, []string{u.Name, "!", "", ""})
		}
		for j, g := range u.Groups {
			gl := group.find(g)
			if gl == nil {
				return nil, fmt.Errorf("%s.groups[%d]: group %q does not exist in the base image", field, j, g)
			}
			gl[3] = addMember(gl[3], u.Name)
			if gshadow != nil {
				if gs := gshadow.find(g); gs != nil {
					gs[3] = addMember(gs[3], u.Name)
				}
			}
		}
		homeRel := strings.TrimPrefix(home, "/")
		if err := t.MkdirAll("home", epoch); err != nil {
			return nil, err
		}
		if err := t.Put(&tree.Entry{Path: homeRel, Kind: tree.Dir, Mode: 0o700, UID: uint32(uid), GID: uint32(gid), ModTime: epoch}); err != nil {
			return nil, err
		}
		wrote = append(wrote, "/"+homeRel)
		if len(u.SSHAuthorizedKeys) > 0 {
			if err := t.Put(&tree.Entry{Path: homeRel + "/.ssh", Kind: tree.Dir, Mode: 0o700, UID: uint32(uid), GID: uint32(gid), ModTime: epoch}); err != nil {
				return nil, err
			}
			keys := []byte(strings.Join(u.SSHAuthorizedKeys, "\n") + "\n")
			if err := t.Put(&tree.Entry{Path: homeRel + "/.ssh/authorized_keys", Kind: tree.Regular, Mode: 0o600,
				UID: uint32(uid), GID: uint32(gid), ModTime: epoch, Size: int64(len(keys)), Content: tree.Bytes(keys)}); err != nil {
				return nil, err
			}
			wrote = append(wrote, "/"+homeRel+"/.ssh/authorized_keys")
		}
		if u.PasswordHash == "" && contains(u.Groups, "sudo") {
			p := "etc/sudoers.d/010_edgeimg-" + u.Name
			if err := t.WriteFile(p, []byte(u.Name+" ALL=(ALL) NOPASSWD: ALL\n"), 0o440, epoch); err != nil {
				return nil, err
			}
			wrote = append(wrote, "/"+p)
		}
	}
	for _, f := range []*colonFile{passwd, group, shadow, gshadow} {
		if f == nil {
			continue
		}
		if err := f.write(t, epoch); err != nil {
			return nil, err
		}
		wrote = append(wrote, "/"+f.path)
	}
	sort.Strings(wrote)
	return wrote, nil
}

func optionalColon(t *tree.Tree, p string, n int) (*colonFile, error) {
	if t.Get(p) == nil {
		return nil, nil
	}
	return readColon(t, p, n)
}

func addMember(list, name string) string {
	if list == "" {
		return name
	}
	for _, m := range strings.Split(list, ",") {
		if m == name {
			return list
		}
	}
	return list + "," + name
}

func contains(l []string, s string) bool {
	for _, x := range l {
		if x == s {
			return true
		}
	}
	return false
}
