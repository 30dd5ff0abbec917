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
	$(GO) test -count=1 -race -timeout 20m ./agent/... ./fleet/... ./cmd/edgeimg-agent/

# deploy/ is its own Go module (the Pulumi program for the fleet server): tested with Pulumi's mocks.
.PHONY: deploy-test
deploy-test:
	cd deploy && $(GO) vet ./... && $(GO) test -count=1 ./...

# The end-to-end test (ci/e2e, README there): builds a Debian arm64 base image as root
# (ci/basebuild, cached in $EDGEIMG_E2E_CACHE), remasters it with edgeimg build, boots slot A
# in QEMU and checks the running system. .ci/run installs the host packages it needs.
e2e:
	$(GO) test -tags e2e -count=1 -timeout 30m -v ./ci/e2e/

# Benchmarks (not run in CI): the whole build of a ~20,000-file / ~800 MB base against
# `mke2fs -d` of the same tree, measured in the same run (BenchmarkBuild: warm-x-mke2fs and
# cold-x-mke2fs, peak memory, CPU), then the ext4 writer and the base reader on their own.
# EDGEIMG_BENCH_FILES / EDGEIMG_BENCH_MB change the size; EDGEIMG_BENCH_DIR keeps the generated
# base between runs; EDGEIMG_BENCH_PROFILE=DIR writes CPU profiles of the builds there.
bench:
	$(GO) test -run '^$$' -bench . -benchtime 1x -timeout 60m ./builder/ ./builder/ext4img/ ./builder/base/ ./builder/payload/ ./ota/delta/
	$(GO) test -run '^$$' -bench Heartbeat -benchtime 20000x -timeout 30m ./fleet/store/

clean:
	rm -rf $(BIN) build out

FORCE:
