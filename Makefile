# imgtool: the two commands for a fresh machine are `make demo` and `make test`.
GO       ?= go
BIN      := bin/imgtool
GOFLAGS  := -trimpath
export CGO_ENABLED := 0

.PHONY: build test test-long realworld demo bench fuzz vet clean zdtm

build: ## a static binary in bin/imgtool
	$(GO) build $(GOFLAGS) -tags urfave_cli_no_docs -ldflags='-s -w' -o $(BIN) ./cmd/imgtool

vet:
	$(GO) vet ./...

test: vet ## vet, then every test with the race detector (fuzz seeds included)
	CGO_ENABLED=1 $(GO) test -race -count=1 -timeout 9m ./...

test-long: vet ## make test, with the exhaustive variants of the slow tests (the full kill matrix)
	IMGTOOL_TEST_LONG=1 CGO_ENABLED=1 $(GO) test -race -count=1 -timeout 20m ./...

realworld: ## real programs (Node, Python, make, SQLite) dumped and restored; also part of make test
	CGO_ENABLED=1 $(GO) test -count=1 -v ./realworld/

demo: build ## the main job on a bundled real image set
	./scripts/demo.sh $(BIN)

bench: build ## speed and memory, as ratios against crit, age, gpg, openssl and cp
	./scripts/bench.sh $(BIN)

zdtm: build ## CRIU's zdtm static tests through imgtool (ZDTM_SRC=criu tree; IMGTOOL_CRIU=criu to compare)
	./scripts/zdtm/run

FUZZTIME ?= 60s
fuzz: ## each fuzz target for FUZZTIME
	./scripts/fuzz.sh $(FUZZTIME)

clean:
	rm -rf bin .bench
