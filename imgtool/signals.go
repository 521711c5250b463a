package imgtool

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

// interruptSignals are the signals that interrupt a command: it stops at its next safe
// point, undoes what it started (a half-written set, a half-stopped process tree) and
// exits with ExitError.
var interruptSignals = []os.Signal{syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP}

// InterruptedError is the cause of a context cancelled by a signal.
type InterruptedError struct{ Signal os.Signal }

func (e *InterruptedError) Error() string {
	return fmt.Sprintf("interrupted by %s", signalName(e.Signal))
}

func signalName(s os.Signal) string {
	switch s {
	case syscall.SIGINT:
		return "SIGINT"
	case syscall.SIGTERM:
		return "SIGTERM"
	case syscall.SIGHUP:
		return "SIGHUP"
	}
	return s.String()
}

// WithInterrupts returns a context that is cancelled, with an *InterruptedError as its
// cause, when the process receives SIGINT, SIGTERM or SIGHUP. Later signals are absorbed
// while the command cleans up: a second Ctrl-C must not kill imgtool in the middle of
// putting a process tree back. stop releases the signals.
func WithInterrupts(parent context.Context) (ctx context.Context, stop func()) {
	ctx, cancel := context.WithCancelCause(parent)
	ch := make(chan os.Signal, 4)
	signal.Notify(ch, interruptSignals...)
	done := make(chan struct{})
	go func() {
		select {
		case s := <-ch:
			cancel(&InterruptedError{Signal: s})
		case <-done:
			return
		}
		for {
			select {
			case <-ch: // absorbed: the cleanup is under way
			case <-done:
				return
			}
		}
	}()
	return ctx, func() {
		signal.Stop(ch)
		close(done)
		cancel(nil)
	}
}

// interruptCause returns the *InterruptedError that cancelled ctx, or nil.
func interruptCause(ctx context.Context) *InterruptedError {
	ie, _ := context.Cause(ctx).(*InterruptedError)
	return ie
}
