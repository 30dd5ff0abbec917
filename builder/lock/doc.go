// Package lock provides edgeimg.lock: what a spec's image tags and downloads resolved to
// (tag → digest, URL → sha256), so that later builds are pinned and need no network.
package lock
