// goticker is a small Go program for the restore tests: on every tick of a time.Ticker it
// writes the counter into a pipe, a goroutine reads it back (the Go runtime waits for the
// pipe with epoll, and wakes its poller with an eventfd) and hands it to worker goroutines
// that add one. It prints "n=N" for every tick, N one more than the last; a restored copy
// must carry on from the next N.
package main

import (
	"encoding/binary"
	"fmt"
	"io"
	"os"
	"time"
)

func main() {
	r, w, err := os.Pipe()
	if err != nil {
		panic(err)
	}
	in, out := make(chan int), make(chan int)
	go func() {
		var b [8]byte
		for {
			if _, err := io.ReadFull(r, b[:]); err != nil {
				panic(err)
			}
			in <- int(binary.LittleEndian.Uint64(b[:]))
		}
	}()
	for i := 0; i < 4; i++ {
		go func() {
			for n := range in {
				out <- n + 1
			}
		}()
	}
	fmt.Printf("pid=%d\n", os.Getpid())
	t := time.NewTicker(20 * time.Millisecond)
	n := 0
	for range t.C {
		if _, err := w.Write(binary.LittleEndian.AppendUint64(nil, uint64(n))); err != nil {
			panic(err)
		}
		n = <-out
		fmt.Printf("n=%d\n", n)
	}
}
