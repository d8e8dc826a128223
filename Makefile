# cryo — checkpoint/restore for Linux process trees.
#
#   make demo   build cryo, checkpoint a running counter, restore it, watch it count on
#   make test   install what the tests need, then vet, lint and run every test
#
# Both install their own dependencies (Go modules; Debian packages through apt-get).

GO      ?= go
BIN     := bin
CRYO    := $(BIN)/cryo
TARGETS := $(patsubst test/targets/%.c,$(BIN)/targets/%,$(wildcard test/targets/*.c))
STATICCHECK := $(shell $(GO) env GOPATH)/bin/staticcheck
# What `cryo --version` prints: the release (a tag, if HEAD has one) and
# the commit, -dirty if the tree has changes.
VERSION := $(shell git describe --tags --exact-match 2>/dev/null || echo dev)
COMMIT  := $(shell git rev-parse HEAD 2>/dev/null)$(shell git diff --quiet HEAD -- 2>/dev/null || echo -dirty)
LDFLAGS := -X main.version=$(VERSION) -X main.commit=$(COMMIT)

.PHONY: all build targets deps demo test lint unit bench fuzz clean

all: build

build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags "$(LDFLAGS)" -o $(CRYO) ./cmd/cryo

$(BIN)/targets/%: test/targets/%.c test/targets/common.h
	@mkdir -p $(BIN)/targets
	gcc -O1 -g -Wall -Werror -pthread -o $@ $< -lrt

targets: $(TARGETS)

# Debian packages: gcc for the C test targets, criu for its `crit` image decoder,
# libcap2-bin for setcap and passwd for useradd (non-root tests), python3 for
# Python targets and the http.server test, postgresql for the postgres test,
# redis-server for the redis test, nftables for its nft (the network lock's
# tests cross-check with it; cryo itself speaks netlink), tmux for the
# terminal test, nginx, nodejs and openjdk-17-jre-headless for the server
# tests (test/e2e/servers_test.go).
deps:
	@missing=""; \
	for p in gcc criu libcap2-bin passwd python3 make postgresql redis-server nftables tmux nginx nodejs openjdk-17-jre-headless; do \
		dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
		echo "installing:$$missing"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi
	$(GO) mod download

demo: deps build targets
	./demo/demo.sh

# internal/lint checks what vet and staticcheck cannot: errors.Is over ==,
# no decisions on error text, one ErrNotSupported, unsafe and raw syscalls
# kept to kabi, /proc text parsed only in procfs (see its doc comment).
lint:
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { echo "gofmt needed:"; gofmt -l $$(git ls-files '*.go'); exit 1; }
	$(GO) vet ./...
	$(GO) run ./internal/lint
	@test -x $(STATICCHECK) || $(GO) install honnef.co/go/tools/cmd/staticcheck@latest
	$(STATICCHECK) ./...

unit:
	$(GO) test -count=1 ./internal/...

# CRYO_TEST_STRICT: deps installed every tool the tests use, so a test may not
# skip for want of one (crit above all: CRIU's tools must read our images).
test: deps build targets lint
	CRYO_TEST_STRICT=1 $(GO) test -count=1 -timeout 40m ./...

bench: deps build targets
	$(GO) run ./bench -nobuild
	$(GO) run ./bench/tree

clean:
	rm -rf $(BIN)
