package basegen

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
)

// packages names the Debian package of each tool, for error messages.
var packages = map[string]string{
	"mke2fs": "e2fsprogs", "debugfs": "e2fsprogs", "mkfs.vfat": "dosfstools",
	"mmd": "mtools", "mcopy": "mtools", "sfdisk": "fdisk",
}

// lookTool finds a tool on PATH or in /usr/sbin and /sbin, which an unprivileged user's PATH
// often lacks on Debian.
func lookTool(name string) (string, error) {
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	for _, dir := range []string{"/usr/sbin", "/sbin"} {
		p := dir + "/" + name
		if st, err := os.Stat(p); err == nil && st.Mode().IsRegular() && st.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", fmt.Errorf("%s not found on PATH, in /usr/sbin or /sbin (Debian package %s)", name, packages[name])
}

// run runs a tool with a fixed environment (C locale, UTC, env added) and returns its
// standard output and error; a non-zero exit becomes an error quoting the output.
func run(ctx context.Context, env []string, stdin []byte, name string, args ...string) (stdout, stderr string, err error) {
	p, err := lookTool(name)
	if err != nil {
		return "", "", err
	}
	cmd := exec.CommandContext(ctx, p, args...)
	cmd.Env = append([]string{"LC_ALL=C", "TZ=UTC", "PATH=" + os.Getenv("PATH")}, env...)
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	if err := cmd.Run(); err != nil {
		if ctx.Err() != nil {
			return o.String(), e.String(), ctx.Err()
		}
		msg := strings.TrimSpace(e.String() + "\n" + o.String())
		return o.String(), e.String(), fmt.Errorf("%s %s: %w: %s", name, strings.Join(shorten(args), " "), err, msg)
	}
	return o.String(), e.String(), nil
}

// shorten keeps error messages readable when a tool gets many file arguments.
func shorten(args []string) []string {
	if len(args) <= 12 {
		return args
	}
	return append(append(args[:6:6], fmt.Sprintf("…(%d more)…", len(args)-9)), args[len(args)-3:]...)
}
