// Package hw provides the board interface: what a board contributes to an image (partition
// layout, boot files, kernel command line, A/B slot switch) behind one narrow contract.
package hw
