# mapheap — the two commands a newcomer needs are `make demo` and `make test`.
# Everything else is a convenience over the CMake presets (CMakePresets.json).

JOBS ?= $(shell nproc)
BUILD := build

.PHONY: all deps demo test test-dev test-asan test-release tsan stress bench fuzz release format clean

all: release

deps:
	@scripts/deps.sh

# Configure + build one preset: $(call preset,NAME)
define preset
	@cmake --preset $(1) >/dev/null
	@cmake --build --preset $(1) -j $(JOBS)
endef

release: deps
	$(call preset,release)

# The main job: a tour of what mapheap does on this machine, in under a minute.
demo: release
	@scripts/demo.sh $(BUILD)/release

# The whole suite: debug build with full invariant checks, then again under
# AddressSanitizer + UndefinedBehaviorSanitizer, then in the optimized build,
# whose frees take the fast paths that checked builds never do (they verify
# every free in full). CI runs exactly this.
test: deps test-dev test-asan test-release

test-dev:
	$(call preset,dev)
	@ctest --preset dev

test-asan:
	$(call preset,asan)
	@ctest --preset asan

test-release:
	$(call preset,release)
	@ctest --preset release

# ThreadSanitizer run of the suite (not part of `make test`: run it on what you touch).
tsan: deps
	$(call preset,tsan)
	@ctest --preset tsan

# The mapped heap's kill loop, longer than in `make test` (KILL_ROUNDS rounds).
KILL_ROUNDS ?= 2000
stress:
	$(call preset,dev)
	@MAPHEAP_KILL_ROUNDS=$(KILL_ROUNDS) build/dev/tests/mapped_heap_test --gtest_filter='MappedHeapCrash.*'

# Side-by-side measurements; results are written up in docs/BENCHMARKS.md.
bench: release
	@scripts/bench.sh $(BUILD)/release

# libFuzzer targets, each run for FUZZ_SECONDS (clang 14).
FUZZ_SECONDS ?= 60
fuzz: deps
	$(call preset,fuzz)
	@for f in $(BUILD)/fuzz/fuzz/fuzz_*; do \
	  [ -x "$$f" ] || continue; \
	  mkdir -p $(BUILD)/fuzz/corpus/$$(basename $$f); \
	  echo "== $$f ($(FUZZ_SECONDS)s)"; \
	  $$f -max_total_time=$(FUZZ_SECONDS) $(BUILD)/fuzz/corpus/$$(basename $$f) || exit 1; \
	done

format:
	@clang-format -i $$(git ls-files '*.cpp' '*.hpp' '*.h')

clean:
	rm -rf $(BUILD)
