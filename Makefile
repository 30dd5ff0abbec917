# edgeimg — see README.md. Every target works offline once Go modules are downloaded.
GO        ?= go
VERSION   ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS   := -s -w -X main.version=$(VERSION)
GOFLAGS   += -trimpath
export GOFLAGS

BIN       := bin
EDGEIMG   := $(BIN)/edgeimg
AGENT     := $(BIN)/edgeimg-agent-linux-arm64

.PHONY: all build agent demo test test-race bench e2e check-demo clean

all: build

build: $(EDGEIMG) agent

$(EDGEIMG): FORCE
	CGO_ENABLED=0 $(GO) build -ldflags '$(LDFLAGS)' -o $@ ./cmd/edgeimg

# The on-device agent: linux/arm64, static. edgeimg finds it beside itself.
agent: FORCE
	CGO_ENABLED=0 GOOS=linux GOARCH=arm64 $(GO) build -ldflags '$(LDFLAGS)' -o $(AGENT) ./cmd/edgeimg-agent

# Builds a complete image offline from a base image the repo generates (ci/mkbase).
demo: build
	mkdir -p build
	$(GO) run ./ci/mkbase -o build/demo-base.img
	$(EDGEIMG) build --board rpi4 -c demo/edgeimg.yaml
	@echo "check it: ../shared/tools/check-image build/demo/demo-gateway-rpi4.img  (or: $(EDGEIMG) inspect build/demo/demo-gateway-rpi4.img)"

# The tests CI runs (.ci/run sets CI=true: a missing tool then fails a test instead of skipping it).
test:
	$(GO) vet ./...
	$(GO) test -count=1 -timeout 30m ./...

# Benchmarks (not run in CI): the whole build of a ~20,000-file / ~800 MB base against
# `mke2fs -d` of the same tree, measured in the same run.
bench:
	$(GO) test -run '^$$' -bench . -benchtime 1x -timeout 60m ./builder/ ./builder/ext4img/

clean:
	rm -rf $(BIN) build out

FORCE:
