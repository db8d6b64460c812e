# llmd: gateway module, workers and tests.
#
#   make            build the module (against Debian's nginx-dev) and workers
#   make test       every test suite (C units under ASan/UBSan, t/ with
#                   Debian's nginx, t/ again with an ASan+UBSan nginx, workers)
#   make demo       Redis + sim workers + nginx with the module + requests
#   make bench      the routing benchmark (bench/drivers/routing.py): same
#                   sim fleet and traffic, one balancing policy swapped
#   make bench-smoke  the same pipeline scaled down (run by make test)

SHELL        := /bin/bash
TOP          := $(abspath .)
BUILD        := $(TOP)/build
NGX_SRC      := /usr/share/nginx/src
NGX_VERSION  := $(shell dpkg-query -W -f '$${Version}' nginx 2>/dev/null)

CC           ?= cc
CFLAGS_COMMON = -std=gnu11 -Wall -Wextra -Werror -O2 -g
SANITIZE      = -fsanitize=address,undefined -fno-omit-frame-pointer
COMMON_SRCS   = common/llmd_canon.c common/llmd_prefix.c common/llmd_request.c common/llmd_wire.c
COMMON_HDRS   = common/llmd_canon.h common/llmd_prefix.h common/llmd_request.h common/llmd_wire.h
MODULE_SRCS   = $(wildcard ngx_llmd_module/*.c ngx_llmd_module/*.h) \
                $(COMMON_SRCS) $(COMMON_HDRS)
MODULE_SO     = $(BUILD)/ngx/ngx_llmd_module.so
ASAN_NGINX    = $(BUILD)/asan/objs/nginx
HAVE_WORKERS  = $(wildcard workers/Makefile)

.PHONY: all module workers tools bench-tool test-bench test-deploy bench-smoke \
        bench-gateway bench-worker bench-fleet-state bench-decision bench-pd test test-common test-module test-asan \
        test-workers test-nginx-compat test-scripts check-layers asan demo bench clean

all: module workers tools bench-tool

tools: $(BUILD)/llmd-prefix-keys

$(BUILD)/llmd-prefix-keys: scripts/llmd-prefix-keys.c $(COMMON_SRCS) $(COMMON_HDRS)
	@mkdir -p $(BUILD)
	$(CC) $(CFLAGS_COMMON) -Icommon -o $@ $< $(COMMON_SRCS) \
	    $$(pkg-config --cflags --libs msgpack) -lyajl -lxxhash

module: $(MODULE_SO)

# Debian's recipe for its libnginx-mod-* packages: configure with the exact
# flags of the packaged binary so the module's signature matches it.
$(BUILD)/ngx/Makefile: config
	@mkdir -p $(BUILD)
	cd $(NGX_SRC) && . ./conf_flags && ./configure \
	    --with-cc-opt="$$(dpkg-buildflags --get CFLAGS) -fPIC $$(dpkg-buildflags --get CPPFLAGS)" \
	    --with-ld-opt="$$(dpkg-buildflags --get LDFLAGS) -fPIC" \
	    "$${NGX_CONF_FLAGS[@]}" \
	    --add-dynamic-module=$(TOP) --builddir=$(BUILD)/ngx \
	    > $(BUILD)/ngx-configure.log 2>&1 \
	  || { tail -30 $(BUILD)/ngx-configure.log; exit 1; }

$(MODULE_SO): $(BUILD)/ngx/Makefile $(MODULE_SRCS)
	$(MAKE) -s -f $(BUILD)/ngx/Makefile -C $(NGX_SRC) modules
	@nginx_sig=$$(strings /usr/sbin/nginx | grep -E '^[0-9],[0-9],[0-9],' | head -1); \
	 so_sig=$$(strings $@ | grep -E '^[0-9],[0-9],[0-9],' | head -1); \
	 if [ "$$nginx_sig" != "$$so_sig" ]; then \
	     echo "module signature $$so_sig does not match nginx $$nginx_sig"; exit 1; fi

workers:
ifneq ($(HAVE_WORKERS),)
	$(MAKE) -C workers
endif

bench-tool:
	$(MAKE) -C bench

# nginx from Debian's source package with the module linked in statically,
# built with ASan and UBSan (a static module avoids ASan's ODR report on
# ngx_module_names that a dynamic one triggers).
asan: $(ASAN_NGINX)

$(BUILD)/src/.fetched:
	@mkdir -p $(BUILD)/src
	scripts/fetch-nginx-source.sh $(BUILD)/src
	touch $@

$(ASAN_NGINX): $(BUILD)/src/.fetched $(MODULE_SRCS) config
	@mkdir -p $(BUILD)/asan
	cd $(BUILD)/src/nginx && ./configure --with-compat --with-debug --with-threads \
	    --with-http_ssl_module --with-http_stub_status_module \
	    --with-http_realip_module --with-http_v2_module \
	    --with-cc-opt="-O1 -g $(SANITIZE)" --with-ld-opt="$(SANITIZE)" \
	    --add-module=$(TOP) --builddir=$(BUILD)/asan/objs \
	    > $(BUILD)/asan-configure.log 2>&1 \
	  || { tail -30 $(BUILD)/asan-configure.log; exit 1; }
	$(MAKE) -s -j2 -f $(BUILD)/asan/objs/Makefile -C $(BUILD)/src/nginx >/dev/null

$(BUILD)/test_%: common/tests/test_%.c $(COMMON_SRCS) $(COMMON_HDRS)
	@mkdir -p $(BUILD)
	$(CC) $(CFLAGS_COMMON) $(SANITIZE) -Icommon -o $@ $< $(COMMON_SRCS) \
	    $$(pkg-config --cflags --libs check msgpack) -lyajl -lxxhash

test: test-common test-module test-asan test-workers test-bench bench-smoke \
      test-deploy test-nginx-compat test-scripts check-layers
	@echo "all test suites passed"

test-common: $(BUILD)/test_common $(BUILD)/test_wire
	$(BUILD)/test_common
	$(BUILD)/test_wire

# the t/ suites against Debian's packaged nginx with the dynamic module
test-module: module tools workers
	TEST_NGINX_LOAD_MODULE=$(MODULE_SO) prove -r t/

# the same suites against the ASan+UBSan nginx; any sanitizer report fails
test-asan: asan tools workers
	TEST_NGINX_BINARY=$(ASAN_NGINX) TEST_NGINX_CHECK_SANITIZER=1 \
	ASAN_OPTIONS=detect_leaks=0:abort_on_error=0 \
	UBSAN_OPTIONS=print_stacktrace=1:suppressions=$(TOP)/t/ubsan.supp prove -r t/

test-workers:
ifneq ($(HAVE_WORKERS),)
	$(MAKE) -C workers test
endif

demo: all
	scripts/demo.sh

test-bench: workers
	$(MAKE) -C bench test

# no #include from a lower layer to a higher one (docs/architecture.md)
check-layers:
	perl scripts/check-layers.pl

# the machine-setup scripts, on scratch apt directories
test-scripts:
	bash scripts/tests/apt-deb-src.sh

# nginx's own test suite (../shared/nginx-tests), stock against llmd in
# every upstream: fails on any test that passes stock and fails with llmd
test-nginx-compat: module
	scripts/nginx-compat.sh $(MODULE_SO) $(BUILD)/nginx-compat/REPORT.md

# compose, kustomize, helm, schemas and PromQL, offline (no containers)
test-deploy: module workers
	bash deploy/validate.sh

# the routing benchmark pipeline end to end on a tiny fleet: fails when the
# pipeline breaks, never on performance
bench-smoke: all
	/usr/bin/python3 bench/drivers/routing.py --smoke --out $(BUILD)/bench-smoke
	@test -s $(BUILD)/bench-smoke/REPORT.md && test -s $(BUILD)/bench-smoke/sweep.png \
	  && echo "bench-smoke: 1 passed, 0 failed"

BENCH_OUT ?= bench/results/shared-prefix
bench: all
	/usr/bin/python3 bench/drivers/routing.py --out $(BENCH_OUT) $(BENCH_ARGS)

bench-gateway: module
	bench/drivers/gateway.sh

bench-worker: workers bench-tool
	bench/drivers/worker.sh

bench-fleet-state: module
	bench/drivers/fleet-state.sh

bench-decision: module
	bench/drivers/decision.sh

# disaggregated prefill/decode: transport, exposed time, end-to-end ITL
bench-pd: all
	/usr/bin/python3 bench/drivers/pd.py --out $(or $(BENCH_OUT),bench/results/pd) $(BENCH_ARGS)

clean:
	rm -rf $(BUILD)
	$(MAKE) -C bench clean
ifneq ($(HAVE_WORKERS),)
	$(MAKE) -C workers clean
endif
