# imgtool: the two commands for a fresh machine are `make demo` and `make test`.
GO       ?= go
BIN      := bin/imgtool
GOFLAGS  := -trimpath
export CGO_ENABLED := 0

.PHONY: build test demo bench fuzz vet clean

build: ## a static binary in bin/imgtool
	$(GO) build $(GOFLAGS) -ldflags='-s -w' -o $(BIN) ./cmd/imgtool

vet:
	$(GO) vet ./...

test: vet ## vet, then every test with the race detector (fuzz seeds included)
	CGO_ENABLED=1 $(GO) test -race -count=1 -timeout 9m ./...

demo: build ## the main job on a bundled real image set
	./scripts/demo.sh $(BIN)

bench: build ## speed and memory, as ratios against crit, age, gpg, openssl and cp
	./scripts/bench.sh $(BIN)

FUZZTIME ?= 60s
fuzz: ## each fuzz target for FUZZTIME
	./scripts/fuzz.sh $(FUZZTIME)

clean:
	rm -rf bin .bench
